"""ONNX Runtime (CPU execution provider) profiling backend.

An op's entry is the time ONNX Runtime's own profiler reports for the op's kernels, layout
conversions (``ReorderInput`` / ``ReorderOutput``, which a standalone op needs at its borders but
the detector does not need between its convolutions) excluded. The whole detector is timed by
wall clock around ``session.run``, which is what a user sees.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
from torch import nn

from ...detectors import detector_onnx
from ...machine import cpu_model
from ..kernels import op_inputs, op_onnx
from ..ops import OpKey
from ..probe import count_detections, full_load, probe_image
from ..table import Entry, Fingerprint
from .base import Timing, summarise, timed_runs

__all__ = ["OrtBackend", "OPTIMIZATION_LEVELS"]

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput"})


class OrtBackend:
    """ONNX Runtime on this machine's CPU: ``threads`` intra-op threads (1 gives repeatable
    per-op numbers on a small machine), graph optimisation ``optimization`` for ops and detectors alike."""

    name = "ort"

    def __init__(self, *, threads: int = 1, optimization: str = "all", timing: Timing | None = None) -> None:
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {list(OPTIMIZATION_LEVELS)}, got {optimization!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads, self.optimization = threads, optimization
        self.timing = timing or Timing()

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(device=cpu_model(), backend="onnxruntime", backend_version=ort.__version__,
                           precision="fp32", batch=1, threads=self.threads, provider="CPUExecutionProvider",
                           optimization=self.optimization, machine=platform.machine())

    def session(self, model: bytes | str | os.PathLike[str], *, profile_prefix: str | None = None) -> ort.InferenceSession:
        """A session with this backend's settings (the ones every entry of its tables used)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = OPTIMIZATION_LEVELS[self.optimization]
        options.log_severity_level = 3
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        source = model if isinstance(model, bytes) else os.fspath(model)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def measure_op(self, key: OpKey) -> Entry:
        feeds = {name: t.numpy() for name, t in zip(("x", "residual"), op_inputs(key))}
        with tempfile.TemporaryDirectory(prefix="jdnas-ort-") as tmp:
            session = self.session(op_onnx(key), profile_prefix=str(Path(tmp) / "op"))
            for _ in range(_runs_needed(session, feeds, self.timing)):
                session.run(None, feeds)
            samples = _kernel_times(Path(session.end_profiling()))[self.timing.warmup + 1:]
        return summarise(samples)

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        loaded = full_load(model)
        image = probe_image(*image_size, seed=seed)
        detections = count_detections(loaded, image)
        session = self.session(detector_onnx(loaded, image_size))
        feeds = {session.get_inputs()[0].name: image.numpy()}
        return summarise(timed_runs(lambda: session.run(None, feeds), self.timing), detections=detections)

    def measure_onnx(self, path: str | os.PathLike[str], image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        """End-to-end latency of an exported detector file on a probe image."""
        session = self.session(path)
        feeds = {session.get_inputs()[0].name: probe_image(*image_size, seed=seed).numpy()}
        return summarise(timed_runs(lambda: session.run(None, feeds), self.timing))


def _runs_needed(session: ort.InferenceSession, feeds: dict[str, object], timing: Timing) -> int:
    """Warm up (those runs are profiled too, and dropped) and size the measurement from them."""
    session.run(None, feeds)
    start = time.perf_counter()
    for _ in range(timing.warmup):
        session.run(None, feeds)
    per_run = max((time.perf_counter() - start) / max(timing.warmup, 1), 1e-6)
    return max(timing.min_runs, min(timing.max_runs, int(timing.min_time_s / per_run) + 1))


def _kernel_times(profile: Path) -> list[float]:
    """Per run, the summed durations (ms) of its compute kernels, from an ONNX Runtime profile."""
    try:
        events = json.loads(profile.read_text(encoding="utf-8"))
    finally:
        profile.unlink(missing_ok=True)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    sums = [0.0] * len(runs)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event.get("args", {}).get("op_name") in _LAYOUT_OPS:
            continue
        for index, (start, end) in enumerate(runs):
            if start <= event["ts"] <= end:
                sums[index] += event["dur"] / 1e3
                break
    return sums
