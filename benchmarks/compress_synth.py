"""Joint search vs the naive pipeline on the benchmark detectors, for cpu-ort, at the same budget.

For each base detector of ``benchmarks/train_base.py`` this runs ``compress(method="joint")`` and
``compress(method="pipeline")`` with the same candidates, fine-tuning steps, teacher pool and
latency target (a fraction of the base's estimated latency), then records mAP, estimated and
measured latency and wall time, with the machine, in ``benchmarks/results/compress_synth.{json,md}``.
A target the search space cannot reach is recorded with the reason, not skipped silently.
Killed? Run it again: every compress run resumes from its workdir.

    python benchmarks/compress_synth.py                        # defaults: several hours on 2 cores
    python benchmarks/compress_synth.py --candidates 3 --finetune-steps 10 --val 50   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from jdnas_sdk import JdnasError, load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.api import compress
from jdnas_sdk.data import load_split
from jdnas_sdk.machine import machine_info

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", type=Path,
                   default=[Path("runs/bench/base_retinanet_resnet18.pt"), Path("runs/bench/base_fasterrcnn_resnet18.pt")])
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--workdir", type=Path, default=Path("runs/compress_synth"))
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--target", default="cpu-ort")
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--finetune-steps", type=int, default=50)
    p.add_argument("--pool-steps", type=int, default=100)
    p.add_argument("--val", type=int, default=200, help="validation images (the first N)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train_set = load_split(args.data, "train")
    val_set = load_split(args.data, "val").head(args.val)
    rows = []
    for model_file in args.models:
        model = load_detector(model_file)
        for method in ("joint", "pipeline"):
            work = args.workdir / f"{model_file.stem}_{method}"
            t0 = time.monotonic()
            row: dict = {"detector": str(model_file), "method": method}
            try:
                result = compress(model, target=args.target, train_data=train_set, val_data=val_set, latency=args.latency,
                                  budget=args.candidates, workdir=work, method=method, pool=args.workdir / f"{model_file.stem}_pool.pt"
                                  if (args.workdir / f"{model_file.stem}_pool.pt").is_file() else None,
                                  finetune_steps=args.finetune_steps, pool_steps=args.pool_steps, seed=args.seed)
                row.update(metrics=result.metrics, report=str(result.report), wall_s=time.monotonic() - t0)
                pool_file = work / "pool.pt"
                shared = args.workdir / f"{model_file.stem}_pool.pt"
                if pool_file.is_file() and not shared.exists():
                    shared.write_bytes(pool_file.read_bytes())  # the pipeline run uses the same pool
            except JdnasError as exc:
                row.update(error=str(exc), wall_s=time.monotonic() - t0)
            rows.append(row)
            print(row, file=sys.stderr)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
              "command": "python benchmarks/compress_synth.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "target": args.target, "latency": args.latency, "candidates": args.candidates,
              "finetune_steps": args.finetune_steps, "pool_steps": args.pool_steps, "val_images": len(val_set), "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / "compress_synth.json", report)
    lines = ["# Joint search vs pipeline (compress_synth)", "",
             f"Run {report['date']} on {report['machine']['cpu']}; `{report['command']}`; target {args.target}, "
             f"latency {args.latency}x the base, {args.candidates} candidates x {args.finetune_steps} steps, "
             f"{len(val_set)} validation images.", "",
             "| detector | method | base AP | student AP | base ms (est/meas) | student ms (est/meas) | wall (min) | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {Path(row['detector']).stem} | {row['method']} | | | | | {row['wall_s'] / 60:.1f} | {row['error']} |")
            continue
        b, s = row["metrics"]["base"], row["metrics"]["student"]
        lines.append(f"| {Path(row['detector']).stem} | {row['method']} | {100 * b['ap']:.1f} | {100 * s['ap']:.1f} | "
                     f"{b['estimated_ms']:.1f} / {b.get('measured_ms', float('nan')):.1f} | "
                     f"{s['estimated_ms']:.1f} / {s.get('measured_ms', float('nan')):.1f} | {row['wall_s'] / 60:.1f} | |")
    (args.results / "compress_synth.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
