"""How right is the latency table? Estimated vs measured end-to-end latency of sampled students.

For each benchmark detector (the trained files ``benchmarks/train_base.py`` writes), this samples
architectures uniformly from the search space around its backbone, gives each the base's weights
by student morphism (so post-processing sees realistic detections, as the search's students do),
exports the whole detector to ONNX and times it in ONNX Runtime with the table's settings, and
compares with the table's estimate. It also measures how fast the estimator and the profiler
are, and how far the roofline model (used for the GPU tables) is from this CPU's measured table.
Results, with the machine, go to ``benchmarks/results/latency_accuracy.{json,md,png}``.

    python benchmarks/train_base.py --threads 1          # once: the base detectors
    python benchmarks/latency_accuracy.py                # 100 archs per detector, ~15 min here
    python benchmarks/latency_accuracy.py --archs 20 --seed 7   # other archs, quicker
    python benchmarks/latency_accuracy.py --rounds 3     # a shared host: each student at the median of 3 passes

Entries the table lacks are measured on demand into this machine's table (kernels, and a fixed
entry per head setting as a residual over measured kernels), as a search confirms its candidates.

Killed? Run the same command again: every student's row is kept in ``NAME.partial.json`` beside
the results as it is measured, and the rerun measures only the students after them (the file is
removed when the results are written; a command with other settings is refused while it is there).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jdnas_sdk import describe, load_detector, standard_arch
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.arch import DetectorSpec
from jdnas_sdk.data import load_split
from jdnas_sdk.latency import Entry, Estimator, LatencyTable, OrtBackend, load_table, open_table, reachable_ops
from jdnas_sdk.latency.backends import Timing
from jdnas_sdk.latency.drift import machine_speed, reference_ops
from jdnas_sdk.latency.nms_load import nms_ms_per_test
from jdnas_sdk.latency.probe import TIMED_LOAD
from jdnas_sdk.latency.roofline import DeviceModel
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.measured import export_probed
from jdnas_sdk.morph import morph_to
from jdnas_sdk.morph.refit import depth_refit_hook
from jdnas_sdk.space import DEFAULT_HEAD_GRID, SearchSpace

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models",
        nargs="+",
        type=Path,
        default=[Path("runs/bench/base_fasterrcnn_resnet18.pt"), Path("runs/bench/base_retinanet_resnet18.pt")],
        help="trained detector files whose search spaces to sample",
    )
    p.add_argument(
        "--target", default="cpu-ort", help="measured table to check, by name or file (must be this machine's)"
    )
    p.add_argument(
        "--on-miss",
        choices=("measure", "error"),
        default="measure",
        help="what an entry the table lacks does: measured on demand (as a search confirms), or an error "
        "(every estimate from the profiled table alone; profile it first with `jdnas profile`)",
    )
    p.add_argument("--archs", type=int, default=100, help="architectures sampled per detector")
    p.add_argument(
        "--size-ratios",
        nargs="+",
        type=float,
        default=list(DEFAULT_HEAD_GRID["size"]),
        help="input sizes of the space, ratios of the base's (the runs recorded before the 1.25x step: 0.5 0.75 1.0)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--results", type=Path, default=HERE / "results", help="where results go")
    p.add_argument("--name", default="latency_accuracy", help="results file stem")
    p.add_argument("--skip-throughput", action="store_true", help="only the accuracy part")
    p.add_argument(
        "--backbone-only",
        action="store_true",
        help="sample backbones only (heads and input size fixed), as before the detector-level space",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=10,
        help="re-time this many of the first students after all the others: how far two measurements of the "
        "same detector, minutes apart, differ on this machine (no estimate can be closer than that)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time every student this many times, one pass over all students per round, and measure it as the "
        "median of its rounds (a slow spell of a shared host then lands on one round, not on the result); "
        "the exported students are kept under RESULTS/NAME.students until the results are written (tens of MB "
        "each: about 3 GB for 100 RetinaNet R18 students of 128-256 px)",
    )
    p.add_argument(
        "--speed-refs",
        type=int,
        default=0,
        help="time the base's N largest ops between students and also report the error normalised by the "
        "machine's speed against the table's (a shared host's drift over the run; 0: raw only)",
    )
    p.add_argument(
        "--refit-data",
        type=Path,
        default=None,
        help="dataset folder: students with fewer tower convs get the search's least-squares refit on its first "
        "--refit-images training images, so their scores (and NMS's work) are the search's candidates' "
        "(default: plain morphs, as the runs before it)",
    )
    p.add_argument("--refit-images", type=int, default=16, help="with --refit-data: training images refit on")
    p.add_argument(
        "--reuse-accuracy",
        action="store_true",
        help="keep the accuracy rows of the previous results file; redo throughput and the roofline check",
    )
    return p.parse_args(argv)


def _summary(errors: list[float]) -> dict[str, float]:
    absolute = [abs(e) for e in errors]
    return {
        "n": len(errors),
        "within_5pct": sum(a <= 5 for a in absolute) / len(errors),
        "within_10pct": sum(a <= 10 for a in absolute) / len(errors),
        "mape_pct": statistics.fmean(absolute),
        "mean_error_pct": statistics.fmean(errors),
        "max_abs_error_pct": max(absolute),
    }


def accuracy(
    model_file: Path,
    table: LatencyTable,
    backend: OrtBackend,
    archs: int,
    seed: int,
    heads: bool = True,
    on_miss: str = "measure",
    repeat: int = 0,
    speed_refs: int = 0,
    size_ratios: tuple[float, ...] = DEFAULT_HEAD_GRID["size"],
    refit_data: object | None = None,
    refit_images: int = 16,
    done: list[dict] | None = None,
    save: Callable[[list[dict]], None] | None = None,
    rounds: int = 1,
    keep: Path | None = None,
) -> dict:
    """Estimated vs measured latency of ``archs`` students sampled from the space around the
    detector in ``model_file``: whole students (backbone, heads and input size varied) unless
    ``heads`` is False (backbones only). The first ``repeat`` students are timed again at the end.
    With ``speed_refs``, the base's that many largest ops are timed between students: the machine's
    speed against the table's (:func:`machine_speed`, averaged over the timings either side of a
    student) gives each row a second, speed-normalised error beside the raw one. With ``rounds`` > 1,
    every student's exported detector is kept in ``keep`` and timed again in ``rounds - 1`` more
    passes over all students: its measurement is the median of its rounds (:func:`_timed_rounds`)."""
    base_model = load_detector(model_file)
    spec, base = describe(base_model)
    size = (spec.min_size, spec.min_size)
    space = SearchSpace(base, spec=spec if heads else None, heads={**DEFAULT_HEAD_GRID, "size": size_ratios})
    # what the table lacks (a student's new kernels, its head setting's fixed entry) is measured on
    # demand, as a search's confirmation does (the table must be this machine's: checked in main),
    # or, with on_miss="error", every estimate comes from the profiled table alone
    estimator = Estimator(table, spec, size, on_miss=on_miss, backend=backend)
    rows = []
    kept = []
    refs = reference_ops(table, spec, base, size, count=speed_refs) if speed_refs else []
    speed_before = machine_speed(table, backend, refs)
    refits: list = []  # one hook for every student: the refit images are read once
    hook = depth_refit_hook(refit_data, refit_images, refits) if refit_data is not None else None
    done = list(done or [])[:archs]  # rows measured in an earlier sitting of the same command

    def arch_of(index: int) -> object:
        return space.sample_student(seed * 100_003 + index) if heads else space.sample(seed * 100_003 + index)

    for index in range(archs):
        arch = arch_of(index)
        first = len(refits)
        if index < len(done):
            rows.append(_resumed(done[index], index, arch))
            if index < repeat:  # re-timed at the end: made again
                kept.append(morph_to(base_model, arch, after_step=hook))
            continue
        student = morph_to(base_model, arch, after_step=hook)
        measured = _first_timing(backend, student, size, keep / f"{index:04d}.onnx" if rounds > 1 else None)
        speed_after = machine_speed(table, backend, refs)
        speed, speed_before = (speed_before + speed_after) / 2, speed_after
        if index < repeat:
            kept.append(student)
        rows.append(_student_row(estimator, arch, measured, speed, [r.conv for r in refits[first:]]))
        if save is not None:
            save(rows)
        estimated = rows[-1]["estimated_ms"]
        print(
            f"{spec.family} {index + 1}/{archs}: est {estimated:7.2f} ms  meas {measured.median_ms:7.2f} ms  "
            f"err {rows[-1]['error_pct']:+5.1f}%  speed {speed:.2f}x  {arch}",
            file=sys.stderr,
            flush=True,
        )
    if done:
        print(f"{spec.family}: {len(done)} of {archs} rows from an earlier sitting", file=sys.stderr, flush=True)
    again = [backend.measure_detector(student, size).median_ms for student in kept]
    repeats = [_repeat(r, ms) for r, ms in zip(rows, again)]
    if rounds > 1:  # a resumed row whose kept file is gone (or was never written) is made again
        remake = lambda i: export_probed(  # noqa: E731
            morph_to(base_model, arch_of(i), after_step=hook), size, keep / f"{i:04d}.onnx"
        )
        speed_now = lambda: machine_speed(table, backend, refs)  # noqa: E731
        rows = _timed_rounds(rows, backend, size, rounds, keep, remake, speed_now, save)
    return {
        "detector": str(model_file),
        "family": spec.family,
        "base_arch": str(base),
        "input_size": list(size),
        "constant_ms": rows[-1]["estimated_ms"] - rows[-1]["variable_estimated_ms"],  # the last student's
        "rows": rows,
        "heads_varied": heads,
        "summary": _summary([r["error_pct"] for r in rows]),
        "table_only_summary": _table_only_summary(rows),
        "ms_per_test": nms_ms_per_test(table),
        "variable_summary": _summary([r["variable_error_pct"] for r in rows]),
        "speed_refs": [str(key) for key, _ in refs],
        "normalized_summary": _summary([r["normalized_error_pct"] for r in rows]) if refs else None,
        "repeat": repeats,
        "repeat_summary": _summary([r["diff_pct"] for r in repeats]) if repeats else None,
        "rounds": rounds,
        "rounds_summary": _rounds_summary(rows) if rounds > 1 else None,
    }


def _student_row(estimator: Estimator, arch: object, measured: Entry, speed: float, refit: list) -> dict:
    """A student's row: its estimate with the fixed entry following its NMS load (the IoU tests its
    boxes need on the probe image, counted on the forward its first timing probed) and from the table
    alone, against that timing."""
    tests = measured.info.get(TIMED_LOAD)
    parts = estimator.estimate(arch, nms_tests=tests).by_stage
    constant = parts["heads"] + parts["fixed"]  # what no backbone change moves
    row = _row(arch, estimator.total_ms(arch, nms_tests=tests), measured, constant, speed, refit)
    return {
        **row,
        "nms_tests": tests,
        **_table_only(estimator.total_ms(arch), measured),
        "rounds_ms": [measured.median_ms],
        "rounds_iqr_ms": [measured.spread_ms],
        "round_speeds": [speed],
    }


def _first_timing(backend: OrtBackend, student: object, size: tuple[int, int], keep: Path | None) -> Entry:
    """The student's first timing; with ``keep``, its exported detector is written there first (the
    later rounds time that same file) and timed from it, exactly as ``measure_detector`` times it."""
    if keep is None:
        return backend.measure_detector(student, size)
    info = export_probed(student, size, keep).info()
    measured = backend.measure_onnx(keep, size)
    return Entry(measured.median_ms, measured.spread_ms, measured.samples, info=info)


def _timed_rounds(
    rows: list[dict],
    backend: OrtBackend,
    size: tuple[int, int],
    rounds: int,
    keep: Path,
    remake: Callable[[int], object],
    speed_now: Callable[[], float],
    save: Callable[[list[dict]], None] | None,
) -> list[dict]:
    """Time every kept student again, one pass over all of them per round (minutes apart: a slow
    spell of a shared host lands on one round of many students, not on every round of one), then
    settle each row on the median of its rounds (:func:`_settled`). Each timing is saved with the
    machine's speed read as its round (or its resumed part) began: a killed run resumes inside a round."""
    for r in range(1, rounds):
        todo = [i for i, row in enumerate(rows) if len(row["rounds_ms"]) <= r]
        speed = speed_now() if todo else 1.0
        for i in todo:
            file = keep / f"{i:04d}.onnx"
            if not file.is_file():
                remake(i)
            rows[i].setdefault("rounds_iqr_ms", [rows[i]["measured_iqr_ms"]] * len(rows[i]["rounds_ms"]))
            rows[i].setdefault("round_speeds", [rows[i]["speed"]] * len(rows[i]["rounds_ms"]))  # rows saved without
            measured = backend.measure_onnx(file, size)
            rows[i]["rounds_ms"].append(measured.median_ms)
            rows[i]["rounds_iqr_ms"].append(measured.spread_ms)
            rows[i]["round_speeds"].append(speed)
            if save is not None:
                save(rows)
        print(f"round {r + 1}/{rounds}: {len(todo)} students timed again", file=sys.stderr, flush=True)
    return [_settled(row) for row in rows]


