"""Checks before any work: a request that cannot succeed fails in seconds, leaving nothing behind.

:func:`validate_request` checks every argument of a compression (nan, inf, zero budgets, step
counts); :func:`check_floor` compares the latency asked for with the fastest student the space
can reach using only what the table already holds (a read-only estimate: it never measures and
never writes the table); :func:`check_output_space` finds a read-only or full disk before training
rather than after the first checkpoint. ``compress()`` and the CLI call them in this order before
they create a workdir, train a pool or measure anything.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ._io import check_writable
from .arch import Arch, DetectorSpec, Stage
from .errors import LatencyTableError, SearchError
from .latency import Estimator, LatencyTable
from .space import SearchSpace
from .student import Student

__all__ = [
    "Request",
    "parse_budget",
    "validate_request",
    "smallest_arch",
    "cheapest",
    "check_floor",
    "floor_error",
    "checkpoint_bytes",
    "check_output_space",
    "warn_search_disk",
    "TEACHER_SOURCES",
]

log = logging.getLogger(__name__)

#: Where ``compress``'s teachers come from, by name; any other ``teacher`` must be a detector file.
TEACHER_SOURCES = ("pool", "base", "none")

#: An interpolated floor may be off by this fraction: only a target clearly below it is refused early.
FLOOR_TOLERANCE = 0.10


@dataclass(frozen=True)
class Request:
    """A validated compression request: the budget as candidates or seconds, and the latency asked
    for as a ratio of the base (``ratio``) or milliseconds (``ms``), exactly one of them set."""

    candidates: int | None
    wall_s: float | None
    ratio: float | None
    ms: float | None


def _finite_positive(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:
        return False


def parse_budget(budget: int | str) -> tuple[int | None, float | None]:
    """``12`` (candidates) or ``"90s"``, ``"30m"``, ``"2h"`` (wall time) -> (candidates, seconds);
    zero, negative, non-numeric and overflowing budgets raise :class:`SearchError`."""
    if isinstance(budget, int) and not isinstance(budget, bool):
        if not 1 <= budget <= 10**9:
            raise SearchError(f"a budget of {budget} candidates is out of range; give 1 or more (up to 10^9)")
        return budget, None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh])\s*", str(budget)) if isinstance(budget, str) else None
    if not match:
        raise SearchError(f"budget must be a number of candidates (12) or a wall time (90s, 30m, 2h), got {budget!r}")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not 1.0 <= seconds <= 365 * 86400:
        raise SearchError(f"a wall-time budget of {budget!r} is out of range; give at least 1s (at most a year)")
    return None, seconds


#: the latency asked for when neither a ratio nor a bound is given: twice as fast as the base
DEFAULT_LATENCY = 0.5


def validate_request(
    *,
    latency: float | None,
    ms: float | None,
    budget: int | str,
    method: str = "joint",
    teacher: str | os.PathLike[str] = "pool",
    finetune_steps: int = 50,
    final_steps: int = 200,
    pool_steps: int = 100,
    seed: int = 0,
) -> Request:
    """Check every argument of a compression before any work; a :class:`SearchError` names the bad
    one and its fix. ``latency`` (a ratio of the base; 0.5 when neither is given) or ``ms``, not both."""
    if ms is not None and latency is not None:  # one was silently dropped
        raise SearchError(f"give latency (a ratio of the base, got {latency!r}) or ms (a bound, got {ms!r}), not both")
    if ms is None and latency is None:
        latency = DEFAULT_LATENCY
    if ms is not None:
        if not _finite_positive(ms):
            raise SearchError(f"ms must be a finite number of milliseconds > 0, got {ms!r}")
    elif latency is None or not _finite_positive(latency):
        raise SearchError(
            f"latency must be a finite ratio of the base's latency > 0 (0.5: twice as fast), got {latency!r}; "
            "or give ms=MILLISECONDS"
        )
    elif latency >= 1:
        raise SearchError(
            f"latency is a ratio of the base's latency and must be below 1 (0.5: twice as fast), got {latency!r}: "
            "the base itself already meets a ratio of 1 or more; ask for a faster student, e.g. latency=0.8"
        )
    if method not in ("joint", "pipeline"):
        raise SearchError(f"method must be 'joint' or 'pipeline', got {method!r}")
    if teacher not in TEACHER_SOURCES and not (isinstance(teacher, (str, os.PathLike)) and Path(teacher).is_file()):
        raise SearchError(
            f"teacher must be 'pool', 'base', 'none' or a detector file that exists (your own stronger model, "
            f"same family and classes), got {teacher!r}"
        )
    for name, value, least in (
        ("finetune_steps", finetune_steps, 1),
        ("final_steps", final_steps, 0),
        ("pool_steps", pool_steps, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= 10**8:
            raise SearchError(f"{name} must be an integer from {least} to 10^8, got {value!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise SearchError(f"seed must be an integer from 0 to 2^63 - 1, got {seed!r}")
    candidates, wall_s = parse_budget(budget)
    if method == "pipeline" and wall_s is not None:  # it spent a 10,000-candidate budget in steps instead
        raise SearchError(
            f"the pipeline baseline spends its budget in fine-tuning steps (candidates x finetune_steps), not wall "
            f"time; give budget as a number of candidates for method='pipeline', got {budget!r}"
        )
    return Request(
        candidates=candidates,
        wall_s=wall_s,
        ratio=None if ms is not None else float(latency),  # type: ignore[arg-type]
        ms=None if ms is None else float(ms),
    )


def smallest_arch(space: SearchSpace) -> Arch:
    """The cheapest architecture of the space: fewest blocks, narrowest widths."""
    base = space.base
    stages = tuple(
        Stage(space.stage_widths(s)[0], (space.mid_widths(s)[0],) * space.depth_range(s)[0]) for s in range(1, 5)
    )
    stem = stages[0].width if space.tied_stem else base.stem
    return Arch(block=base.block, stem=stem, stages=stages, groups=base.groups)


def cheapest(space: SearchSpace) -> Arch | Student:
    """The student the latency floor is read from: the whole detector's cheapest where ``space`` has a
    head grid, else the narrowest backbone (:func:`smallest_arch`)."""
    return space.smallest() if space.head_values() else smallest_arch(space)


def check_floor(
    table: LatencyTable, spec: DetectorSpec, base: Arch, space: SearchSpace, size: tuple[int, int], request: Request
) -> float | None:
    """Refuse (:class:`SearchError`) a latency below the fastest student of ``space``, estimated
    from what ``table`` holds (interpolated or modelled misses: nothing is measured, the table is
    not written). Returns the target in ms, or ``None`` where the table holds too little to
    estimate (a new machine's empty table): the search then measures as it goes."""
    on_miss = "model" if table.modelled else "interpolate"
    estimator = Estimator(table, spec, size, on_miss=on_miss, save=False)
    entries = len(table.entries)
    try:
        base_ms = estimator.total_ms(base)
        floor = estimator.total_ms(cheapest(space))
    except LatencyTableError as exc:
        log.info("the latency floor cannot be checked before measuring (%s); the search measures as it goes", exc)
        return None
    finally:
        assert len(table.entries) == entries, "a read-only estimate wrote into the table"
    target_ms = request.ms if request.ms is not None else base_ms * float(request.ratio or 0)
    exact = not estimator.misses
    if target_ms < floor * (1.0 if exact else 1.0 - FLOOR_TOLERANCE):
        how = "" if exact else f" (estimated from the {entries} entries the table has, +-{FLOOR_TOLERANCE:.0%})"
        raise floor_error(target_ms, floor, base_ms, table.target, how=how)
    return target_ms


def floor_error(target_ms: float, floor_ms: float, base_ms: float, target: str, *, how: str = "") -> SearchError:
    """The refusal of a latency below the space's cheapest student, naming the least latency it can ask for
    (rounded up, so that asking for exactly that is accepted)."""
    least_ratio, least_ms = (math.ceil(x * 100) / 100 for x in (floor_ms / base_ms, floor_ms))
    return SearchError(
        f"{target_ms:.2f} ms is below anything the search space reaches on {target}: its smallest student runs in "
        f"{floor_ms:.2f} ms{how}, the base in {base_ms:.2f} ms; what the space does not change (pre- and "
        f"post-processing) is a floor. Ask for latency >= {least_ratio:.2f} (ms >= {least_ms:.2f}), or a "
        "space that reaches further (`jdnas latency --model FILE --target T --floor` names its cheapest student)"
    )


def checkpoint_bytes(model: nn.Module, *, copies: int = 3) -> int:
    """Roughly what a training checkpoint of ``model`` takes: weights plus optimiser state
    (``copies`` tensors per parameter: weights, AdamW's two moments), and one written beside."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return 2 * (copies * params + buffers) + 2**20


def check_output_space(
    folder: str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    what: str = "output",
    need_bytes: int | None = None,
) -> Path:
    """Before training: ``folder`` is writable (a probe file, not mode bits) and its disk has room
    for a checkpoint of ``model`` (or ``need_bytes``); otherwise one :class:`~jdnas_sdk.errors.StorageError`
    line saying disk full or read-only, and where."""
    need = need_bytes if need_bytes is not None else (checkpoint_bytes(model) if model is not None else 0)
    return check_writable(folder, need_bytes=need, what=what)


def warn_search_disk(
    folder: str | os.PathLike[str], model: nn.Module, *, files: int | None, parallel: int = 1
) -> int | None:
    """Warn (log) where ``folder``'s disk has less room than a compression run keeps: ``files``
    detector files the size of ``model`` in the search (:func:`~jdnas_sdk.search.files.candidate_files`;
    the size is an upper bound, as students are smaller), then the final student, the control and a
    sampled teacher, and ``parallel`` training checkpoints at a time. Not an error: the bound may
    overstate, and a run that meets a full disk stops with a :class:`~jdnas_sdk.errors.StorageError`
    and resumes once room is made. ``files=None`` (a wall-time budget, whose candidates are not known
    before the search): how many candidate files the free space holds is logged instead. Returns the
    bytes counted (``None`` without ``files``)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    after = 3 * weights + parallel * checkpoint_bytes(model)
    free = shutil.disk_usage(folder).free
    if files is None:
        log.info(
            "the workdir's disk (%s) has room for about %d candidate files of up to %.0f MiB each (%.1f GiB free); "
            "a search keeps every candidate's file in search/candidates/",
            folder,
            max(0, free - after) // max(1, weights),
            weights / 2**20,
            free / 2**30,
        )
        return None
    need = files * weights + after
    if free < need:
        log.warning(
            "the search may fill the disk of %s: it keeps up to %d detector files of up to %.0f MiB each (every "
            "candidate's, in search/candidates/) and its checkpoints, about %.1f GiB in all, and %.1f GiB are free; "
            "it stops when the disk is full and resumes once room is made (or give a workdir on a larger disk)",
            folder,
            files + 3,
            weights / 2**20,
            need / 2**30,
            free / 2**30,
        )
    return need
