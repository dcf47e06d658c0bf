"""What both searches share: a round of candidates run through an executor, and recording them.

A round is a list of :class:`Slot` s, decided by the search from the archive as it stood at the
round's start. :func:`run_round` hands the slots not yet done to the executor, and adds outcomes
to the archive in slot order as soon as every earlier slot is in, so the archive is the same
whichever worker finished first. Slots whose result is already on disk (the driver was killed
after a worker finished) are recorded without being redone. :func:`record` is the one place a
:class:`Candidate` is made from a slot and an outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import SearchError
from ..evaluate import EvalResult
from .archive import Archive, Candidate
from .executor import CandidateJob, CandidateOutcome, Executor, LocalExecutor, finished, worker_id
from .ray_executor import RayExecutor

__all__ = ["Slot", "make_executor", "record", "run_round", "rounds_spent_s", "say", "outcome_here", "relative"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """One candidate as the search decided it: what the archive will say besides the outcome,
    and the ``job`` that trains it (None for a candidate evaluated by the driver, the base)."""

    index: int
    arch: str
    parent: int | None
    actions: tuple[str, ...]
    teacher: str | None
    latency_ms: float
    file: str
    bound_ms: float | None = None
    rejected: int = 0
    job: CandidateJob | None = None
    free: bool = False


def say(log: Callable[[str], None] | None, message: str) -> None:
    """``log(message)`` when the caller gave a ``log``, else the module's logger at INFO."""
    if log is not None:
        log(message)
    else:
        logger.info("%s", message)


def outcome_here(index: int, metrics: EvalResult, started: float) -> CandidateOutcome:
    """The outcome of a candidate the driver evaluated itself (the base)."""
    return CandidateOutcome(
        index, metrics.ap, metrics.ap50, metrics.ap75, worker=worker_id(), started=started, ended=time.time()
    )


def record(
    archive: Archive,
    slot: Slot,
    outcome: CandidateOutcome,
    *,
    label: str,
    total: int | None = None,
    note: str = "",
    log: Callable[[str], None] | None = None,
) -> Candidate:
    """Add the candidate of ``slot`` with its ``outcome`` to ``archive`` (built by keyword) and log
    it as ``[label] index/total: ...`` followed by ``note``."""
    if outcome.index != slot.index:
        raise SearchError(f"outcome of candidate {outcome.index} given for slot {slot.index}")
    candidate = Candidate(
        index=slot.index,
        arch=slot.arch,
        parent=slot.parent,
        actions=slot.actions,
        teacher=slot.teacher,
        latency_ms=slot.latency_ms,
        ap=outcome.ap,
        ap50=outcome.ap50,
        ap75=outcome.ap75,
        file=slot.file,
        bound_ms=slot.bound_ms,
        wall_s=max(0.0, outcome.ended - outcome.started),
        rejected=slot.rejected,
        error=outcome.error,
        worker=outcome.worker or None,
        started=outcome.started or None,
        ended=outcome.ended or None,
        free=slot.free,
    )
    archive.add(candidate)
    where = f"{slot.index}/{total}" if total else str(slot.index)
    bound = f" (bound {slot.bound_ms:.2f})" if slot.bound_ms is not None and slot.parent is not None else ""
    result = f"FAILED ({outcome.error})" if outcome.error else f"AP {100 * outcome.ap:.1f}"
    lineage = "" if slot.parent is None else f", parent {slot.parent}, teacher {slot.teacher}"
    worker = f" on {outcome.worker}" if outcome.worker and slot.job is not None else ""
    say(log, f"[{label}] {where}: {slot.latency_ms:.2f} ms{bound}, {result}{lineage}{note}{worker}")
    return candidate


def run_round(
    archive: Archive,
    slots: Sequence[Slot],
    executor: Executor,
    *,
    label: str,
    desc: str,
    total: int | None = None,
    prepare: Callable[[Slot], None] | None = None,
    note: Callable[[Slot], str] = lambda _: "",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> None:
    """Train the ``slots`` not yet in ``archive`` through ``executor`` and record all of them in slot
    order. Each slot already in the archive must be the same candidate (same arch and parent).
    ``note(slot)`` ends its log line. ``prepare(slot)`` runs in this process before a slot's job is handed out (e.g.
    writes its
    teacher's file); a slot whose result is already on disk is recorded without running."""
    outcomes: dict[int, CandidateOutcome] = {}
    todo: list[Slot] = []
    for slot in slots:
        if slot.index < len(archive.candidates):
            have = archive.candidates[slot.index]
            if (have.arch, have.parent) != (slot.arch, slot.parent):
                raise SearchError(
                    f"candidate {slot.index} in {archive.path} ({have.arch}, parent {have.parent}) is not "
                    f"what this search proposes ({slot.arch}, parent {slot.parent}); resume with the "
                    "same options and code, or use another workdir"
                )
            continue
        if slot.job is None:
            raise SearchError(f"slot {slot.index} has no job to run")
        done = finished(slot.job)
        if done is not None:
            outcomes[slot.index] = done
        else:
            todo.append(slot)
    order = [s for s in slots if s.index >= len(archive.candidates)]

    def flush() -> None:
        while order and order[0].index in outcomes:
            slot = order.pop(0)
            record(archive, slot, outcomes.pop(slot.index), label=label, total=total, note=note(slot), log=log)

    flush()
    if not todo:
        return
    for slot in todo:
        if prepare is not None:
            prepare(slot)
    capacity = max(1, int(getattr(executor, "capacity", 1)))
    bar = tqdm(total=len(todo), desc=desc, unit="cand", disable=not progress, dynamic_ncols=True, leave=False)
    failed = 0
    bar.set_postfix_str(f"in flight {min(capacity, len(todo))}, failed 0")
    try:
        for outcome in executor.run([s.job for s in todo if s.job is not None]):
            outcomes[outcome.index] = outcome
            failed += outcome.error is not None
            bar.update(1)
            bar.set_postfix_str(f"in flight {min(capacity, len(todo) - bar.n)}, failed {failed}")
            flush()
    finally:
        bar.close()
    if order:
        raise SearchError(f"the executor returned no outcome for candidates {[s.index for s in order]}")


def relative(path: str | Path, work: Path) -> str:
    """``path`` relative to the search's ``work`` dir, as the archive stores files."""
    return str(Path(path).relative_to(work))


def make_executor(executor: str | Executor, **options: Any) -> Executor:
    """``"local"``, ``"ray"`` (with ``options`` for :class:`RayExecutor`) or an executor object."""
    if isinstance(executor, str):
        if executor == "local":
            return LocalExecutor(**options)
        if executor == "ray":
            return RayExecutor(**options)  # imports Ray: a SearchError saying how to install it if missing
        raise SearchError(f"executor must be 'local' or 'ray', got {executor!r}")
    if not all(hasattr(executor, m) for m in ("start", "run", "close")):
        raise SearchError(f"{executor!r} is not an executor (it needs start, run and close)")
    return executor


def rounds_spent_s(candidates: list[Candidate], parallel: int, *, first: int = 1) -> float:
    """Wall time the rounds of ``candidates`` took (each round from its first start to its last end),
    so a resumed search counts what it spent before the kill but not the time it lay dead. Rounds
    start at candidate ``first``; candidates before it (the free moves) count their own wall time."""
    spent = sum(c.wall_s for c in candidates[1:first])
    for start in range(first, len(candidates), parallel):
        rnd = candidates[start : start + parallel]
        timed = [c for c in rnd if c.started is not None and c.ended is not None]
        spent += (max(c.ended for c in timed) - min(c.started for c in timed)) if timed else sum(c.wall_s for c in rnd)
    return spent