def _settled(row: dict) -> dict:
    """``row`` measured at the median of its rounds (its first timing kept as ``first_ms``), with the
    median of the rounds' interquartile ranges and speed readings, every error recomputed against it."""
    measured = statistics.median(row["rounds_ms"])
    speed = statistics.median(row["round_speeds"])
    constant = row["estimated_ms"] - row["variable_estimated_ms"]
    variable = measured - constant
    return {
        **row,
        "first_ms": row["rounds_ms"][0],
        "measured_ms": measured,
        "measured_iqr_ms": statistics.median(row["rounds_iqr_ms"]),
        "error_pct": 100 * (row["estimated_ms"] - measured) / measured,
        "variable_measured_ms": variable,
        "variable_error_pct": 100 * (row["variable_estimated_ms"] - variable) / variable,
        "speed": speed,
        "normalized_error_pct": 100 * (row["estimated_ms"] * speed - measured) / measured,
        "table_only_error_pct": 100 * (row["table_only_ms"] - measured) / measured,
    }


def _rounds_summary(rows: list[dict]) -> dict:
    """How far two rounds of one student are apart (every pair of its rounds, the later against the
    earlier): the measurement's own scatter on this machine, minutes apart."""
    return _summary(
        [100 * (b - a) / a for r in rows for i, a in enumerate(r["rounds_ms"]) for b in r["rounds_ms"][i + 1 :]]
    )


