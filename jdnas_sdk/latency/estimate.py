"""Latency estimates from a table: total, breakdown by stage and op, and every miss, flagged.

A miss (an op the table lacks) is never a silent zero. On the table's own device it is measured
on demand and written into the table; on a modelled table it is modelled with the table's device
model; on another device it is interpolated from entries of the same op with other widths, and
flagged. ``on_miss="error"`` refuses instead.

:class:`Estimator` binds a table to one detector head and input size; its :meth:`~Estimator.total_ms`
is the search's hot path (cached per block, tens of thousands of estimates per second) and
:meth:`~Estimator.estimate` gives the full breakdown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..arch import Arch, DetectorSpec, standard_arch
from ..detectors import build_detector, describe
from ..errors import LatencyTableError, UnsupportedModelError
from ..lowering import walk
from ..student import Heads, Student
from .backends import Backend, backend_for
from .local import describe_table, load_table, measure_missing_ops
from .lower import (
    STAGES,
    block_ops,
    detector_input,
    fixed_key,
    fpn_lateral_op,
    fpn_shared_ops,
    head_ops,
    lower,
    stem_ops,
)
from .neighbours import fit as _fit
from .neighbours import neighbours as _neighbours
from .ops import OpKey, op_macs
from .roofline import DeviceModel
from .table import Entry, LatencyTable

__all__ = [
    "OpLatency",
    "LatencyEstimate",
    "Estimator",
    "estimate_latency",
    "load_table",
    "MISS_POLICIES",
    "residual_entry",
    "combine_residuals",
]

MISS_POLICIES = ("auto", "measure", "interpolate", "model", "error")
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
        }


class Estimator:
    """Estimates for detectors with head ``spec`` on ``input_size`` images, from ``table``.

    ``on_miss``: ``auto`` (measure on the table's own device, model on a modelled table,
    otherwise interpolate), or force ``measure`` / ``interpolate`` / ``model``, or ``error``.
    Measured misses are saved into the table file when ``save`` (default) and the table has one.
    """

    def __init__(
        self,
        table: LatencyTable,
        spec: DetectorSpec,
        input_size: tuple[int, int],
        *,
        on_miss: str = "auto",
        save: bool = True,
        backend: Backend | None = None,
    ) -> None:
        if on_miss not in MISS_POLICIES:
            raise LatencyTableError(f"on_miss must be one of {MISS_POLICIES}, got {on_miss!r}")
        self.table, self.spec, self.input_size = table, spec, (int(input_size[0]), int(input_size[1]))
        self.on_miss, self.save = on_miss, save
        self.device_model = DeviceModel.from_dict(table.model) if table.model else None
        self._backend = backend
        self._backend_checked = backend is not None
        _, _, self._ph, self._pw = detector_input(spec, self.input_size)
        self._ms: dict[OpKey, tuple[float, str]] = {}
        self._blocks: dict[tuple[Any, ...], float] = {}
        self._misses: dict[OpKey, tuple[float, str]] = {}
        self._heads: float | None = None
        self._fpn: float | None = None
        self._fixed: float | None = None
        self._bound: dict[Heads, _Bound] = {}

    def _bind(self, heads: Heads) -> _Bound:
        """The spec, padded size and (lazily) head/FPN/fixed times of a student's head settings."""
        bound = self._bound.get(heads)
        if bound is None:
            spec = heads.apply(self.spec)
            _, _, ph, pw = detector_input(spec, self.input_size)
            bound = self._bound[heads] = _Bound(spec, ph, pw)
        return bound

    # -- lookups -----------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend | None:
        """The backend that measures misses here (``None`` unless this machine is the table's device)."""
        if not self._backend_checked:
            self._backend_checked = True
            self._backend = None if self.table.modelled else backend_for(self.table.fingerprint)
        return self._backend

    def op_ms(self, key: OpKey, *, arch: Arch | None = None, spec: DetectorSpec | None = None) -> tuple[float, str]:
        """Time of one op and how it was obtained (``arch``/``spec``: what a missing fixed entry is measured on)."""
        hit = self._ms.get(key)
        if hit is not None:
            return hit
        entry = self.table.get(key)
        if entry is not None:
            result = (entry.median_ms, "table")
        else:
            result = self._miss(key, arch, spec)
            self._misses[key] = result
        self._ms[key] = result
        return result

    def _policy(self) -> str:
        if self.on_miss != "auto":
            return self.on_miss
        if self.device_model is not None:
            return "model"
        return "measure" if self.backend is not None else "interpolate"

    def _miss(self, key: OpKey, arch: Arch | None, spec: DetectorSpec | None = None) -> tuple[float, str]:
        policy = self._policy()
        if policy == "error":
            raise LatencyTableError(
                f"latency table {self.table.target!r} has no entry for {key}; profile it with `jdnas profile "
                f"--target {self.table.target} ...` or estimate with on_miss='auto'"
            )
        if policy == "model":
            if self.device_model is None:
                raise LatencyTableError(
                    f"table {self.table.target!r} is measured; it has no device model to model misses with"
                )
            return self.device_model.op_ms(key), "modelled"
        if policy == "measure":
            backend = self.backend
            if backend is None:
                raise LatencyTableError(
                    f"cannot measure {key} for {self.table.target!r}: this machine is not the table's device "
                    f"[{self.table.fingerprint.describe()}]; use on_miss='interpolate'"
                )
            entry = self._measure(backend, key, arch, spec or self.spec)
            self.table.put(key, entry)
            if self.save and self.table.path is not None:
                self.table.save()
            return entry.median_ms, "measured"
        return self._interpolate(key), "interpolated"

    @property
    def misses(self) -> dict[OpKey, tuple[float, str]]:
        """Every op this estimator did not find in the table, with its time and how it was obtained."""
        return dict(self._misses)

    def calibrate_fixed(self, detector: nn.Module) -> Entry:
        """Measure the fixed entry on ``detector`` itself (its trained weights give its real
        post-processing load) and put it into the table; needs this machine to be the table's device."""
        backend = self.backend
        if backend is None:
            raise LatencyTableError(
                f"table {self.table.target!r} is not this machine's: its fixed entry cannot be measured here"
            )
        key = fixed_key(self.spec, self.input_size)
        entry = residual_entry(backend.measure_detector(detector, self.input_size), self.ops_ms(describe(detector)[1]))
        self.table.put(key, entry)
        self._ms.pop(key, None)
        self._fixed = None
        if self.save and self.table.path is not None:
            self.table.save()
        return entry

    def _measure(self, backend: Backend, key: OpKey, arch: Arch | None, spec: DetectorSpec) -> Entry:
        if key.kind != "fixed":
            return backend.measure_op(key)
        arch = arch or standard_arch(spec.backbone)
        end_to_end = backend.measure_detector(build_detector(spec, arch), self.input_size)
        return residual_entry(end_to_end, self.ops_ms(Student.of(spec, arch)))

    def _interpolate(self, key: OpKey) -> float:
        same, scaled = _neighbours(self.table, key)
        pool = same or scaled
        if not pool:
            raise LatencyTableError(
                f"latency table {self.table.target!r} has no entry for {key} and no entry of the same kind to "
                f"interpolate from; profile this detector on the target (`jdnas profile --target "
                f"{self.table.target} ...`)"
            )
        if key.kind == "fixed":
            size, props = int(key["rh"]) * int(key["rw"]), int(key["props"]) + 1
            other, entry = min(
                pool,
                key=lambda kv: (
                    abs(math.log(int(kv[0]["rh"]) * int(kv[0]["rw"]) / size))
                    + abs(math.log((int(kv[0]["props"]) + 1) / props))
                ),
            )
            return entry.median_ms * size / (int(other["rh"]) * int(other["rw"]))
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

    # -- estimates ---------------------------------------------------------------------------------
    def _sum(self, ops: tuple[OpKey, ...], arch: Arch | None) -> float:
        return sum(self.op_ms(k, arch=arch)[0] for k in ops)

    def total_ms(self, arch: Arch | Student) -> float:
        """The estimated end-to-end latency of the detector with backbone ``arch``, or of a whole
        :class:`~jdnas_sdk.student.Student` (its head settings replace the spec's; the search's fast path)."""
        if isinstance(arch, Student) and arch.heads is not None:
            bound = self._bind(arch.heads)
            if bound.fixed is None:
                bound.fixed = self.op_ms(fixed_key(bound.spec, self.input_size), arch=arch.arch, spec=bound.spec)[0]
            return self.ops_ms(arch) + bound.fixed
        arch = arch.arch if isinstance(arch, Student) else arch
        if self._fixed is None:
            self._fixed = self.op_ms(fixed_key(self.spec, self.input_size), arch=arch)[0]
        return self.ops_ms(arch) + self._fixed

    def ops_ms(self, arch: Arch | Student) -> float:
        """The sum of the op entries of the detector with backbone ``arch`` (or of a whole
        student; everything but the fixed entry).

        Walks the backbone once (:func:`jdnas_sdk.lowering.walk`) and caches each block's time
        under its place in the walk, and each FPN lateral conv's under its level, width, FPN width
        and input size (the rest of the FPN and the heads are the same for every arch of one
        head setting), so a new arch costs a dict lookup per block and level.
        """
        if isinstance(arch, Student):
            if arch.heads is not None:
                bound = self._bind(arch.heads)
                if bound.heads is None:
                    bound.heads = self._sum(head_ops(bound.spec, bound.ph, bound.pw), arch.arch)
                    bound.fpn = self._sum(fpn_shared_ops(bound.spec, bound.ph, bound.pw), arch.arch)
                return self._ops_ms(arch.arch, bound.spec, bound.ph, bound.pw, bound.heads, bound.fpn)
            arch = arch.arch
        ph, pw = self._ph, self._pw
        if self._heads is None:
            self._heads = self._sum(head_ops(self.spec, ph, pw), arch)
        if self._fpn is None:
            self._fpn = self._sum(fpn_shared_ops(self.spec, ph, pw), arch)
        return self._ops_ms(arch, self.spec, ph, pw, self._heads, self._fpn)

    def _ops_ms(self, arch: Arch, spec: DetectorSpec, ph: int, pw: int, heads_ms: float, fpn_ms: float) -> float:
        blocks = self._blocks
        stem_key = ("stem", arch.stem, ph, pw)
        total = blocks.get(stem_key)
        if total is None:
            total = blocks[stem_key] = self._sum(stem_ops(arch.stem, ph, pw), arch)
        for block in walk(arch, ph, pw):
            ms = blocks.get(block)
            if ms is None:
                ms = blocks[block] = self._sum(block_ops(*block), arch)
            total += ms
        total += fpn_ms
        stages = arch.stages
        for level, k in enumerate(spec.returned_layers):  # a lateral conv is all a width changes
            key = ("fpn", level, stages[k - 1].width, spec.fpn_channels, ph, pw)
            ms = blocks.get(key)
            if ms is None:
                ms = blocks[key] = self.op_ms(fpn_lateral_op(spec, level, key[2], ph, pw), arch=arch)[0]
            total += ms
        return total + heads_ms

    def estimate(self, arch: Arch | Student) -> LatencyEstimate:
        """The full breakdown for backbone ``arch`` (or a whole student)."""
        spec = self.spec
        if isinstance(arch, Student):
            spec, arch = arch.spec(self.spec), arch.arch
        lowered = lower(spec, arch, self.input_size)
        ops: list[OpLatency] = []
        for stage, stage_ops in lowered.stages:
            for key, count in stage_ops:
                ms, how = self.op_ms(key, arch=arch)
                ops.append(OpLatency(stage, key, count, ms, how))
        ms, how = self.op_ms(lowered.fixed, arch=arch, spec=spec)
        ops.append(OpLatency("fixed", lowered.fixed, 1, ms, how))
        by_stage = {s: 0.0 for s in STAGES}
        for op in ops:
            by_stage[op.stage] += op.total_ms
        misses = tuple(o for o in ops if o.how != "table")
        return LatencyEstimate(
            total_ms=sum(by_stage.values()),
            target=self.table.target,
            modelled=self.table.modelled,
            device=self.table.fingerprint.describe(),
            input_size=self.input_size,
            by_stage=by_stage,
            ops=tuple(ops),
            misses=misses,
            table=describe_table(self.table),
        )


