"""Tables of *this* machine: ``cpu-ort`` means ONNX Runtime on the CPU the user is sitting at.

A shipped measured table describes the CPU it was measured on. On any other machine whose
backend can run here (ONNX Runtime, torch on CPU), a target *name* resolves to this machine's
own table in the user cache folder (``$JDNAS_CACHE/latency/<fingerprint hash>/<target>.json``,
by default ``~/.cache/jdnas/...``): it starts empty, the kernels an estimate needs are measured
on demand (with a progress bar and their count) and cached, and the shipped table stays the
reference for its own CPU (its entries answer where the fingerprint matches; what that CPU
measures on demand goes to its cache folder too, so the shipped file is only ever read). Every resolution logs which
table answered, and :func:`describe_table` says it in one line for results and reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from .._args import as_path
from ..arch import Arch, DetectorSpec
from ..errors import LatencyTableError
from .backends import Backend, backend_for, local_fingerprint
from .lower import lower
from .table import CACHE_ENV, Fingerprint, LatencyTable, cache_root, table_path

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "fingerprint_hash",
    "local_table_path",
    "local_device",
    "resolve_local",
    "describe_table",
    "measure_missing_ops",
    "load_table",
]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The folder of this machine's own latency tables (one subfolder per device and software)."""
    return cache_root() / "latency"


def fingerprint_hash(fingerprint: Fingerprint) -> str:
    """A short stable hash of every fingerprint field: one cache folder per device and software."""
    text = json.dumps(asdict(fingerprint), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def local_table_path(target: str, fingerprint: Fingerprint) -> Path:
    """Where this machine's table of ``target`` lives in the cache."""
    return cache_dir() / fingerprint_hash(fingerprint) / f"{target}.json"


def local_device(reference: LatencyTable) -> Fingerprint | None:
    """The device whose table answers for ``reference``'s target on this machine: the reference's
    own where this machine is its device, else this machine as measured by the same backend
    (:func:`~jdnas_sdk.latency.backends.local_fingerprint`) where that backend runs here; ``None``
    for a modelled table or one whose backend cannot run here. The one rule :func:`resolve_local`,
    ``jdnas profile``'s default output and ``jdnas doctor`` follow."""
    if reference.modelled:
        return None
    if backend_for(reference.fingerprint) is not None:
        return reference.fingerprint
    here = local_fingerprint(reference.fingerprint)
    return here if backend_for(here) is not None else None


def resolve_local(reference: LatencyTable) -> LatencyTable:
    """The table to use here for ``reference`` (a measured table found by target name).

    Where this machine is its device, ``reference``'s entries answer, joined by those measured here
    before (the shipped ones win), and what it measures on demand is saved to this machine's cached
    table (a copy of both), never into the file a target *name* found (an installed package may be
    read-only, and a checkout's tracked table should not change under a run; a table given by path
    is written where it is). Where its backend cannot run here, ``reference``
    as is (its misses interpolated). Otherwise this machine's cached table of the same target,
    created empty (not yet written) if there is none.
    """
    here = local_device(reference)
    if here is None:  # modelled, or its backend does not run here (no GPU, ...): keep the reference
        return reference
    if here == reference.fingerprint:
        path = local_table_path(reference.target, reference.fingerprint)
        reference.merge_saved(path)  # kernels measured here before; nothing when absent or another table
        reference.shipped, reference.path = reference.path, path
        log.info("latency table %r answers from %s (this machine is its device)", reference.target, reference.shipped)
        return reference
    path = local_table_path(reference.target, here)
    if path.is_file():
        table = LatencyTable.load(path)
        if table.target != reference.target or table.fingerprint != here:
            raise LatencyTableError(
                f"{path} is not this machine's {reference.target!r} table "
                f"({'; '.join(table.fingerprint.differences(here)) or 'another target'}); remove it"
            )
    else:
        table = LatencyTable(
            target=reference.target,
            source="measured",
            fingerprint=here,
            notes=f"this machine's {reference.target} table, measured on demand by jdnas_sdk; "
            f"reference table: {reference.path} [{reference.fingerprint.describe()}]",
        )
        table.path = path
    log.info(
        "latency table %r: this machine [%s] is not the shipped table's device [%s]; answering from this "
        "machine's table %s (%d entries; misses are measured here and cached)",
        reference.target,
        here.describe(),
        reference.fingerprint.describe(),
        path,
        len(table),
    )
    return table


def describe_table(table: LatencyTable) -> str:
    """One line naming the table that answered: target, kind, device and file."""
    kind = "MODELLED" if table.modelled else "measured"
    cached = table.path is not None and cache_dir() in table.path.parents
    where = f"this machine's cached table {table.path}" if cached else f"table {table.path or '(in memory)'}"
    if table.shipped is not None:  # a shipped table on its own device: what it lacks is measured into the cache
        where = f"table {table.shipped} (what it lacks measured here into {table.path})"
    return f"{table.target}: {kind} {where} [{table.fingerprint.describe()}], {len(table)} entries"


def measure_missing_ops(
    table: LatencyTable,
    spec: DetectorSpec,
    arch: Arch,
    input_size: tuple[int, int],
    *,
    backend: Backend | None = None,
    progress: bool = True,
    save_every_s: float = 5.0,
) -> int:
    """Measure the op kernels of ``(spec, arch)`` that ``table`` lacks on this machine, with a
    progress bar giving their count, saving as it goes; returns how many were measured.

    The fixed entry is left to the estimator (it times the whole detector). Does nothing (returns 0)
    where this machine is not the table's device."""
    backend = backend or (None if table.modelled else backend_for(table.fingerprint))
    if backend is None:
        return 0
    lowered = lower(spec, arch, (int(input_size[0]), int(input_size[1])))
    todo = [key for key in dict.fromkeys(k for _, ops in lowered.stages for k, _ in ops) if key not in table]
    if not todo:
        return 0
    log.info("measuring %d kernels missing from %s", len(todo), describe_table(table))
    last = time.monotonic()
    bar = tqdm(
        total=len(todo),
        desc=f"measuring {len(todo)} {table.target} kernels on this machine",
        unit="kernel",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for key in todo:
            table.put(key, backend.measure_op(key))
            bar.update()
            if table.path is not None and time.monotonic() - last >= save_every_s:
                table.save()
                last = time.monotonic()
    finally:
        bar.close()
        if table.path is not None:
            table.save()
    return len(todo)


def load_table(target: str | LatencyTable) -> LatencyTable:
    """A table by target name or path (see :func:`jdnas_sdk.latency.table.table_path`).

    A *name* of a measured target whose backend runs here resolves to this machine's table
    (:func:`jdnas_sdk.latency.local.resolve_local`); a table *file* from another device is used
    as is and warns (:class:`~jdnas_sdk.latency.table.DeviceMismatchWarning`)."""
    if isinstance(target, LatencyTable):
        return target
    table = LatencyTable.load(table_path(as_path(target, "target (a table name or file)")))
    if not table.modelled and _is_name(target):
        table = resolve_local(table)  # a name means the target on *this* machine
    if not table.modelled:
        table.warn_if_other_device(local_fingerprint(table.fingerprint))
    return table


def _is_name(target: str | os.PathLike[str]) -> bool:
    text = os.fspath(target)
    return not (text.endswith(".json") or os.sep in text)