def _resumed(row: dict, index: int, arch: object) -> dict:
    """Row ``index`` of an earlier sitting, which must be this command's student ``arch``."""
    if row["arch"] != str(arch):
        raise SystemExit(
            f"the partial results' row {index} is {row['arch']}, not this command's {arch}: "
            "remove the .partial.json file beside the results"
        )
    return row


def _table_only_summary(rows: list[dict]) -> dict | None:
    errors = [r["table_only_error_pct"] for r in rows if "table_only_error_pct" in r]
    return _summary(errors) if errors else None


def _table_only(estimated: float, measured: Entry) -> dict:
    """A student's estimate from the table alone (its fixed entry the mean of the detectors it was
    timed on, not following this student's NMS load), against its measurement."""
    return {
        "table_only_ms": estimated,
        "table_only_error_pct": 100 * (estimated - measured.median_ms) / measured.median_ms,
    }


def _repeat(row: dict, ms: float) -> dict:
    """A student timed again after all the others, against its first timing."""
    return {
        "arch": row["arch"],
        "first_ms": row["measured_ms"],
        "second_ms": ms,
        "diff_pct": 100 * (ms - row["measured_ms"]) / ms,
    }


def _row(arch: object, estimated: float, measured: Entry, constant: float, speed: float, refit: list) -> dict:
    """One student's row: estimated against measured, whole and for the part the search changes
    (backbone + FPN: measured minus the constant heads and fixed entry), raw and speed-normalised."""
    variable_est, variable_meas = estimated - constant, measured.median_ms - constant
    return {
        "arch": str(arch),
        "estimated_ms": estimated,
        "measured_ms": measured.median_ms,
        "measured_iqr_ms": measured.spread_ms,
        "detections": measured.info.get("detections"),
        "refit": refit,
        "error_pct": 100 * (estimated - measured.median_ms) / measured.median_ms,
        "variable_estimated_ms": variable_est,
        "variable_measured_ms": variable_meas,
        "variable_error_pct": 100 * (variable_est - variable_meas) / variable_meas,
        "speed": speed,
        "normalized_error_pct": 100 * (estimated * speed - measured.median_ms) / measured.median_ms,
    }


