"""Joint search vs the naive pipeline on the benchmark detectors, for cpu-ort, at the same budget.

For each base detector of ``benchmarks/train_base.py``: one teacher pool is trained (its wall time
recorded on its own), then ``compress(method="joint")`` and ``compress(method="pipeline")`` run
with that pool, the same candidates, fine-tuning steps and latency target (``--latency`` times the
base's estimated latency). A target the search space cannot reach is recorded with the reason and,
with ``--fallback``, tried again at that ratio. Latencies are measured after all training, in a
quiet phase: base and every student exported to ONNX and timed end to end in a fresh worker
process. Results, with the machine, go to ``benchmarks/results/compress_synth.{json,md}``.
Killed? Run the same command again: the pool and every compress run resume from their workdirs.

    python benchmarks/compress_synth.py                                  # the recorded run (about 1 h)
    python benchmarks/compress_synth.py --candidates 3 --finetune-steps 5 --pool-steps 5 --val 20   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import torch

from jdnas_sdk import JdnasError, load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.compress import compress, teacher_pool
from jdnas_sdk.data import load_split
from jdnas_sdk.errors import SearchError
from jdnas_sdk.latency.backends import OrtBackend
from jdnas_sdk.machine import machine_info

HERE = Path(__file__).resolve().parent
METHODS = ("joint", "pipeline")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", type=Path,
                   default=[Path("runs/bench/base_retinanet_resnet18.pt"), Path("runs/bench/base_fasterrcnn_resnet18.pt")])
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--workdir", type=Path, default=Path("runs/compress_synth"))
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--target", default="cpu-ort")
    p.add_argument("--latency", type=float, default=0.5, help="wanted fraction of the base's estimated latency")
    p.add_argument("--fallback", type=float, default=0.75,
                   help="ratio tried when --latency is below what the space reaches (0: none)")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--finetune-steps", type=int, default=30)
    p.add_argument("--final-steps", type=int, default=120, help="more training for the chosen student")
    p.add_argument("--pool-steps", type=int, default=40)
    p.add_argument("--val", type=int, default=150, help="validation images (the first N)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def run_one(model: torch.nn.Module, model_file: Path, method: str, ratio: float, pool: Any, args: argparse.Namespace,
            train_set: Any, val_set: Any) -> dict[str, Any]:
    work = args.workdir / f"{model_file.stem}_{method}_{ratio:g}"
    row: dict[str, Any] = {"detector": model_file.stem, "method": method, "latency": ratio}
    t0 = time.monotonic()
    try:
        result = compress(model, target=args.target, train_data=train_set, val_data=val_set, latency=ratio,
                          budget=args.candidates, workdir=work, method=method, pool=pool,
                          finetune_steps=args.finetune_steps, final_steps=args.final_steps, seed=args.seed,
                          measure=False)
    except JdnasError as exc:
        row.update(error=str(exc), wall_s=time.monotonic() - t0)
        return row
    row.update(metrics=result.metrics, student_file=str(result.student_file), report=str(result.report),
               wall_s=time.monotonic() - t0, candidates=len(result.history) - 1,
               search_s=sum(c.get("wall_s") or 0.0 for c in result.history))  # across resumes too
    return row


def measure(rows: list[dict[str, Any]], models: dict[str, Path], sizes: dict[str, tuple[int, int]]) -> None:
    """End-to-end ms of every base and student, after all training, one at a time."""
    backend = OrtBackend()
    base_ms: dict[str, float] = {}
    for row in rows:
        if "metrics" not in row:
            continue
        name = row["detector"]
        size = sizes[name]
        if name not in base_ms:
            base_ms[name] = backend.measure_detector(load_detector(models[name]), size).median_ms
        row["metrics"]["base"]["measured_ms"] = base_ms[name]
        row["metrics"]["student"]["measured_ms"] = backend.measure_detector(load_detector(row["student_file"]), size).median_ms
        row["measured_ratio"] = row["metrics"]["student"]["measured_ms"] / base_ms[name]
        print(f"[measure] {name} {row['method']}: base {base_ms[name]:.1f} ms, student "
              f"{row['metrics']['student']['measured_ms']:.1f} ms", file=sys.stderr)


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Joint search vs pipeline (compress_synth)", "",
             f"Run {report['date']} on {report['machine']['cpu']} ({report['machine'].get('cores', '?')} cores); "
             f"`{report['command']}`. Target {report['target']}; {report['candidates']} candidates x "
             f"{report['finetune_steps']} fine-tuning steps per method (the pipeline spends the same steps: a third "
             f"pruned fine-tune, a third distillation, a third search), then {report['final_steps']} more steps for "
             "the chosen student with its teacher (student AP is after them, search AP before); one teacher pool per detector trained "
             f"{report['pool_steps']} steps and shared by both methods; {report['val_images']} validation images. "
             "Latency ratio = student / base; estimated by the cpu-ort table, measured end to end in ONNX Runtime "
             "(1 thread) after all training. Search time: the candidates' fine-tuning and evaluation, summed over resumes.", "",
             "| detector | method | asked | base AP | student AP (search AP) | AP50 b / s | base ms est / meas | student ms est / meas | "
             "measured ratio | search (min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    pools = [f"{name} " + ("(reused from an earlier run)" if pool["wall_s"] is None else f"{pool['wall_s'] / 60:.1f} min") for name, pool in report["pools"].items()]
    lines.insert(3, f"Teacher pools trained in: {', '.join(pools)} (not counted in the rows' wall time).")
    lines.insert(4, "")
    for row in report["rows"]:
        head = f"| {row['detector']} | {row['method']} | {row['latency']:g}x |"
        if "error" in row:
            lines.append(f"{head} failed in {row['wall_s']:.1f} s: {row['error']} | | | | | | |")
            continue
        b, s = row["metrics"]["base"], row["metrics"]["student"]
        lines.append(f"{head} {100 * b['ap']:.1f} | {100 * s['ap']:.1f} ({100 * s.get('search_ap', s['ap']):.1f}) | {100 * b['ap50']:.1f} / {100 * s['ap50']:.1f} | "
                     f"{b['estimated_ms']:.1f} / {b.get('measured_ms', float('nan')):.1f} | "
                     f"{s['estimated_ms']:.1f} / {s.get('measured_ms', float('nan')):.1f} | "
                     f"{row.get('measured_ratio', float('nan')):.2f} | {row['search_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train_set = load_split(args.data, "train")
    val_set = load_split(args.data, "val").head(args.val)
    rows: list[dict[str, Any]] = []
    pools: dict[str, dict[str, Any]] = {}
    models = {f.stem: f for f in args.models}
    sizes: dict[str, tuple[int, int]] = {}
    for model_file in args.models:
        model = load_detector(model_file)
        sizes[model_file.stem] = (model.transform.min_size[0],) * 2
        t0, pool_file = time.monotonic(), args.workdir / f"{model_file.stem}_pool.pt"
        reused = pool_file.is_file()
        pool = teacher_pool(model, train_set, path=pool_file, steps=args.pool_steps, seed=args.seed)
        pools[model_file.stem] = {"wall_s": None if reused else time.monotonic() - t0, "largest": str(pool.max_arch)}
        ratios = [args.latency]
        for method in METHODS:
            for ratio in ratios:
                row = run_one(model, model_file, method, ratio, pool, args, train_set, val_set)
                rows.append(row)
                print(row.get("error") or {k: v for k, v in row.items() if k != "metrics"}, file=sys.stderr)
                if "error" in row and "below anything" in row["error"] and args.fallback and args.fallback not in ratios:
                    ratios.append(args.fallback)  # this loop runs it next
    measure(rows, models, sizes)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
              "command": "python benchmarks/compress_synth.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "target": args.target, "latency": args.latency, "fallback": args.fallback, "candidates": args.candidates,
              "finetune_steps": args.finetune_steps, "final_steps": args.final_steps, "pool_steps": args.pool_steps,
              "val_images": len(val_set),
              "pools": pools, "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / "compress_synth.json", report)
    text = markdown(report)
    (args.results / "compress_synth.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SearchError as exc:
        sys.exit(f"compress_synth: {exc}")
