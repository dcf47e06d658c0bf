"""Does the teacher pool help? Distillation from a pool teacher, and pool teachers vs lone training.

Starting from the trained Faster R-CNN ResNet-18-FPN base of ``benchmarks/train_base.py``:

1. grows it into an elastic teacher pool and trains the pool by progressive shrinking;
2. (a) makes a student (the base pruned to about half its widths, by morphism) and fine-tunes it
   for the same steps with KD from a pool teacher and without KD, for several seeds;
3. (b) samples sub-teachers from the pool (BatchNorm recalibrated, no training) and trains the
   same architectures alone, from the same starting weights (the base morphed to that shape),
   for as many steps as the pool trained;

and evaluates everything with COCO mAP on the validation split. Results, with the machine, go
to ``benchmarks/results/teacher_pool.{json,md}``. Killed? Run it again: the pool and every
finished run are reused, and the pool training resumes from its checkpoint.

    python benchmarks/teacher_pool.py                 # defaults below: about an hour on 2 cores
    python benchmarks/teacher_pool.py --pool-steps 20 --kd-steps 20 --seeds 0 --val 50   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch

from jdnas_sdk import describe, load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.arch import Arch, Stage
from jdnas_sdk.data import load_split
from jdnas_sdk.detectors import thaw
from jdnas_sdk.distill import KDConfig, finetune
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.morph import morph_to, snap
from jdnas_sdk.teachers import ShrinkConfig, TeacherConfig, TeacherPool, train_pool_to_file
from jdnas_sdk.train import TrainConfig

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=Path("runs/bench/base_fasterrcnn_resnet18.pt"))
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--workdir", type=Path, default=Path("runs/teacher_pool"))
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--pool-steps", type=int, default=120)
    p.add_argument("--kd-steps", type=int, default=120)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--kd-weight", type=float, default=1.0, help="weight of both KD terms (the recorded run: 1.0)")
    p.add_argument("--val", type=int, default=200, help="validation images used (the first N)")
    p.add_argument("--student-width", type=float, default=0.5, help="student widths relative to the base")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def half_arch(arch: Arch, ratio: float) -> Arch:
    stages = tuple(Stage(snap(s.width * ratio, 8), tuple(snap(m * ratio, 8) for m in s.mids)) for s in arch.stages)
    stem = stages[0].width if arch.stem == arch.stages[0].width else arch.stem
    return Arch(block=arch.block, stem=stem, stages=stages, groups=arch.groups)


def _cached(path: Path, make) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    value = make()
    atomic_write_json(path, value)
    return value


def _map(model, val) -> dict:
    m = evaluate(model, val, progress=False)
    return {"ap": m.ap, "ap50": m.ap50, "ap75": m.ap75}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.base.is_file() or not args.data.is_dir():
        print(
            f"need {args.base} and {args.data}: run `python benchmarks/train_base.py --threads 1` first",
            file=sys.stderr,
        )
        return 2
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    train_set = load_split(args.data, "train")
    val_set = load_split(args.data, "val")
    val = val_set.head(args.val)
    base = thaw(load_detector(args.base))
    _, base_arch = describe(base)
    began = time.perf_counter()
    report: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command_line("benchmarks/teacher_pool.py", argv),
        "base": str(args.base),
        "base_arch": str(base_arch),
        "val_images": len(val),
    }
    report["base_map"] = _cached(work / "base_map.json", lambda: _map(base, val))

    pool_file = work / "pool.pt"
    if pool_file.is_file():
        pool = TeacherPool.load(pool_file)
    else:
        pool = TeacherPool.from_base(base, widths=(0.75, 1.0, 1.25), depth_delta=1)
        config = ShrinkConfig(
            train=TrainConfig(
                steps=args.pool_steps,
                batch_size=4,
                optimizer="adamw",
                lr=2e-4,
                weight_decay=0.05,
                warmup_steps=10,
                checkpoint_every=10,
            )
        )
        train_pool_to_file(pool, train_set, pool_file, config=config)  # metadata: steps, train_wall_s
    report["pool"] = {
        "max_arch": str(pool.max_arch),
        "widths": list(pool.widths),
        "depth_delta": pool.depth_delta,
        "steps": args.pool_steps,
    }

    teacher_config = pool.largest()
    teacher = pool.sample(teacher_config, calibration=train_set)
    report["teacher"] = {
        "config": str(teacher_config),
        "arch": str(pool.arch_of(teacher_config)),
        **_cached(work / "teacher_map.json", lambda: _map(teacher, val)),
    }

    student_arch = half_arch(base_arch, args.student_width)
    report["student_arch"] = str(student_arch)
    report["student_before"] = _cached(work / "student_before.json", lambda: _map(morph_to(base, student_arch), val))
    kd_rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for with_kd in (True, False):
            name = f"student_{'kd' if with_kd else 'nokd'}_s{seed}"

            def run(with_kd: bool = with_kd, seed: int = seed, name: str = name) -> dict:
                student = morph_to(base, student_arch)
                cfg = TrainConfig(
                    optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_steps=10, batch_size=4, seed=seed
                )
                t0 = time.perf_counter()
                finetune(
                    student,
                    data=train_set,
                    steps=args.kd_steps,
                    teacher=teacher if with_kd else None,
                    kd=KDConfig(feature_weight=args.kd_weight, head_weight=args.kd_weight),
                    config=cfg,
                    checkpoint=work / f"{name}.ckpt",
                )
                (work / f"{name}.ckpt").unlink(missing_ok=True)
                return {"seed": seed, "kd": with_kd, "wall_s": time.perf_counter() - t0, **_map(student, val)}

            kd_rows.append(_cached(work / f"{name}.json", run))
    report["kd_vs_nokd"] = kd_rows

    lone_rows = []
    for config in (TeacherConfig(pool.base_arch.depths, (0.75,) * 4), pool.smallest()):  # type: ignore[arg-type]
        arch = pool.arch_of(config)
        name = f"lone_{str(config).replace(',', '_')}"
        sampled = _cached(
            work / f"sampled_{name}.json", lambda config=config: _map(pool.sample(config, calibration=train_set), val)
        )

        def lone(arch: Arch = arch, name: str = name) -> dict:
            model = morph_to(base, arch)
            cfg = TrainConfig(optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_steps=10, batch_size=4, seed=0)
            finetune(model, data=train_set, steps=args.pool_steps, config=cfg, checkpoint=work / f"{name}.ckpt")
            (work / f"{name}.ckpt").unlink(missing_ok=True)
            return _map(model, val)

        lone_rows.append(
            {
                "config": str(config),
                "arch": str(arch),
                "sampled_from_pool": sampled,
                "trained_alone": _cached(work / f"{name}.json", lone),
            }
        )
    report["pool_vs_alone"] = lone_rows
    report["wall_s_this_run"] = time.perf_counter() - began
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / "teacher_pool.json", report)
    (args.results / "teacher_pool.md").write_text(markdown(report, args), encoding="utf-8")
    print(markdown(report, args))
    return 0


def markdown(r: dict, args: argparse.Namespace) -> str:
    pct = lambda m: f"{100 * m['ap']:.1f} / {100 * m['ap50']:.1f}"  # noqa: E731
    lines = [
        "# Teacher pool and distillation",
        "",
        f"Run {r['date']} on {r['machine']['cpu']} ({r['machine']['cores']} cores); `{r['command']}`.",
        "",
        f"Base `{r['base_arch']}` (Faster R-CNN, {r['base']}): AP / AP50 {pct(r['base_map'])} on the first "
        f"{r['val_images']} validation images. Pool: largest `{r['pool']['max_arch']}`, widths {r['pool']['widths']}, "
        f"depth ±{r['pool']['depth_delta']}, {r['pool']['steps']} steps of progressive shrinking.",
        "",
        f"Teacher used for KD: `{r['teacher']['config']}` ({pct(r['teacher'])}).",
        "",
        f"## (a) Student `{r['student_arch']}`, {args.kd_steps} fine-tuning steps",
        "",
        f"Right after morphism (no fine-tuning): {pct(r['student_before'])}.",
        "",
        "| seed | with KD: AP / AP50 | without KD: AP / AP50 |",
        "|---|---|---|",
    ]
    by_seed: dict = {}
    for row in r["kd_vs_nokd"]:
        by_seed.setdefault(row["seed"], {})[row["kd"]] = row
    for seed, rows in sorted(by_seed.items()):
        lines.append(f"| {seed} | {pct(rows[True])} | {pct(rows[False])} |")
    lines += [
        "",
        f"## (b) Sub-teachers sampled from the pool vs the same architecture trained alone "
        f"({r['pool']['steps']} steps from the base's weights)",
        "",
        "| teacher | sampled from the pool: AP / AP50 | trained alone: AP / AP50 |",
        "|---|---|---|",
    ]
    for row in r["pool_vs_alone"]:
        lines.append(f"| `{row['config']}` | {pct(row['sampled_from_pool'])} | {pct(row['trained_alone'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
