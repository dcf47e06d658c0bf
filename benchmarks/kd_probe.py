"""Which distillation terms help a shrunk student? A probe, not a tuned study.

The half-width student of ``benchmarks/teacher_pool.py`` (weights inherited from the trained
Faster R-CNN base by morphism) is fine-tuned ``--steps`` steps with the base itself as teacher
under several KD weightings, and without KD; COCO AP on the first ``--val`` validation images.
Results with the machine in ``benchmarks/results/kd_probe_STEPS.{json,md}``; each run is cached in
``--workdir`` so a killed probe resumes.

    python benchmarks/kd_probe.py --steps 60 --val 150
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from jdnas_sdk import load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.data import load_split
from jdnas_sdk.detectors import describe, thaw
from jdnas_sdk.distill import KDConfig, finetune
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.morph import morph_to
from jdnas_sdk.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_pool import half_arch  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = {
    "no KD": None,
    "features 1 + scores 1": KDConfig(feature_weight=1.0, head_weight=1.0),
    "features 1": KDConfig(feature_weight=1.0, head_weight=0.0),
    "scores 1": KDConfig(feature_weight=0.0, head_weight=1.0),
    "features 0.1 + scores 0.1 (the default)": KDConfig(feature_weight=0.1, head_weight=0.1),
    "features 0.1 foreground x5 + scores 0.1": KDConfig(feature_weight=0.1, head_weight=0.1, foreground=4.0),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=Path("runs/bench/base_fasterrcnn_resnet18.pt"))
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--workdir", type=Path, default=Path("runs/kd_probe"))
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--val", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), help="weightings to run")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    train_set, val = load_split(args.data, "train"), load_split(args.data, "val").head(args.val)
    base = thaw(load_detector(args.base))
    student_arch = half_arch(describe(base)[1], 0.5)
    rows = []
    for name in args.only:
        kd = CONFIGS[name]
        cache = args.workdir / f"{name.replace(' ', '_').replace('+', 'and')}_s{args.seed}_{args.steps}.json"
        if cache.is_file():
            rows.append(json.loads(cache.read_text()))
            continue
        student = morph_to(base, student_arch)
        cfg = TrainConfig(optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_steps=10, batch_size=4, seed=args.seed)
        t0 = time.perf_counter()
        finetune(student, data=train_set, steps=args.steps, teacher=base if kd else None, kd=kd, config=cfg)
        m = evaluate(student, val, progress=False)
        row = {
            "kd": name,
            "config": kd.__dict__ if kd else None,
            "ap": m.ap,
            "ap50": m.ap50,
            "wall_s": time.perf_counter() - t0,
        }
        atomic_write_json(cache, row)
        rows.append(row)
        print(row, file=sys.stderr)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command_line("benchmarks/kd_probe.py", argv),
        "student": str(student_arch),
        "teacher": str(args.base),
        "steps": args.steps,
        "seed": args.seed,
        "val_images": len(val),
        "rows": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stem = f"kd_probe_{args.steps}"
    atomic_write_json(args.results / f"{stem}.json", report)
    lines = [
        "# KD probe",
        "",
        f"Run {report['date']} on {report['machine']['cpu']}; `{report['command']}`. Student "
        f"`{student_arch}` inherited from the base, {args.steps} AdamW steps (seed {args.seed}), teacher: the base "
        f"itself; {len(val)} validation images.",
        "",
        "| KD terms | AP | AP50 |",
        "|---|---|---|",
    ]
    lines += [f"| {r['kd']} | {100 * r['ap']:.1f} | {100 * r['ap50']:.1f} |" for r in rows]
    (args.results / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
