"""Does a lighter R-CNN head cost AP? 300 proposals and a 256-wide box head vs today's heads.

From the trained benchmark base (``benchmarks/train_base.py`` writes it), this fine-tunes two
detectors the same number of steps with the same recipe (``FINETUNE_DEFAULTS``) on the benchmark's
training split and evaluates COCO AP on the ``test`` half of its validation images (the ``select``
half is shown beside it; nothing here is chosen, so neither half decides anything), once per seed:

- **student**: the base's backbone with 300 proposals kept at test time and a 256-wide box head
  (``morph_heads``: proposals keep every weight, the box head is narrowed by importance);
- **control**: the same backbone with the base's heads (1000 proposals, its box head).

The issue's bar: the student's test AP within 1 point of the control's, in the mean over seeds.
Results, with the machine and wall times, go to ``benchmarks/results/head_finetune.{json,md}``.

    python benchmarks/train_base.py --families fasterrcnn     # once: the base
    python benchmarks/head_finetune.py                        # 2 seeds x 2 runs x 200 steps
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from jdnas_sdk import Heads, Student, describe, load_detector
from jdnas_sdk.data import load_protocol_splits
from jdnas_sdk.detectors.thaw import thaw
from jdnas_sdk.distill import FINETUNE_DEFAULTS, finetune
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.morph import morph_heads

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=Path("runs/bench/base_fasterrcnn_resnet18.pt"))
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--proposals", type=int, default=300)
    p.add_argument("--box", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=HERE / "results" / "head_finetune")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_detector(args.base)
    spec, arch = describe(base)
    train_set, select_set, test_set = load_protocol_splits(args.data)
    lighter = replace(Heads.of(spec), proposals=args.proposals, pre=args.proposals, box=args.box)
    rows = []
    for seed in args.seeds:
        for name in ("control", "student"):
            model = thaw(base) if name == "control" else thaw(morph_heads(base, lighter))
            torch.manual_seed(seed)
            started = time.monotonic()
            config = replace(FINETUNE_DEFAULTS, steps=args.steps, seed=seed)
            finetune(model, data=train_set, steps=args.steps, config=config)
            wall = time.monotonic() - started
            test, select = evaluate(model, test_set, progress=False), evaluate(model, select_set, progress=False)
            rows.append(
                {
                    "run": name,
                    "seed": seed,
                    "code": str(Student.of(*describe(model))),
                    "test_ap": test.ap,
                    "test_ap50": test.ap50,
                    "select_ap": select.ap,
                    "wall_s": wall,
                }
            )
            print(f"seed {seed} {name}: test AP {100 * test.ap:.1f} ({wall:.0f} s)", flush=True)
    base_test = evaluate(base, test_set, progress=False).ap

    def mean(run: str) -> float:
        return sum(r["test_ap"] for r in rows if r["run"] == run) / len(args.seeds)

    gaps = [
        100 * (s["test_ap"] - c["test_ap"])
        for s, c in zip(
            (r for r in rows if r["run"] == "student"), (r for r in rows if r["run"] == "control"), strict=True
        )
    ]
    gap = 100 * (mean("student") - mean("control"))
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "command": command_line("benchmarks/head_finetune.py", argv),
        "base": str(args.base),
        "base_test_ap": base_test,
        "splits": {"train": len(train_set), "select": len(select_set), "test": len(test_set)},
        "steps": args.steps,
        "seeds": args.seeds,
        "runs": rows,
        "ap_gap_points": gap,
        "ap_gap_points_by_seed": gaps,
        "within_1_point": gap >= -1.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Lighter R-CNN heads, fine-tuned",
        "",
        f"Run {report['date']} on {report['machine'].get('cpu')} ({report['machine'].get('cores')} cores); "
        f"base test AP {100 * base_test:.1f}; {args.steps} fine-tuning steps each, seeds "
        f"{', '.join(map(str, args.seeds))}; {len(train_set)} train / {len(select_set)} select / "
        f"{len(test_set)} test images.",
        "",
        "| run | seed | student code | test AP | test AP50 | select AP | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        code = row["code"].replace("|", "\\|")
        lines.append(
            f"| {row['run']} | {row['seed']} | `{code}` | {100 * row['test_ap']:.1f} | {100 * row['test_ap50']:.1f} | "
            f"{100 * row['select_ap']:.1f} | {row['wall_s']:.0f} |"
        )
    lines += [
        "",
        f"Student - control, test AP: {gap:+.1f} points in the mean (by seed: "
        f"{', '.join(f'{g:+.1f}' for g in gaps)}); bar: no more than 1 point below.",
        "",
        f"Command: `{report['command']}`",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
