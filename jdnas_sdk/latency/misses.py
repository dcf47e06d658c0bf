"""An op the table lacks: the miss policies, interpolation from neighbours, and residual entries.

An estimate never makes a miss a silent zero. :data:`MISS_POLICIES` are what an
:class:`~jdnas_sdk.latency.estimate.Estimator` may do about one (measure it on the table's own
device, model it with the table's device model, interpolate it, or refuse); :func:`interpolate_ms`
is the interpolation, from entries of the same kind that differ only in widths (or widths and map
sizes). The fixed entry (pre- and post-processing) cannot be timed as a kernel: it is the
residual of a whole detector's measured time minus its ops' entries (:func:`residual_entry`),
averaged over several detectors by the profiler (:func:`combine_residuals`). These live apart from
the estimator so the profiler can use the residuals without the estimator's caches.
"""

from __future__ import annotations

import logging
import math

from ..errors import LatencyTableError, NegativeResidualError
from ..families.retinanet import TOPK
from .neighbours import fit as _fit
from .neighbours import neighbours as _neighbours
from .ops import OP_FIELDS, OpKey, op_macs
from .table import Entry, LatencyTable

__all__ = ["MISS_POLICIES", "interpolate_ms", "residual_entry", "clamped_residual", "combine_residuals"]

log = logging.getLogger(__name__)

MISS_POLICIES = ("auto", "measure", "interpolate", "model", "error")


def interpolate_ms(table: LatencyTable, key: OpKey) -> float:
    """The time of ``key``, missing from ``table``, from its neighbours: a fixed entry as
    :func:`_fixed_ms` says; an op from the line through up to four same-kind entries nearest in
    MACs (or scaled by MACs from the nearest one)."""
    same, scaled = _neighbours(table, key)
    pool = same or scaled
    if not pool:
        raise LatencyTableError(
            f"latency table {table.target!r} has no entry for {key} and no entry of the same kind to "
            f"interpolate from; profile this detector on the target (`jdnas profile --target "
            f"{table.target} ...`)"
        )
    if key.kind == "fixed":
        return _fixed_ms(pool, key)
    macs = max(op_macs(key), 1)
    pool.sort(key=lambda kv: abs(math.log(max(op_macs(kv[0]), 1) / macs)))
    near = pool[:4]
    xs = [max(op_macs(k), 1) for k, _ in near]
    ys = [e.median_ms for _, e in near]
    if len(set(xs)) >= 2 and same:
        slope, intercept = _fit(xs, ys)
        if slope > 0 and intercept + slope * macs > 0:
            return intercept + slope * macs
    return ys[0] * macs / xs[0]


def _area(key: OpKey) -> int:
    return int(key["rh"]) * int(key["rw"])


def _fixed_ms(pool: list[tuple[OpKey, Entry]], key: OpKey) -> float:
    """A missing fixed entry. With proposals (R-CNN), the proposal count drives it (RoI pooling,
    box decoding and NMS run once per proposal), not the image area: measured (an ad-hoc probe on
    one Intel Xeon, not a kept benchmark) on this SDK's demo
    Faster R-CNN, 125 ms with 1,000 proposals and 23 ms with 300 at 192 px, and about the same with
    1,000 at 128 px as at 192. So: the line through the two nearest proposal counts among entries
    equal to ``key`` but for the proposal counts, where there are two; else the nearest entry
    scaled by the proposal count. Without proposals (one-stage), post-processing runs over every
    anchor: the nearest entry (in image area and boxes kept before NMS, ``pre``) scaled by image
    area. Interpolated entries are guesses: a search confirms them by measuring."""
    area, props = _area(key), int(key["props"])
    if props > 0:
        rest = _but_proposals(key)
        by_props: dict[int, list[float]] = {}
        for other, entry in pool:
            if _but_proposals(other) == rest and int(other["props"]) > 0:
                by_props.setdefault(int(other["props"]), []).append(entry.median_ms)
        if len(by_props) >= 2:  # two distinct proposal counts: a line cannot divide by zero
            near = sorted(by_props, key=lambda p: abs(math.log(p / props)))[:2]
            slope, intercept = _fit(near, [sum(by_props[p]) / len(by_props[p]) for p in near])
            if intercept + slope * props > 0:
                return intercept + slope * props
    alike = [kv for kv in pool if _but_proposals(kv[0]) == _but_proposals(key)]  # same but for proposals
    other, entry = min(
        alike or pool,
        key=lambda kv: (
            abs(math.log(_area(kv[0]) / area))
            + abs(math.log((int(kv[0]["props"]) + 1) / (props + 1)))
            + abs(math.log(_pre(kv[0]) / _pre(key)))
        ),
    )
    if props > 0 and int(other["props"]) > 0:
        return entry.median_ms * props / int(other["props"])
    return entry.median_ms * area / _area(other)


