"""What a detector's NMS costs on this machine, and what that cost follows.

For students sampled around a trained detector (weights inherited, as the search makes them), each
whole detector is exported at full detection load and run in ONNX Runtime (1 thread) with its node
profiler on; the NonMaxSuppression nodes' time per run is set beside the student's NMS load (the IoU
tests its greedy loop makes on the probe image, :func:`jdnas_sdk.latency.nms_load.nms_load`) and the
boxes NMS keeps. The fits say how much of the NMS time each explains (R²) and the cost of one test:
the case for :mod:`jdnas_sdk.latency.nms_load`, measured, not assumed.

    python benchmarks/nms_cost.py --model base.pt --students 20 --refit-data data/shapes

Writes ``RESULTS/NAME.json`` and ``NAME.md`` with the machine it ran on. Run it alone: it times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision

from jdnas_sdk import describe, load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.data import load_split
from jdnas_sdk.detectors.onnx import detector_onnx
from jdnas_sdk.latency.probe import probe
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.morph import morph_to
from jdnas_sdk.morph.refit import depth_refit_hook
from jdnas_sdk.space import DEFAULT_HEAD_GRID, SearchSpace

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="the trained detector file the students come from")
    p.add_argument("--students", type=int, default=20, help="students sampled (the first is the model itself)")
    p.add_argument("--seed", type=int, default=7000, help="first sampling seed")
    p.add_argument("--runs", type=int, default=40, help="profiled runs per student (after 5 warm-up runs)")
    p.add_argument("--refit-data", type=Path, default=None, help="dataset folder: refit cut towers as the search does")
    p.add_argument("--results", type=Path, default=HERE / "results", help="where results go")
    p.add_argument("--name", default="nms_cost", help="results file stem")
    args = p.parse_args(argv)
    if args.students < 3 or args.runs < 1:
        p.error("--students must be >= 3 (a fit needs them) and --runs >= 1")
    return args


def nms_node_ms(model_bytes: bytes, image: np.ndarray, runs: int) -> tuple[float, float]:
    """The whole detector's median wall time (profiler on) and its NonMaxSuppression nodes' mean time
    per run over every profiled run (the 5 warm-up runs included), in ms."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "p")
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        feeds = {session.get_inputs()[0].name: image}
        for _ in range(5):
            session.run(None, feeds)
        wall = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feeds)
            wall.append(1000 * (time.perf_counter() - start))
        events = json.loads(Path(session.end_profiling()).read_text())
    nms_us = sum(
        e["dur"]
        for e in events
        if e.get("cat") == "Node"
        and e["name"].endswith("_kernel_time")
        and e["args"].get("op_name") == "NonMaxSuppression"
    )
    return statistics.median(wall), nms_us / (runs + 5) / 1000


def _fit(x: list[float], y: list[float]) -> dict[str, float]:
    """Least squares y = a + b x: the slope, intercept and R²."""
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    residual = np.asarray(y) - (a + b * np.asarray(x))
    return {"slope": float(b), "intercept": float(a), "r2": float(1 - residual.var() / np.var(y))}


def measure(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    base = load_detector(args.model)
    spec, arch = describe(base)
    space = SearchSpace(arch, spec=spec, heads=dict(DEFAULT_HEAD_GRID))
    hook = depth_refit_hook(load_split(args.refit_data, "train"), 16, []) if args.refit_data else None
    rows = []
    for index in range(args.students):
        student = space.sample_student(args.seed + index)
        model = morph_to(base, student, after_step=hook) if index else base
        size = model.transform.min_size[0]
        probed = probe(model, (size, size))  # the full-load copy, the probe image and its NMS calls, one forward
        calls, tests = probed.calls, probed.nms_tests or 0
        kept = sum(len(torchvision.ops.batched_nms(*c)) for c in calls)
        wall, nms = nms_node_ms(detector_onnx(probed.model, (size, size)), probed.image.numpy(), args.runs)
        rows.append({"code": str(student) if index else "base", "size": size, "wall_ms": wall, "nms_ms": nms,
                     "nms_tests": tests, "nms_kept": kept, "boxes_in": sum(len(c[0]) for c in calls)})  # fmt: skip
        print(f"{index + 1}/{args.students} {size} px: NMS {nms:.2f} ms, {tests:,} tests, {kept} kept", file=sys.stderr)
    return rows


def _markdown(report: dict) -> str:
    t, k = report["fit_tests"], report["fit_kept"]
    ms = [r["nms_ms"] for r in report["rows"]]
    return "\n".join(
        [
            "# NMS cost (ONNX Runtime, 1 thread)",
            "",
            f"Run {report['date']} on {report['machine']['cpu']} ({report['machine']['cores']} cores); "
            f"`{report['command']}`.",
            "",
            f"{len(ms)} students of `{report['model']}` (sizes {sorted({r['size'] for r in report['rows']})} px), "
            f"each at full detection load on the probe image: NonMaxSuppression nodes {min(ms):.2f}-{max(ms):.2f} ms "
            "per run (ORT's node profiler).",
            "",
            "| NMS time against | R² | per unit | intercept |",
            "|---|---|---|---|",
            f"| IoU tests of the greedy loop (`nms_load`) | {t['r2']:.3f} | {t['slope'] * 1e6:.2f} ns a test | "
            f"{t['intercept']:.2f} ms |",
            f"| boxes kept | {k['r2']:.3f} | {k['slope'] * 1e3:.2f} µs a box | {k['intercept']:.2f} ms |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = measure(args)
    report = {
        "name": args.name,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command_line("benchmarks/nms_cost.py", argv),
        "model": str(args.model),
        "rows": rows,
        "fit_tests": _fit([r["nms_tests"] for r in rows], [r["nms_ms"] for r in rows]),
        "fit_kept": _fit([r["nms_kept"] for r in rows], [r["nms_ms"] for r in rows]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"{args.name}.json", report)
    (args.results / f"{args.name}.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
