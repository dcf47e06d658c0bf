"""Latency estimates from a table: total, breakdown by stage and op, and every miss, flagged.

A miss (an op the table lacks) is never a silent zero. On the table's own device it is measured
on demand and written into the table; on a modelled table it is modelled with the table's device
model; on another device it is interpolated from entries of the same op with other widths, and
flagged. ``on_miss="error"`` refuses instead.

:class:`Estimator` binds a table to one detector head and input size; its :meth:`~Estimator.total_ms`
is the search's hot path (cached per block, tens of thousands of estimates per second) and
:meth:`~Estimator.estimate` gives the full breakdown. What an estimate says (:class:`LatencyEstimate`,
:class:`OpLatency`) lives in :mod:`.breakdown`; the miss policies, interpolation and the fixed
entry's residuals live in :mod:`.misses`; both are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .._args import as_input_size, as_spec
from ..arch import Arch, DetectorSpec, standard_arch
from ..detectors import build_detector, describe
from ..errors import ArgumentError, LatencyTableError, UnsupportedModelError
from ..lowering import walk
from ..student import Heads, Student
from .backends import Backend, backend_for
from .breakdown import HOW as HOW  # re-exported: its home is .breakdown
from .breakdown import LatencyEstimate, OpLatency
from .local import cache_dir, describe_table, load_table, measure_missing_ops
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
from .misses import MISS_POLICIES, clamped_residual, combine_residuals, interpolate_ms, residual_entry
from .nms_load import load_shift_ms, nms_load, nms_ms_per_test, with_loads
from .ops import OpKey
from .places import table_path
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

log = logging.getLogger(__name__)


class Estimator:
    """Estimates for detectors with head ``spec`` on ``input_size`` images, from ``table``.

    ``on_miss``: ``auto`` (measure on the table's own device, model on a modelled table,
    otherwise interpolate), or force ``measure`` / ``interpolate`` / ``model``, or ``error``.
    Measured misses are saved into the table file when ``save`` (default) and the table has one.
    ``measure_on``: the detector a missing fixed entry of a student is timed on (e.g. the trained base
    morphed to it: its weights decide how many boxes post-processing handles); by default one of random
    weights built from the spec, whose NMS load is another.
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
        measure_on: Callable[[Student], nn.Module] | None = None,
    ) -> None:
        if on_miss not in MISS_POLICIES:
            raise LatencyTableError(f"on_miss must be one of {MISS_POLICIES}, got {on_miss!r}")
        size = as_input_size(input_size)
        if size is None:
            raise ArgumentError("input_size is the image fed to the detector: give one, e.g. (256, 256)")
        self.table, self.spec, self.input_size = table, as_spec(spec), size
        self.on_miss, self.save, self.measure_on = on_miss, save, measure_on
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
                f"--target {_profile_target(self.table)} ...` or estimate with on_miss='auto' (`--on-miss auto`)"
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
        return interpolate_ms(self.table, key), "interpolated"

    @property
    def misses(self) -> dict[OpKey, tuple[float, str]]:
        """Every op this estimator did not find in the table, with its time and how it was obtained."""
        return dict(self._misses)

    def lacks_fixed(self) -> bool:
        """Whether this machine's table (one this machine measures) lacks the estimated setting's fixed
        entry: what :meth:`calibrate_fixed` on the detector at hand fills (its weights, not random ones)."""
        return self.backend is not None and fixed_key(self.spec, self.input_size) not in self.table

    def calibrate_fixed(self, detector: nn.Module) -> Entry:
        """Measure the fixed entry on ``detector`` itself (its trained weights give its real
        post-processing load) and put it into the table; needs this machine to be the table's device."""
        backend = self.backend
        if backend is None:
            raise LatencyTableError(
                f"table {self.table.target!r} is not this machine's: its fixed entry cannot be measured here"
            )
        key = fixed_key(self.spec, self.input_size)
        end_to_end = backend.measure_detector(detector, self.input_size)
        entry = clamped_residual(key, end_to_end, self.ops_ms(describe(detector)[1]))
        entry = with_loads(entry, [end_to_end])
        self.table.put(key, entry)
        self._ms.pop(key, None)
        self._fixed = None
        if self.save and self.table.path is not None:
            self.table.save()
        return entry

    def _measure(self, backend: Backend, key: OpKey, arch: Arch | None, spec: DetectorSpec) -> Entry:
        if key.kind != "fixed":
            return backend.measure_op(key)
        student = Student.of(spec, arch or standard_arch(spec.backbone))
        detector = build_detector(spec, student.arch) if self.measure_on is None else self.measure_on(student)
        end_to_end = backend.measure_detector(detector, self.input_size)
        entry = clamped_residual(key, end_to_end, self.ops_ms(student))
        return with_loads(entry, [end_to_end])

    # -- estimates ---------------------------------------------------------------------------------
    def _sum(self, ops: tuple[OpKey, ...], arch: Arch | None) -> float:
        return sum(self.op_ms(k, arch=arch)[0] for k in ops)

    def total_ms(self, arch: Arch | Student, *, nms_tests: int | None = None) -> float:
        """The estimated end-to-end latency of the detector with backbone ``arch``, or of a whole
        :class:`~jdnas_sdk.student.Student` (its head settings replace the spec's; the search's fast path).
        ``nms_tests``: the IoU tests the detector's NMS makes on the probe image
        (:func:`~jdnas_sdk.latency.nms_load.nms_load`), which its fixed entry then follows."""
        if isinstance(arch, Student) and arch.heads is not None:  # its head setting's fixed entry, cached per setting
            bound = self._bind(arch.heads)
            spec = bound.spec
            if bound.fixed is None:
                bound.fixed = self.op_ms(fixed_key(spec, self.input_size), arch=arch.arch, spec=spec)[0]
            fixed = bound.fixed
        else:  # the spec's
            spec = self.spec
            if self._fixed is None:
                backbone = arch.arch if isinstance(arch, Student) else arch
                self._fixed = self.op_ms(fixed_key(spec, self.input_size), arch=backbone)[0]
            fixed = self._fixed
        total = self.ops_ms(arch) + fixed
        return total if nms_tests is None else total + self.load_ms(fixed_key(spec, self.input_size), nms_tests)

    def load_ms(self, key: OpKey, nms_tests: int | None) -> float:
        """How far fixed entry ``key`` moves for a detector making ``nms_tests`` NMS IoU tests (0 for
        ``None``, or where the table fits no cost per test or the entry holds no loads)."""
        return self._load_shift(key, nms_tests) or 0.0

    def _load_shift(self, key: OpKey, nms_tests: int | None) -> float | None:
        if nms_tests is None:
            return None
        return load_shift_ms(self.table.get(key), nms_tests, nms_ms_per_test(self.table))

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

    def estimate(self, arch: Arch | Student, *, nms_tests: int | None = None) -> LatencyEstimate:
        """The full breakdown for backbone ``arch`` (or a whole student); ``nms_tests`` as for :meth:`total_ms`."""
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
        shift = self._load_shift(lowered.fixed, nms_tests)  # None: the entry's mean stands
        ops.append(OpLatency("fixed", lowered.fixed, 1, ms + (shift or 0.0), how))
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
            nms_tests=nms_tests if shift is not None else None,
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
    ``backend`` (default: the table's backend with its standard timing). For a detector, where the
    table fits a cost per NMS IoU test, the fixed entry follows the detector's own NMS load
    (:mod:`~jdnas_sdk.latency.nms_load`: one forward pass on the probe image counts it); a fixed entry
    this machine's table lacks is timed on the detector itself (its weights, not random ones)."""
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
    input_size = as_input_size(input_size) or (spec.min_size, spec.min_size)
    table = load_table(target)
    if backend is not None and backend.fingerprint() != table.fingerprint:
        raise LatencyTableError(
            f"backend {backend.name!r} measures on [{backend.fingerprint().describe()}], not on the "
            f"device of table {table.target!r} [{table.fingerprint.describe()}]"
        )
    if save and on_miss in ("auto", "measure"):  # measure what this machine's table lacks, with a progress bar
        measure_missing_ops(table, spec, arch, input_size, backend=backend, progress=progress)
    tests = None
    if isinstance(model_or_arch, nn.Module) and nms_ms_per_test(table) is not None:
        tests = nms_load(model_or_arch, input_size)
    model = model_or_arch if isinstance(model_or_arch, nn.Module) else None  # a missing fixed entry: timed on it
    on = None if model is None else (lambda _student: model)
    estimator = Estimator(table, spec, input_size, on_miss=on_miss, save=save, backend=backend, measure_on=on)
    return estimator.estimate(arch, nms_tests=tests)


def _profile_target(table: LatencyTable) -> str:
    """What ``jdnas profile --target`` needs to fill ``table``: its name where the name reaches this very
    file (a table of the search path, or this machine's cache of a shipped target), else its file (a copy
    the user named by path, which the name would not reach)."""
    if table.path is None:
        return table.target
    path = table.path.resolve()
    try:
        by_name = table_path(table.target).resolve()
    except LatencyTableError:  # no table of that name on the search path
        by_name = None
    cached = path.is_relative_to(cache_dir().resolve()) and path.stem == table.target
    return table.target if by_name == path or cached else str(table.path)