def estimator_throughput(table_name: str = "v100-trt") -> dict:
    """Estimates per second for an R50-FPN Faster R-CNN at 800x1333 over sampled archs (modelled table)."""
    spec = DetectorSpec(family="fasterrcnn", backbone="resnet50", num_classes=91)
    space = SearchSpace(standard_arch("resnet50"))
    archs = [space.sample(i) for i in range(5000)]
    estimator = Estimator(load_table(table_name), spec, (800, 1333))
    start = time.perf_counter()
    for arch in archs:
        estimator.total_ms(arch)
    cold = len(archs) / (time.perf_counter() - start)
    start = time.perf_counter()
    for arch in archs:
        estimator.total_ms(arch)
    warm = len(archs) / (time.perf_counter() - start)
    start = time.perf_counter()
    for arch in archs[:200]:
        estimator.estimate(arch)
    detailed = 200 / (time.perf_counter() - start)
    students = [SearchSpace(standard_arch("resnet50"), spec=spec).sample_student(i) for i in range(5000)]
    start = time.perf_counter()
    for student in students:
        estimator.total_ms(student)
    whole = len(students) / (time.perf_counter() - start)
    return {
        "detector": "fasterrcnn resnet50 FPN-256, 800x1333",
        "table": table_name,
        "archs": len(archs),
        "first_pass_per_s": cold,
        "repeat_pass_per_s": warm,
        "detailed_breakdown_per_s": detailed,
        "students_first_pass_per_s": whole,
    }


