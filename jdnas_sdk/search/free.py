"""Free moves: the students that differ from the base only in settings that change no weight.

Fewer R-CNN proposals (or one-stage boxes before NMS) at test time and another input size change what a
detector computes but not one of its weights, so such a student is scored as it is: no training, no
teacher, one evaluation. The joint search scores every one of them that is faster than the base before
any candidate that needs training (``SearchConfig.free_moves``): candidates 1..F of the archive, jobs of
0 steps, in a fixed order, so a resumed search finds them in place. They can then be parents like any
other.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..latency import ConfirmedLatency, Estimator
from ..morph import SetHead
from ..space import SearchSpace
from ..student import Student
from .archive import Candidate
from .executor import CandidateJob
from .moves import apply_move, as_searched, search_latency, set_head
from .rounds import Slot, relative

__all__ = ["FREE_KNOBS", "free_students", "free_slots"]

#: Head settings a student changes without changing a weight: the proposals an R-CNN keeps at test time,
#: the input size and the boxes a one-stage detector keeps per level before NMS. A student that differs
#: from its parent only in these needs no training to be scored, so the joint search scores all of them
#: before any move that needs training (:func:`free_students`). On small inputs they are where the time
#: is: at 256 px on a CPU, 1,000 proposals are about 60% of a Faster R-CNN R18's latency.
FREE_KNOBS: tuple[str, ...] = ("proposals", "size", "topk")


def free_students(parent: Student, space: SearchSpace) -> list[tuple[tuple[SetHead, ...], Student]]:
    """Every student of ``space`` that differs from ``parent`` only in settings of
    :data:`FREE_KNOBS` (each combination of their grid values, ``parent`` itself left out), with the
    moves that lead to it, in a fixed order (the grids' order). Empty without a head grid."""
    if parent.heads is None:
        return []
    values = {k: v for k, v in space.head_values().items() if k in FREE_KNOBS}
    choice = space.heads_of(parent.heads)
    combos: list[dict[str, int]] = [{}]
    for knob, grid in values.items():
        combos = [{**c, knob: v} for c in combos for v in grid]
    out = []
    for combo in combos:
        actions = tuple(set_head(space, k, v) for k, v in combo.items() if v != choice[k])
        if actions:
            student = parent
            for action in actions:
                student = apply_move(student, action)
            out.append((actions, student))
    return out


class _Search(Protocol):
    """What :func:`free_slots` reads of a joint search's state."""

    work: Any
    base_ms: float
    space: SearchSpace
    estimator: Estimator
    config: Any
    confirmed: ConfirmedLatency | None


def free_slots(base: Candidate, search: _Search) -> list[Slot]:
    """Candidates 1..F of ``search``: ``base``'s free students (:func:`free_students`) that the
    table (or, on a measured table, a confirmation) puts below the base's latency, each a job of 0
    steps: scored as it is, no teacher. Empty unless ``search.config.free_moves``."""
    if not search.config.free_moves:
        return []
    parent = as_searched(base.arch, search.space)
    if not isinstance(parent, Student):
        return []
    guess, confirm = search_latency(search.estimator, search.confirmed)
    slots: list[Slot] = []
    for actions, student in free_students(parent, search.space):
        ms = (confirm or guess)(student)
        if ms >= search.base_ms:
            continue
        index = len(slots) + 1
        out = search.work / "candidates" / f"{index:03d}.pt"
        job = CandidateJob(
            index=index,
            parent_file=str(search.work / base.file),
            out_file=str(out),
            steps=0,
            train=search.config.train,
            kd=search.config.kd,
            actions=actions,
            metadata={"candidate": index, "parent": 0, "free": True},
        )
        slots.append(
            Slot(
                index=index,
                arch=str(student),
                parent=0,
                actions=tuple(str(a) for a in actions),
                teacher=base.teacher,
                latency_ms=ms,
                file=relative(out, search.work),
                bound_ms=search.base_ms,
                job=job,
                free=True,
            )
        )
    return slots