def _pre(key: OpKey) -> int:
    """Boxes kept per level before NMS: R-CNN proposals, or a one-stage ``topk_candidates`` (0: 1000)."""
    return int(key["pre"]) or TOPK


def _but_proposals(key: OpKey) -> tuple[object, ...]:
    """``key``'s fields but its proposal counts (before and after the RPN's NMS)."""
    return tuple(v for n, v in zip(OP_FIELDS[key.kind], key.values) if n not in ("pre", "props"))


def residual_entry(end_to_end: Entry, ops_ms: float, *, speed: float = 1.0) -> Entry:
    """The fixed entry: a detector's measured end-to-end time minus the sum of its ops' entries.
    ``speed``: the machine's speed at that measurement against the op entries'
    (:func:`~jdnas_sdk.latency.drift.machine_speed`); the end-to-end time is divided by it first."""
    residual = end_to_end.median_ms / speed - ops_ms
    if residual < 0:
        raise NegativeResidualError(
            f"the detector ran in {end_to_end.median_ms / speed:.3f} ms (at the op entries' speed) but its ops' "
            f"entries add up to {ops_ms:.3f} ms: "
            "the op entries are inflated (another load on the machine while profiling?); re-profile on an idle machine"
        )
    extra = {"speed": float(f"{speed:.6g}")} if speed != 1.0 else {}  # 6 digits however slow the ops were
    return Entry(
        median_ms=residual,
        spread_ms=end_to_end.spread_ms / speed,
        samples=end_to_end.samples,
        source="residual",
        info={
            **end_to_end.info,
            "end_to_end_ms": round(end_to_end.median_ms, 6),
            "ops_ms": round(ops_ms, 6),
            **extra,
        },
    )


def combine_residuals(residuals: list[Entry]) -> Entry:
    """One fixed entry from residuals measured on several detectors: their mean, their range as
    the spread, and each one's numbers kept in ``info``."""
    if len(residuals) == 1:
        return residuals[0]
    mean = sum(r.median_ms for r in residuals) / len(residuals)
    spread = max(r.median_ms for r in residuals) - min(r.median_ms for r in residuals)
    return Entry(
        median_ms=mean,
        spread_ms=spread,
        samples=sum(r.samples for r in residuals),
        source="residual",
        info={
            **residuals[0].info,
            "residuals_ms": [round(r.median_ms, 6) for r in residuals],
            "detector_ops_ms": [r.info.get("ops_ms") for r in residuals],
            "detectors": len(residuals),
        },
    )


def clamped_residual(key: OpKey, end_to_end: Entry, ops_ms: float) -> Entry:
    """The fixed entry measured on this machine, 0 ms where a tiny detector's kernels timed alone add up
    to more than the whole (a busy machine, or kernels too small to time alone): its estimate is then its
    kernels' sum, and the entry says why (``info["clamped"]``)."""
    try:
        return residual_entry(end_to_end, ops_ms)
    except NegativeResidualError as exc:
        log.warning("%s: its fixed entry is clamped to 0 ms, so its estimate is its kernels' sum (%s)", key, exc)
        return Entry(0.0, source="residual", info={"clamped": str(exc)})
