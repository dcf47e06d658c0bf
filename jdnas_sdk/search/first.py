"""Candidate 0 of a joint search: the base, saved, scored on ``select`` and estimated, with the
teacher its children start from. Kept apart from :mod:`.joint`, whose loop reads on without it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..arch import Arch
from ..detectors import save_detector
from ..evaluate import evaluate
from ..teachers import TeacherPool
from .archive import Archive
from .rounds import Slot, outcome_here, record, relative, say

__all__ = ["first_teacher", "record_base"]


def first_teacher(pool: TeacherPool | None, base_teacher: bool, teacher_file: str | Path | None) -> str | None:
    """The teacher the base's children start from: the pool's largest, the base, the user's own
    (``"given"``) or none."""
    if pool is not None:
        return str(pool.largest())
    if base_teacher:
        return "base"
    return "given" if teacher_file is not None else None


def record_base(
    archive: Archive,
    base: nn.Module,
    base_arch: Arch,
    base_ms: float,
    work: Path,
    val_data: Any,
    teacher: str | None,
    candidates: int,
    log: Callable[[str], None],
) -> None:
    """Candidate 0 on a new archive: the base, saved and evaluated, its latency estimated, with the
    teacher its children start from (:func:`first_teacher`); on a resumed archive, a line saying
    where the search of ``candidates`` goes on."""
    if not archive.candidates:
        t0 = time.time()
        base_file = work / "candidates" / "000.pt"
        save_detector(base, base_file)
        metrics = evaluate(base, val_data, progress=False)
        record(
            archive,
            Slot(
                index=0,
                arch=str(base_arch),
                parent=None,
                actions=(),
                teacher=teacher,
                latency_ms=base_ms,
                file=relative(base_file, work),
            ),
            outcome_here(0, metrics, t0),
            label="search",
            note=" (base, estimated)",
            log=log,
        )
    elif len(archive.candidates) > 1:
        say(
            log,
            f"[search] resuming: {len(archive.candidates) - 1} candidates already on disk, "
            f"{sum(not c.free for c in archive.candidates[1:])} of the {candidates} trained ones",
        )