def profiling_throughput(model_file: Path, ops: int = 120) -> dict:
    """Entries per minute of `jdnas profile`'s default settings on the first ``ops`` ops of a space."""
    spec, base = describe(load_detector(model_file))
    keys = reachable_ops(spec, SearchSpace(base), (spec.min_size, spec.min_size))
    backend = OrtBackend()
    with tempfile.TemporaryDirectory() as tmp:
        table = open_table(Path(tmp) / "t.json", "throughput", backend)
        start = time.perf_counter()
        for key in keys[:: max(1, len(keys) // ops)][:ops]:
            table.put(key, backend.measure_op(key))
        wall = time.perf_counter() - start
    return {
        "ops": len(table),
        "wall_s": wall,
        "entries_per_min": 60 * len(table) / wall,
        "space_ops": len(keys),
        "full_space_estimate_min": len(keys) / (60 * len(table) / wall),
    }


def _stream_bandwidth_gbs() -> float:
    a = np.ones(32 * 2**20, dtype=np.float32)  # 128 MiB
    b = np.empty_like(a)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - start) / 1e9)
    return best


def roofline_error(table: LatencyTable) -> dict:
    """The roofline model of this CPU against its measured table, op by op (conv and linear entries)."""
    import re

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = float(re.search(r"cpu MHz\s*:\s*([\d.]+)", info).group(1)) if "cpu MHz" in info else 2500.0
    flops_per_cycle = 32  # assumed: two 256-bit FMA pipes (8 FP32 lanes x 2 flops x 2)
    bandwidth = _stream_bandwidth_gbs()
    entries = [(k, e.median_ms) for k, e in table.entries.items() if k.kind in ("conv", "linear")]

    def errors(model: DeviceModel) -> list[float]:
        return [100 * (model.op_ms(k) - ms) / ms for k, ms in entries]

    peak = mhz * 1e6 * flops_per_cycle / 1e12
    assumed = DeviceModel(
        "this CPU (modelled)", "fp32", peak, bandwidth, compute_efficiency=0.3, memory_efficiency=0.7, launch_us=5.0
    )
    fitted, best = assumed, float("inf")
    for ce in np.linspace(0.05, 2.0, 79):  # above 1: the assumed peak itself is too low
        for launch in (0.0, 2.0, 5.0, 10.0, 20.0):
            candidate = DeviceModel(
                "this CPU (fitted)",
                "fp32",
                peak,
                bandwidth,
                compute_efficiency=float(ce),
                memory_efficiency=0.7,
                launch_us=launch,
            )
            mape = statistics.fmean(abs(e) for e in errors(candidate))
            if mape < best:
                fitted, best = candidate, mape
    out = {
        "cpu_mhz": mhz,
        "assumed_flops_per_cycle": flops_per_cycle,
        "peak_tflops": peak,
        "measured_copy_bandwidth_gbs": bandwidth,
        "ops_compared": len(entries),
    }
    for name, model in (("assumed_efficiencies", assumed), ("fitted_efficiencies", fitted)):
        errs = errors(model)
        out[name] = {
            "model": model.to_dict(),
            **_summary(errs),
            "median_ratio": statistics.median(model.op_ms(k) / ms for k, ms in entries),
        }
    return out


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    top = 0.0
    for result in results:
        xs = [r["measured_ms"] for r in result["rows"]]
        ys = [r["estimated_ms"] for r in result["rows"]]
        ax.scatter(xs, ys, s=12, label=f"{result['family']} (n={len(xs)})")
        top = max(top, *xs, *ys)
    line = np.linspace(0, top * 1.05, 10)
    ax.plot(line, line, "k-", lw=0.8)
    ax.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.2, label="±10%")
    ax.set_xlabel("measured end-to-end latency (ms, ONNX Runtime)")
    ax.set_ylabel("estimated from the table (ms)")
    ax.set_title("cpu-ort: estimated vs measured")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _table_only_lines(report: dict) -> list[str]:
    """The rows again with each student's fixed entry the table's mean, not following its NMS load."""
    results = [r for r in report["accuracy"] if r.get("table_only_summary")]
    if not results:
        return []
    lines = [
        "",
        "Above, each student's fixed entry follows its own NMS load (the IoU tests its boxes need on the probe "
        "image, counted from its weights; `jdnas_sdk.latency.nms_load`) at the table's cost per test"
        + "".join(
            f" ({r['family']}: {r['ms_per_test'] * 1e6:.2f} ns)" if r.get("ms_per_test") else f" ({r['family']}: none)"
            for r in results
        )
        + ". From the table alone (each fixed entry the mean of the detectors it was timed on):",
        "",
        "| detector | within ±5% | within ±10% | MAPE | mean error | max abs error |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        n = r["table_only_summary"]
        lines.append(
            f"| {r['family']} | {100 * n['within_5pct']:.0f}% | {100 * n['within_10pct']:.0f}% | "
            f"{n['mape_pct']:.2f}% | {n['mean_error_pct']:+.2f}% | {n['max_abs_error_pct']:.1f}% |"
        )
    return lines


def _round_lines(report: dict) -> list[str]:
    """With ``--rounds``: how far two rounds of one student are apart, and the errors against each
    round alone beside those against their median (what timing a student once would have read)."""
    lines = []
    for r in report["accuracy"]:
        if not r.get("rounds_summary"):
            continue
        pairs = _rounds_summary(r["rows"])
        lines += [
            "",
            f"{r['family']}: each student was timed in {r['rounds']} rounds, one pass over all students a round "
            "(minutes apart), and is measured above at the median of its rounds (`--rounds`). Two rounds of one "
            f"student differ by {pairs['mape_pct']:.2f}% on average (max {pairs['max_abs_error_pct']:.1f}%). "
            "The same estimates against each round alone, and against the median:",
            "",
            "| measured as | within ±5% | within ±10% | MAPE | mean error | max abs error |",
            "|---|---|---|---|---|---|",
        ]
        for k in range(r["rounds"]):
            alone = _summary([100 * (x["estimated_ms"] - x["rounds_ms"][k]) / x["rounds_ms"][k] for x in r["rows"]])
            lines.append(f"| round {k + 1} alone | {_summary_cells(alone)} |")
        lines.append(f"| median of the rounds | {_summary_cells(r['summary'])} |")
    return lines


def _summary_cells(s: dict) -> str:
    return (
        f"{100 * s['within_5pct']:.0f}% | {100 * s['within_10pct']:.0f}% | {s['mape_pct']:.2f}% | "
        f"{s['mean_error_pct']:+.2f}% | {s['max_abs_error_pct']:.1f}%"
    )


def _markdown(report: dict) -> str:
    lines = [
        f"# Latency table accuracy ({report['target']})",
        "",
        f"Run {report['date']} on {report['machine']['cpu']} ({report['machine']['cores']} cores); "
        f"`{report['command']}`.",
        "",
        "Students sampled uniformly from each base's search space, weights inherited from the base file (the "
        "full-load probe keeps every candidate box, but how many survive NMS, and so the post-processing time, "
        "follows the weights), whole detector exported to ONNX and timed in ONNX Runtime (1 thread, full "
        "detection load)."
        + (
            " Students with fewer tower convs were refit as the search's candidates are (`--refit-data`: least "
            "squares on training images), so their scores, and NMS's work, are the search's."
            if "--refit-data" in report["command"]
            else ""
        ),
        "",
        f"Table: {report['table_device']}. "
        + (
            "Every estimate comes from the profiled table alone (`--on-miss error`): no student was timed to "
            "estimate itself."
            if report.get("on_miss") == "error"
            else "Entries the table lacked were measured on demand (kernels, and a head setting's fixed entry as "
            "the residual of the first student that needed it), as a search's confirmation does."
        ),
        "",
        "| detector | archs | within ±5% | within ±10% | MAPE | mean error | max abs error | backbone+FPN MAPE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["accuracy"]:
        s, v = r["summary"], r["variable_summary"]
        lines.append(
            f"| {r['family']} `{r['base_arch'].replace('|', chr(92) + '|')}` @ {r['input_size'][0]} | {s['n']} "
            f"| {100 * s['within_5pct']:.0f}% | "
            f"{100 * s['within_10pct']:.0f}% | {s['mape_pct']:.2f}% | {s['mean_error_pct']:+.2f}% | "
            f"{s['max_abs_error_pct']:.1f}% | {v['mape_pct']:.2f}% |"
        )
    normalized = [r for r in report["accuracy"] if r.get("normalized_summary")]
    if normalized:
        lines += [
            "",
            "The same rows with each estimate scaled by the machine's speed when its student was timed (the "
            "base's largest ops timed between students against the table: "
            + ", ".join(
                f"{r['family']} {statistics.fmean(x['speed'] for x in r['rows']):.2f}x on average" for r in normalized
            )
            + "), i.e. what the table says for the machine as it was then:",
            "",
            "| detector | within ±5% | within ±10% | MAPE | mean error | max abs error |",
            "|---|---|---|---|---|---|",
        ]
        for r in normalized:
            n = r["normalized_summary"]
            lines.append(
                f"| {r['family']} | {100 * n['within_5pct']:.0f}% | {100 * n['within_10pct']:.0f}% | "
                f"{n['mape_pct']:.2f}% | {n['mean_error_pct']:+.2f}% | {n['max_abs_error_pct']:.1f}% |"
            )
    lines += _table_only_lines(report)
    repeated = [(r["family"], r["repeat_summary"]) for r in report["accuracy"] if r.get("repeat_summary")]
    if repeated:
        lines += [
            "",
            "The measurement against itself (the first students timed again after all the others, minutes apart): "
            + "; ".join(
                f"{family}: {s['n']} students, mean {s['mean_error_pct']:+.2f}%, mean absolute {s['mape_pct']:.2f}%, "
                f"max {s['max_abs_error_pct']:.1f}%"
                for family, s in repeated
            )
            + ". No estimate can agree with a measurement more closely than two measurements agree.",
        ]
    lines += _round_lines(report)
    lines += [
        "",
        "Backbone+FPN MAPE: the error on the part the search changes (measured minus the constant heads "
        "and fixed entry), a harsher view than the end-to-end figure.",
        "",
        f"![estimated vs measured]({report['name']}.png)",
        "",
    ]
    if "estimator" in report:
        e = report["estimator"]
        lines += [
            "## Throughput",
            "",
            f"- Estimator, {e['detector']}, {e['archs']} sampled archs ({e['table']} table): "
            f"{e['first_pass_per_s']:,.0f} estimates/s on first sight, {e['repeat_pass_per_s']:,.0f}/s once its "
            f"blocks are cached, {e['detailed_breakdown_per_s']:,.0f}/s with the full breakdown.",
        ]
        p = report["profiling"]
        lines += [
            f"- Profiler (ort, 1 thread, defaults): {p['entries_per_min']:.0f} entries/min over {p['ops']} ops "
            f"spread through a {p['space_ops']}-op space (about {p['full_space_estimate_min']:.1f} min for all of it).",
            "",
        ]
        m = report["roofline"]
        lines += [
            "## The roofline model against this CPU's measured table",
            "",
            f"Peak {m['peak_tflops'] * 1e3:.0f} GFLOP/s (cpu MHz {m['cpu_mhz']:.0f} x {m['assumed_flops_per_cycle']} "
            f"FLOPs/cycle, assumed), copy bandwidth {m['measured_copy_bandwidth_gbs']:.1f} GB/s (measured), "
            f"{m['ops_compared']} conv/linear entries.",
            "",
            "| efficiencies | compute | launch µs | within ±10% | within ±5% | MAPE | median model/measured |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("assumed_efficiencies", "fitted_efficiencies"):
            r = m[name]
            lines.append(
                f"| {name.split('_')[0]} | {r['model']['compute_efficiency']:.2f} | {r['model']['launch_us']:.0f} | "
                f"{100 * r['within_10pct']:.0f}% | {100 * r['within_5pct']:.0f}% | {r['mape_pct']:.1f}% | "
                f"{r['median_ratio']:.2f} |"
            )
        lines += [
            "",
            "The GPU tables (v100/t4/a100-trt) use the same model with assumed factors: expect errors of "
            "this order or worse until they are replaced by `jdnas profile` on the device.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1:
        print(f"--rounds must be >= 1 (1: each student timed once), got {args.rounds}", file=sys.stderr)
        return 2
    missing = [m for m in args.models if not m.is_file()]
    if missing:
        print(
            f"missing detector files {', '.join(map(str, missing))}: run `python benchmarks/train_base.py --threads 1` "
            "first (or pass --models FILE...)",
            file=sys.stderr,
        )
        return 2
    table = load_table(args.target)
    backend = OrtBackend(threads=table.fingerprint.threads, timing=Timing())
    if table.fingerprint != backend.fingerprint():
        print(f"table {args.target} was not measured on this machine: {table.fingerprint.describe()}", file=sys.stderr)
        return 2
    report: dict = {
        "name": args.name,
        "target": args.target,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "table_device": table.fingerprint.describe(),
        "command": command_line("benchmarks/latency_accuracy.py", argv),
        "archs": args.archs,
        "seed": args.seed,
        "on_miss": args.on_miss,
    }
    previous = args.results / f"{args.name}.json"
    reuse = args.reuse_accuracy and previous.is_file()
    partial = None if reuse else _Partial(args.results / f"{args.name}.partial.json", _settings(args))
    if reuse:
        old = json.loads(previous.read_text())
        report.update({k: old[k] for k in ("accuracy", "date", "archs", "seed", "on_miss") if k in old})
        report["command"] = old["command"] + "  (throughput and roofline: " + report["command"] + ")"
        for acc in report["accuracy"]:  # the rounds' scatter as this version measures it (every pair of rounds)
            if acc.get("rounds_summary"):
                acc["rounds_summary"] = _rounds_summary(acc["rows"])
    else:
        report["accuracy"] = [
            accuracy(
                m,
                table,
                backend,
                args.archs,
                args.seed,
                heads=not args.backbone_only,
                on_miss=args.on_miss,
                repeat=min(args.repeat, args.archs),
                speed_refs=args.speed_refs,
                size_ratios=tuple(args.size_ratios),
                refit_data=load_split(args.refit_data, "train") if args.refit_data else None,
                refit_images=args.refit_images,
                done=partial.rows(m),
                save=partial.saver(m),
                rounds=args.rounds,
                keep=_kept(args) / hashlib.sha256(str(m.resolve()).encode()).hexdigest()[:12],
            )
            for m in args.models
        ]
    if not args.skip_throughput:
        report["estimator"] = estimator_throughput()
        report["profiling"] = profiling_throughput(args.models[0])
        report["roofline"] = roofline_error(table)
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"{args.name}.json", report)
    _plot(report["accuracy"], args.results / f"{args.name}.png")
    (args.results / f"{args.name}.md").write_text(_markdown(report), encoding="utf-8")
    if partial is not None:
        partial.file.unlink(missing_ok=True)  # its rows are in the results now
        shutil.rmtree(_kept(args), ignore_errors=True)
    print(_markdown(report))
    return 0


def _kept(args: argparse.Namespace) -> Path:
    """Where ``--rounds`` keeps the exported students until the results are written."""
    return args.results / f"{args.name}.students"


def _settings(args: argparse.Namespace) -> dict:
    """What a row depends on: a partial file made with other settings is not resumed."""
    keys = ("target", "archs", "seed", "on_miss", "backbone_only", "speed_refs", "size_ratios")
    return {
        **{k: getattr(args, k) for k in keys},
        **({"rounds": args.rounds} if args.rounds != 1 else {}),  # absent in partial files from before --rounds
        "models": [str(m.resolve()) for m in args.models],
        "model_digests": [hashlib.sha256(m.read_bytes()).hexdigest()[:16] for m in args.models],  # retrained in place
        "refit": [str(args.refit_data.resolve()), args.refit_images] if args.refit_data else None,
    }


class _Partial:
    """The rows measured so far, per detector file, in ``file`` (rewritten after every row): a
    killed run's rerun keeps them. Made with other settings: refused, naming them (nothing is lost);
    damaged: reported, and started over."""

    def __init__(self, file: Path, settings: dict) -> None:
        self.file, self.settings = file, settings
        try:
            data = json.loads(file.read_text()) if file.is_file() else {}
        except (OSError, ValueError) as exc:
            print(f"{file}: unreadable ({exc}), starting over", file=sys.stderr)
            data = {}
        rows = data.get("rows") if isinstance(data, dict) else None
        if data and not (isinstance(rows, dict) and all(isinstance(v, list) for v in rows.values())):
            print(f"{file}: not a partial results file, starting over", file=sys.stderr)
            data = {}
        if data and data.get("settings") != settings:  # its rows would be lost on the first save
            old = data.get("settings") if isinstance(data.get("settings"), dict) else {}
            diff = ", ".join(
                f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                for k in [*settings, *(k for k in old if k not in settings)]
                if old.get(k) != settings.get(k)
            )
            raise SystemExit(
                f"{file} holds the rows of a run with other settings ({diff}): rerun that command to finish it, "
                "or pass another --name (or remove the file) to start this one"
            )
        self.done: dict[str, list[dict]] = rows if data else {}

    def rows(self, model: Path) -> list[dict]:
        return self.done.get(str(model.resolve()), [])

    def saver(self, model: Path) -> Callable[[list[dict]], None]:
        def save(rows: list[dict]) -> None:
            self.done[str(model.resolve())] = list(rows)
            self.file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.file, {"settings": self.settings, "rows": self.done})

        return save


if __name__ == "__main__":
    sys.exit(main())
