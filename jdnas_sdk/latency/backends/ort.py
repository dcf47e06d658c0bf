"""ONNX Runtime (CPU execution provider) profiling backend.

An op's entry is the time ONNX Runtime's own profiler reports for the op's kernels, layout
conversions (``ReorderInput`` / ``ReorderOutput``, which a standalone op needs at its borders but
the detector does not need between its convolutions) excluded, as is the ReLU that produces its
inputs. Conditions match the op's life inside a detector: before every run the CPU caches are
flushed (inside a detector an op's weights were last touched one inference ago), and the inputs
are written by that ReLU just before the op reads them (inside a detector, by the previous op).
Without the flush, weight-heavy ops (stage 4, at 1/32 resolution) measured 10-15% fast. The flush
writes twice the last-level cache, capped at ``MAX_FLUSH_MIB``: what evicts an op's data inside a
detector is one inference's traffic (tens of MB for the detectors this SDK targets), not a whole
server socket's L3 (480 MB reported on one Xeon VM here, where the uncapped flush cost 0.35 s per
timed run and a single kernel took 20 s to measure). ``JDNAS_FLUSH_MIB`` sets another size for
every backend that is not given one (the test suite sets 1: its timings assert no speed).

The whole detector is timed by wall clock around ``session.run``, which is what a user sees,
over several sessions (one session's memory layout can make it a few percent faster or slower
than the next), in a fresh worker process (see :mod:`.ort_worker`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from torch import nn

from ...detectors import detector_onnx
from ...errors import LatencyTableError
from ...machine import cpu_model
from ..kernels import WARM_NAME, op_inputs, op_onnx
from ..ops import OpKey
from ..probe import probe, probe_image
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

    def __init__(
        self,
        *,
        threads: int = 1,
        optimization: str = "all",
        timing: Timing | None = None,
        sessions: int = 2,
        flush_mib: int | None = None,
        isolate: bool = True,
    ) -> None:
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {list(OPTIMIZATION_LEVELS)}, got {optimization!r}")
        if threads < 1 or sessions < 1:
            raise ValueError(f"threads and sessions must be >= 1, got {threads}, {sessions}")
        self.threads, self.optimization, self.sessions, self.isolate = threads, optimization, sessions, isolate
        self.timing = timing or Timing()
        self._flush_mib = flush_mib
        size = (flush_mib if flush_mib is not None else _default_flush_mib()) * 2**20 // 4
        self._flush = np.zeros(max(size, 1), dtype=np.float32)

    def __getstate__(self) -> dict[str, object]:
        """Sent to another process (a Ray worker) without the flush buffer, which is sized there for its cache."""
        return {k: v for k, v in self.__dict__.items() if k != "_flush"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        mib = self._flush_mib if self._flush_mib is not None else _default_flush_mib()
        self._flush = np.zeros(max(mib * 2**20 // 4, 1), dtype=np.float32)

    def flush(self) -> None:
        """Evict the CPU caches (by writing a buffer twice the last-level cache, at most ``MAX_FLUSH_MIB``)."""
        self._flush += 1.0

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            device=cpu_model(),
            backend="onnxruntime",
            backend_version=ort.__version__,
            precision="fp32",
            batch=1,
            threads=self.threads,
            provider="CPUExecutionProvider",
            optimization=self.optimization,
            machine=platform.machine(),
        )

    def session(
        self, model: bytes | str | os.PathLike[str], *, profile_prefix: str | None = None
    ) -> ort.InferenceSession:
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
            for _ in range(_runs_needed(session, feeds, self.timing, self.flush)):
                self.flush()
                session.run(None, feeds)
            samples = _kernel_times(Path(session.end_profiling()))[self.timing.warmup + 1 :]
        return summarise(samples)

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        probed = probe(model, image_size, seed=seed)
        onnx = detector_onnx(probed.model.cpu(), image_size)  # the probe's own copy; ONNX exports on the CPU
        return self._end_to_end(onnx, probed.image.numpy(), **probed.info())

    def measure_onnx(self, path: str | os.PathLike[str], image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        """End-to-end latency of an exported detector file on a probe image."""
        return self._end_to_end(Path(path).read_bytes(), probe_image(*image_size, seed=seed).numpy())

    def time_sessions(self, model: bytes, image: np.ndarray) -> list[float]:
        """Wall-clock ms of ``session.run`` over this backend's sessions, in this process."""
        samples: list[float] = []
        for _ in range(self.sessions):
            session = self.session(model)
            feeds = {session.get_inputs()[0].name: image}
            samples += timed_runs(lambda s=session, f=feeds: s.run(None, f), self.timing)
        return samples

    def _end_to_end(self, model: bytes, image: np.ndarray, **info: object) -> Entry:
        if not self.isolate:
            return summarise(self.time_sessions(model, image), **info)
        with tempfile.TemporaryDirectory(prefix="jdnas-e2e-") as tmp:
            folder = Path(tmp)
            (folder / "model.onnx").write_bytes(model)
            np.save(folder / "image.npy", image, allow_pickle=False)
            job = {
                "model": str(folder / "model.onnx"),
                "image": str(folder / "image.npy"),
                "threads": self.threads,
                "optimization": self.optimization,
                "sessions": self.sessions,
                "timing": vars(self.timing),
            }
            (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
            env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
            run = subprocess.run(
                [sys.executable, "-m", "jdnas_sdk.latency.backends.ort_worker", str(folder / "job.json")],
                capture_output=True,
                text=True,
                env=env,
            )
            if run.returncode != 0:
                raise RuntimeError(f"timing the detector in a worker process failed: {run.stderr.strip()[-2000:]}")
            samples = json.loads(run.stdout)["samples"]
        return summarise(samples, **info)


def _runs_needed(
    session: ort.InferenceSession, feeds: dict[str, object], timing: Timing, flush: Callable[[], object]
) -> int:
    """Warm up (those runs are profiled too, and dropped) and size the measurement from them: runs
    until ``timing.min_time_s`` of wall time, the cache flush before each run counted (a flush takes
    about 10 ms, far longer than most kernels: not counting it made a kernel take 200 runs and 2.3 s
    to measure, where 20-odd runs give the same median, in an ad-hoc probe on one Xeon)."""
    session.run(None, feeds)
    start = time.perf_counter()
    for _ in range(timing.warmup):
        flush()
        session.run(None, feeds)
    per_run = max((time.perf_counter() - start) / max(timing.warmup, 1), 1e-6)
    return max(timing.min_runs, min(timing.max_runs, int(timing.min_time_s / per_run) + 1))


#: The largest cache flush (MiB): about one inference's memory traffic for the detectors in scope.
MAX_FLUSH_MIB = 128


def _default_flush_mib() -> int:
    """``JDNAS_FLUSH_MIB`` where set, else twice the last-level cache, at most ``MAX_FLUSH_MIB``."""
    text = os.environ.get("JDNAS_FLUSH_MIB", "").strip()
    if not text:
        return min(2 * _last_level_cache_mib(), MAX_FLUSH_MIB)
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise LatencyTableError(
            f"JDNAS_FLUSH_MIB must be a whole number of MiB >= 1, got {text!r}; unset it for the default"
        )
    return int(text)


def _last_level_cache_mib() -> int:
    for index in (3, 2):
        try:
            text = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size").read_text().strip()
        except OSError:
            continue
        value = int(text.rstrip("KMG"))
        return max(1, value // 1024 if text.endswith("K") else value * (1024 if text.endswith("G") else 1))
    return 32


def _kernel_times(profile: Path) -> list[float]:
    """Per run, the summed durations (ms) of the op's kernels, from an ONNX Runtime profile."""
    try:
        events = json.loads(profile.read_text(encoding="utf-8"))
    finally:
        profile.unlink(missing_ok=True)
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    sums = [0.0] * len(runs)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event.get("args", {}).get("op_name") in _LAYOUT_OPS or WARM_NAME in event["name"]:
            continue
        for index, (start, end) in enumerate(runs):
            if start <= event["ts"] <= end:
                sums[index] += event["dur"] / 1e3
                break
    return sums
