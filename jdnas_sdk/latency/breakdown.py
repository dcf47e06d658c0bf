"""What a latency estimate says: the total, its share per stage, every op and every miss.

:class:`LatencyEstimate` is the answer of :meth:`~jdnas_sdk.latency.estimate.Estimator.estimate`
and :func:`~jdnas_sdk.latency.estimate.estimate_latency`; it prints as the ``jdnas latency`` report
and serialises with :meth:`~LatencyEstimate.to_dict`. It holds numbers only, so reports and the
CLI can read it without the estimator that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ops import OpKey

__all__ = ["HOW", "OpLatency", "LatencyEstimate"]

#: How an op's time was obtained, in an estimate.
HOW = ("table", "measured", "modelled", "interpolated")


@dataclass(frozen=True)
class OpLatency:
    """One op of an estimate: ``count`` launches of ``ms`` each, obtained ``how``."""

    stage: str
    key: OpKey
    count: int
    ms: float
    how: str

    @property
    def total_ms(self) -> float:
        return self.ms * self.count


@dataclass(frozen=True)
class LatencyEstimate:
    """An estimated end-to-end latency with its parts. ``modelled`` says the table is a model,
    not a measurement; ``misses`` lists every op that was not in the table as it stood."""

    total_ms: float
    target: str
    modelled: bool
    device: str
    input_size: tuple[int, int]
    by_stage: dict[str, float]
    ops: tuple[OpLatency, ...]
    misses: tuple[OpLatency, ...] = field(default=())
    table: str = ""  # which table answered (see jdnas_sdk.latency.local.describe_table)
    nms_tests: int | None = None  # the detector's NMS load its fixed entry followed (jdnas_sdk.latency.nms_load)

    def __str__(self) -> str:
        label = "MODELLED (roofline, not measured)" if self.modelled else "measured table"
        lines = [
            f"estimated latency on {self.target}: {self.total_ms:.2f} ms  [{label}; {self.device}; "
            f"input {self.input_size[0]}x{self.input_size[1]}]"
        ]
        for stage, ms in self.by_stage.items():
            lines.append(f"  {stage:<7} {ms:9.3f} ms  {100 * ms / self.total_ms:5.1f}%")
        if self.misses:
            counts: dict[str, int] = {}
            for miss in self.misses:
                counts[miss.how] = counts.get(miss.how, 0) + 1
            lines.append("  misses: " + ", ".join(f"{n} {how}" for how, n in counts.items()))
        if self.nms_tests is not None:
            lines.append(f"  fixed entry at this detector's NMS load ({self.nms_tests:,} IoU tests on the probe image)")
        if self.table:
            lines.append(f"  table: {self.table}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_ms": self.total_ms,
            "target": self.target,
            "modelled": self.modelled,
            "device": self.device,
            "input_size": list(self.input_size),
            "by_stage": self.by_stage,
            "ops": [{"stage": o.stage, "op": str(o.key), "count": o.count, "ms": o.ms, "how": o.how} for o in self.ops],
            "misses": [{"op": str(o.key), "ms": o.ms, "how": o.how} for o in self.misses],
            "table": self.table,
            "nms_tests": self.nms_tests,
        }