@dataclass
class _Bound:
    """An estimator's state for one head setting: its spec, padded input and cached stage times."""

    spec: DetectorSpec
    ph: int
    pw: int
    heads: float | None = None
    fpn: float | None = None
    fixed: float | None = None


def residual_entry(end_to_end: Entry, ops_ms: float) -> Entry:
    """The fixed entry: a detector's measured end-to-end time minus the sum of its ops' entries."""
    residual = end_to_end.median_ms - ops_ms
    if residual < 0:
        raise LatencyTableError(
            f"the detector ran in {end_to_end.median_ms:.3f} ms but its ops' entries add up to {ops_ms:.3f} ms: "
            "the op entries are inflated (another load on the machine while profiling?); re-profile on an idle machine"
        )
    return Entry(
        median_ms=residual,
        spread_ms=end_to_end.spread_ms,
        samples=end_to_end.samples,
        source="residual",
        info={**end_to_end.info, "end_to_end_ms": round(end_to_end.median_ms, 6), "ops_ms": round(ops_ms, 6)},
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
            "detectors": len(residuals),
        },
    )


def estimate_latency(
    model_or_arch: nn.Module | Arch,
    *,
    target: str | LatencyTable = "cpu-ort",
    input_size: tuple[int, int] | int | None = None,
    spec: DetectorSpec | None = None,
    on_miss: str = "auto",
    save: bool = True,
    progress: bool = True,
    backend: Backend | None = None,
) -> LatencyEstimate:
    """Estimated latency of a detector on ``target``, with the breakdown and every miss.

    ``model_or_arch`` is a supported torchvision detector, or an :class:`Arch` together with
    ``spec``. ``input_size`` is the image's (height, width) (an int means square), by default a
    ``spec.min_size`` square. See :class:`Estimator` for ``on_miss``. On this machine's own table
    the missing kernels are measured first with a progress bar (``progress``) and cached, by
    ``backend`` (default: the table's backend with its standard timing).
    """
    if isinstance(model_or_arch, Arch):
        if spec is None:
            raise LatencyTableError(
                "estimating an Arch needs the detector's spec too: estimate_latency(arch, spec=...)"
            )
        arch = model_or_arch
    elif isinstance(model_or_arch, nn.Module):
        spec, arch = describe(model_or_arch)
    else:
        raise UnsupportedModelError(
            f"estimate_latency takes a torchvision detector (nn.Module) or an Arch with spec=, got "
            f"{type(model_or_arch).__name__} {str(model_or_arch)[:60]!r}; build the detector first "
            f"(jdnas_sdk.load_detector)"
        )
    if input_size is None:
        input_size = (spec.min_size, spec.min_size)
    elif isinstance(input_size, int):
        input_size = (input_size, input_size)
    table = load_table(target)
    if backend is not None and backend.fingerprint() != table.fingerprint:
        raise LatencyTableError(
            f"backend {backend.name!r} measures on [{backend.fingerprint().describe()}], not on the "
            f"device of table {table.target!r} [{table.fingerprint.describe()}]"
        )
    if save and on_miss in ("auto", "measure"):  # measure what this machine's table lacks, with a progress bar
        measure_missing_ops(table, spec, arch, input_size, backend=backend, progress=progress)
    return Estimator(table, spec, input_size, on_miss=on_miss, save=save, backend=backend).estimate(arch)
