"""What every profiling backend provides, and the statistics they share."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Protocol

from torch import nn

from ...errors import LatencyTableError
from ..ops import OpKey
from ..table import Entry, Fingerprint

__all__ = ["Backend", "summarise", "timed_runs", "Timing"]


class Backend(Protocol):
    """A way to run kernels on a device: measures one op, or a whole detector, in milliseconds."""

    name: str

    def fingerprint(self) -> Fingerprint:
        """The device and software this backend measures on, as a table records it."""
        ...

    def measure_op(self, key: OpKey) -> Entry:
        """The op's latency as the engine runs it inside a network (layout conversions excluded)."""
        ...

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        """End-to-end latency of ``model`` (pre- and post-processing included) on one image, timed
        on :func:`~jdnas_sdk.latency.probe.probe`'s full-load copy and probe image, its ``info`` holding
        ``probe(...).info()``: the detections and, for a backend of
        :data:`~jdnas_sdk.latency.nms_load.BACKENDS`, the NMS load its fixed entries keep."""
        ...


class Timing:
    """How many runs make a measurement: warm-up, then at least ``min_runs`` and until
    ``min_time_s`` has passed, at most ``max_runs``."""

    def __init__(self, *, warmup: int = 3, min_runs: int = 10, max_runs: int = 200, min_time_s: float = 0.25) -> None:
        if warmup < 0 or not 1 <= min_runs <= max_runs or not (math.isfinite(min_time_s) and min_time_s >= 0):
            raise LatencyTableError(  # checked here, before any op is timed, not when the first has no samples
                f"timing needs warm-up >= 0, 1 <= min runs <= max runs ({max_runs}) and a finite min time >= 0 s; "
                f"got warm-up {warmup}, min runs {min_runs}, min time {min_time_s}"
            )
        self.warmup, self.min_runs, self.max_runs, self.min_time_s = warmup, min_runs, max_runs, min_time_s


def summarise(samples_ms: list[float], **info: object) -> Entry:
    """Median and interquartile range of ``samples_ms``."""
    if not samples_ms:
        raise ValueError("no samples")
    ordered = sorted(samples_ms)
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4)
    else:
        q1, q3 = ordered[0], ordered[-1]
    return Entry(
        median_ms=statistics.median(ordered), spread_ms=max(0.0, q3 - q1), samples=len(ordered), info=dict(info)
    )


def timed_runs(run: Callable[[], object], timing: Timing) -> list[float]:
    """Wall-clock milliseconds of ``run`` per call, after warm-up."""
    for _ in range(timing.warmup):
        run()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < timing.max_runs and (
        len(samples) < timing.min_runs or time.perf_counter() - start < timing.min_time_s
    ):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples
