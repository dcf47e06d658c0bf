"""Does a lighter R-CNN head cost AP? 300 proposals and a 256-wide box head vs today's heads.

From the trained benchmark base (``benchmarks/train_base.py`` writes it), this fine-tunes two
detectors the same number of steps with the same recipe (``FINETUNE_DEFAULTS``) on the benchmark's
training split and evaluates COCO AP on its validation images:

- **student**: the base's backbone with 300 proposals kept at test time and a 256-wide box head
  (``morph_heads``: proposals keep every weight, the box head is narrowed by importance);
- **control**: the same backbone with the base's heads (1000 proposals, its box head).

The issue's bar: the student's AP within 1 point of the control's. Results, with the machine and
wall times, go to ``benchmarks/results/head_finetune.{json,md}``.

    python benchmarks/train_base.py --threads 1          # once: the base (about an hour here)
    python benchmarks/head_finetune.py --threads 1       # 2 x 200 steps + 2 evaluations
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
from jdnas_sdk.data import load_split
from jdnas_sdk.detectors.thaw import thaw
from jdnas_sdk.distill import FINETUNE_DEFAULTS, finetune
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.machine import machine_info
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "head_finetune")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_detector(args.base)
    spec, arch = describe(base)
    train_set, val_set = load_split(args.data, "train"), load_split(args.data, "val")
    lighter = replace(Heads.of(spec), proposals=args.proposals, pre=args.proposals, box=args.box)
    runs = {"control": thaw(base), "student": thaw(morph_heads(base, lighter))}
    rows = {}
    for name, model in runs.items():
        torch.manual_seed(args.seed)
        started = time.monotonic()
        finetune(
            model, data=train_set, steps=args.steps, config=replace(FINETUNE_DEFAULTS, steps=args.steps, seed=args.seed)
        )
        metrics = evaluate(model, val_set, progress=False)
        rows[name] = {
            "code": str(Student.of(*describe(model))),
            "ap": metrics.ap,
            "ap50": metrics.ap50,
            "wall_s": time.monotonic() - started,
        }
    base_ap = evaluate(base, val_set, progress=False).ap
    gap = 100 * (rows["student"]["ap"] - rows["control"]["ap"])
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "base": str(args.base),
        "base_ap": base_ap,
        "steps": args.steps,
        "runs": rows,
        "ap_gap_points": gap,
        "within_1_point": abs(gap) <= 1.0 or gap > 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Lighter R-CNN heads, fine-tuned",
        "",
        f"Run {report['date']} on {report['machine'].get('cpu')}; "
        f"base AP {100 * base_ap:.1f}; {args.steps} fine-tuning steps each.",
        "",
        "| run | student code | AP | AP50 | wall s |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        code = row["code"].replace("|", "\\|")
        lines.append(f"| {name} | `{code}` | {100 * row['ap']:.1f} | {100 * row['ap50']:.1f} | {row['wall_s']:.0f} |")
    lines += [
        "",
        f"Student - control: {gap:+.1f} AP points (bar: within 1 point).",
        "",
        "Command: `PYTHONPATH=$PWD python benchmarks/head_finetune.py --threads 1`",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
