"""``jdnas profile``: measure every op a search space can reach, resumable after a kill.

The table on disk is the progress record: it is rewritten atomically every few seconds, and a
restarted profile skips every op it already holds. A table measured with another device or
other settings is never mixed into: profiling into it is refused with both fingerprints named.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from .._lock import lock_table
from ..arch import Arch, DetectorSpec
from ..detectors import build_detector, describe
from ..errors import LatencyTableError
from ..space import SearchSpace
from ..student import Student
from .backends import Backend, RooflineBackend
from .drift import applied_speed, machine_speed, reference_ops
from .estimate import Estimator
from .lower import fixed_key
from .misses import combine_residuals, residual_entry
from .nms_load import with_loads
from .ops import OpKey
from .reach import fixed_specs, in_fixed_setting, reachable_ops
from .table import LatencyTable

__all__ = ["profile", "open_table", "timing_cache_path", "VariantModels"]

VariantModels = Callable[[DetectorSpec], Sequence[nn.Module]]
"""Detectors that run a given head setting (a spec of :func:`~jdnas_sdk.latency.reach.fixed_specs`),
for that setting's fixed entry; the caller builds them (for instance the trained base and a few
students morphed to that setting, which this stage cannot import). Their FPN width, input size,
proposals and mask head must be the setting's; their backbone, box head and towers may be any
(:func:`~jdnas_sdk.latency.reach.in_setting` moves a sampled student into a setting)."""


def timing_cache_path(table_path: str | os.PathLike[str]) -> Path:
    """Where a TensorRT table's timing cache lives: beside the table (``T.json`` ->
    ``T.trt-timing-cache``), so that a resumed profile reuses the tactics already tuned."""
    return Path(table_path).with_suffix(".trt-timing-cache")


def _prepare_backend(table: LatencyTable, backend: Backend) -> None:
    """Backend checks that need the table: TensorRT refuses targets its version cannot profile
    (``v100-trt`` with TensorRT >= 10.5) and shares one timing cache beside the table."""
    check = getattr(backend, "check_target", None)
    if check is not None:
        check(table.target)
    use_cache = getattr(backend, "use_cache", None)
    if use_cache is not None and table.path is not None:
        use_cache(timing_cache_path(table.path))


def _save(table: LatencyTable, backend: Backend) -> None:
    table.save()
    save_cache = getattr(backend, "save_cache", None)
    if save_cache is not None:
        save_cache()


log = logging.getLogger(__name__)


def open_table(path: str | os.PathLike[str], target: str, backend: Backend) -> LatencyTable:
    """The table at ``path`` to add to (checked against ``target`` and the backend's fingerprint), or a new one."""
    path = Path(path)
    here = backend.fingerprint()
    model = backend.model.to_dict() if isinstance(backend, RooflineBackend) else None
    if not path.exists():
        if model is not None:
            table = LatencyTable(
                target=target,
                source="modelled",
                fingerprint=here,
                model=model,
                notes="MODELLED by a roofline (see 'model'); replace by profiling the device",
            )
        else:
            table = LatencyTable(
                target=target,
                source="measured",
                fingerprint=here,
                notes="measured by jdnas profile; op entries are kernel times, fixed entries residuals",
            )
        table.path = path
        return table
    table = LatencyTable.load(path)
    if table.target != target:
        raise LatencyTableError(f"{path} is the table of target {table.target!r}, not {target!r}; pass another --out")
    if table.modelled != (model is not None) or (model is not None and table.model != model):
        kind = "modelled" if table.modelled else "measured"
        raise LatencyTableError(f"{path} is a {kind} table made another way; pass another --out to start a new table")
    if table.fingerprint != here:
        raise LatencyTableError(
            f"{path} was measured on [{table.fingerprint.describe()}] but this run measures on [{here.describe()}] "
            f"({'; '.join(table.fingerprint.differences(here))}): pass another --out or --target to start a new table"
        )
    return table


def profile(
    table: LatencyTable,
    backend: Backend,
    spec: DetectorSpec,
    *,
    base: Arch,
    input_sizes: list[tuple[int, int]],
    space: SearchSpace | None = None,
    model: nn.Module | None = None,
    fixed_models: Sequence[nn.Module] = (),
    variant_models: VariantModels | None = None,
    reference_count: int = 6,
    save_every_s: float = 2.0,
    progress: bool = True,
    executor: str = "local",
    ray_options: dict[str, Any] | None = None,
    wait: bool | float = False,
) -> LatencyTable:
    """Measure the ops of ``space`` (default: the grid around ``base``) for each input size, then
    each size's fixed entry at full detection load.

    The fixed entry is the mean residual (end-to-end time minus op entries) over ``model`` (default:
    ``(spec, base)`` with random weights) and ``fixed_models``: post-processing costs a little more
    or less with each detector's boxes, and students of the space (for instance the base morphed
    to sampled architectures) describe what the search will meet better than the base alone.
    Another head setting's fixed entry is the mean residual over ``variant_models(setting)``
    (default: the base backbone with that setting and random weights). Before and after each fixed
    entry's detectors, ``reference_count`` of the profiled detector's largest ops (at its own input
    size, the same for every setting) are timed again, and where the machine's speed moved by more
    than :data:`~jdnas_sdk.latency.drift.SPEED_TOLERANCE` the end-to-end times are scaled to the
    speed the table's ops were measured at (:mod:`~jdnas_sdk.latency.drift`; 0: not checked).
    Give detectors with trained weights where you have them: how many boxes survive the score
    threshold and NMS, and so the post-processing time, follows the weights (at 1,000 proposals a
    trained Faster R-CNN ran 8-10% faster than the same detector with random weights).
    With ``executor="ray"`` the ops are measured by Ray workers of the table's device type, split
    between them and merged by key (``ray_options``: ``workers``, ``num_cpus``, ``num_gpus``,
    ``address``, ``init`` of :func:`~jdnas_sdk.latency.distributed.measure_ops_on_ray`); workers
    with another fingerprint are refused. The fixed entries are measured here, as before.
    The table file stays locked for the run: a second profile of it refuses naming this one
    (or waits for it with ``wait``). Returns ``table``, saved to its path."""
    if executor not in ("local", "ray"):
        raise LatencyTableError(f"executor must be 'local' or 'ray', got {executor!r}")
    _prepare_backend(table, backend)  # TensorRT: refuses a target its version cannot profile, loads the timing cache
    with lock_table(table.path, wait=wait) if table.path is not None else nullcontext():
        table.merge_saved()  # what a run that held the table before this one added
        return _profile(
            table,
            backend,
            spec,
            base=base,
            input_sizes=input_sizes,
            space=space,
            model=model,
            fixed_models=fixed_models,
            variant_models=variant_models,
            reference_count=reference_count,
            save_every_s=save_every_s,
            progress=progress,
            executor=executor,
            ray_options=ray_options,
        )


def _profile(
    table: LatencyTable,
    backend: Backend,
    spec: DetectorSpec,
    *,
    base: Arch,
    input_sizes: list[tuple[int, int]],
    space: SearchSpace | None,
    model: nn.Module | None,
    fixed_models: Sequence[nn.Module],
    variant_models: VariantModels | None,
    reference_count: int,
    save_every_s: float,
    progress: bool,
    executor: str,
    ray_options: dict[str, Any] | None,
) -> LatencyTable:
    space = space or SearchSpace(base)
    wanted: dict = {}
    for size in input_sizes:
        wanted.update(dict.fromkeys(reachable_ops(spec, space, size)))
    todo = [key for key in wanted if key not in table]
    if executor == "ray" and todo:
        from .distributed import measure_ops_on_ray  # imports Ray

        measure_ops_on_ray(table, backend, todo, save_every_s=save_every_s, progress=progress, **(ray_options or {}))
        todo = []
    done_before = len(wanted) - len(todo)
    last_save = time.monotonic()
    bar = tqdm(
        total=len(wanted),
        initial=done_before,
        desc=f"profile {table.target}",
        unit="op",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for key in todo:
            bar.set_postfix_str(key.kind, refresh=False)
            table.put(key, backend.measure_op(key))
            bar.update()
            if time.monotonic() - last_save >= save_every_s:
                _save(table, backend)
                last_save = time.monotonic()
    finally:
        bar.close()
        _save(table, backend)
    for size in input_sizes:
        refs = reference_ops(table, spec, base, size, count=reference_count) if reference_count else []
        for variant in fixed_specs(spec, space):
            detectors = _fixed_detectors(spec, variant, base, model, fixed_models, variant_models)
            _fixed_entry(table, backend, variant, size, detectors, progress, refs=refs)
    return table


def _fixed_detectors(
    spec: DetectorSpec,
    variant: DetectorSpec,
    base: Arch,
    model: nn.Module | None,
    fixed_models: Sequence[nn.Module],
    variant_models: VariantModels | None,
) -> Callable[[], list[nn.Module]]:
    """The detectors whose residuals make head setting ``variant``'s fixed entry, built only when
    the entry is missing: the base heads' on ``model`` and ``fixed_models``; another setting's on
    ``variant_models(variant)``, or on the base backbone with that setting and random weights."""
    if variant == spec:
        return lambda: [model if model is not None else build_detector(spec, base), *fixed_models]
    if variant_models is not None:
        return lambda: list(variant_models(variant))
    return lambda: [build_detector(variant, base)]


def _fixed_entry(
    table: LatencyTable,
    backend: Backend,
    variant: DetectorSpec,
    size: tuple[int, int],
    detectors: Callable[[], list[nn.Module]],
    progress: bool,
    *,
    refs: list[tuple[OpKey, int]],
) -> None:
    """Measure the fixed entry of head setting ``variant`` at ``size`` unless the table has it: the
    mean residual (end-to-end time minus the op entries) over ``detectors()``, the end-to-end times
    scaled to the op entries' speed by ops ``refs`` timed before and after, each detector's NMS load
    kept beside its residual (:mod:`.nms_load`: what an estimate of a given detector follows). The references are the
    profiled detector's own largest ops at its own input size, whatever the setting: the machine's
    speed is the machine's, and small ops read it badly (on one AMD EPYC, a 128 px setting's
    largest ops read 6-12% fast against their entries, while the base's 256 px ops, timed between
    students in the accuracy benchmark straight after, read within 4% of theirs; the scaled 128 px
    entries put those students' estimates 13% high on average)."""
    key = fixed_key(variant, size)
    if key in table:
        return
    if isinstance(backend, RooflineBackend):
        table.put(key, backend.fixed_entry(key))
        table.save()
        return
    models = detectors()
    if not models:
        raise LatencyTableError(f"no detector to time for the fixed entry {key}: variant_models gave none")
    students = []
    for detector in models:
        runs, arch = describe(detector)
        if fixed_key(runs, size) != key or not in_fixed_setting(runs, variant):
            raise LatencyTableError(
                f"a detector given for the fixed entry {key} runs other head settings ({runs}); "
                "its FPN width, input size, proposals and mask head must be the setting's "
                "(its box head and towers may differ: the table times those as kernels)"
            )
        students.append(Student.of(runs, arch))
    estimator = Estimator(table, variant, size, on_miss="error")
    before = machine_speed(table, backend, refs)
    timed = []
    for index, (detector, student) in enumerate(zip(models, students), start=1):
        if progress:
            log.info("fixed entry %s: timing whole detector %d/%d ...", key, index, len(models))
        timed.append((backend.measure_detector(detector, size), estimator.ops_ms(student)))
    reading = (before + machine_speed(table, backend, refs)) / 2
    speed = applied_speed(reading)
    if speed != 1.0:
        log.warning(
            "fixed entry %s: this machine ran %.0f%% %s than when the ops were measured; its end-to-end times are "
            "scaled to the ops' speed (if this repeats, profile on an idle machine)",
            key,
            100 * abs(speed - 1),
            "slower" if speed > 1 else "faster",
        )
    else:
        log.debug("fixed entry %s: speed read %.3f of the ops', within tolerance: not scaled", key, reading)
    entry = combine_residuals([residual_entry(e2e, ops, speed=speed) for e2e, ops in timed])
    table.put(key, with_loads(entry, [e2e for e2e, _ in timed]))  # each detector's NMS load (.nms_load)
    table.save()
