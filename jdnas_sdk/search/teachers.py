"""Teachers of the pool as detector files, so any worker can load the one its candidate learns from.

The driver samples a teacher from the elastic pool (BatchNorm recalibrated on the training data)
and writes it once, atomically, as ``teachers/<hash of its code>.pt`` in the search's workdir,
before the first job that needs it is handed out. Files no slot of the round needs are removed,
so the workdir holds the teachers of one round at most.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..arch import Arch
from ..cost import detector_cost
from ..detectors import save_detector
from ..student import Student
from ..teachers import TeacherConfig, TeacherPool
from .rounds import Slot

__all__ = ["TeacherFiles", "gap_teacher"]


class TeacherFiles:
    """Teacher files under ``folder`` for the teachers of ``pool`` (calibrated on ``calibration``)."""

    def __init__(self, folder: Path, pool: TeacherPool | None, calibration: Any) -> None:
        self.folder, self.pool, self.calibration = Path(folder), pool, calibration

    def path(self, code: str) -> Path:
        """Where the teacher of config ``code`` is written."""
        return self.folder / f"{hashlib.sha1(code.encode()).hexdigest()[:16]}.pt"

    def prepare(self, slot: Slot) -> None:
        """Write the teacher of ``slot`` if it comes from the pool and is not on disk yet."""
        if self.pool is None or slot.teacher is None or slot.job is None or slot.job.teacher_file is None:
            return
        path = Path(slot.job.teacher_file)
        if path.parent != self.folder or path.is_file():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        teacher = self.pool.sample(TeacherConfig.parse(slot.teacher), calibration=self.calibration)
        save_detector(teacher, path, metadata={"teacher": slot.teacher})

    def keep(self, codes: Iterable[str | None]) -> None:
        """Remove the teacher files other than those of ``codes``."""
        wanted = {self.path(c) for c in codes if c is not None}
        if self.folder.is_dir():
            for file in self.folder.glob("*.pt"):
                if file not in wanted:
                    file.unlink(missing_ok=True)


def gap_teacher(
    pool: TeacherPool, student: Arch | Student, gap: float, rng: random.Random, *, samples: int = 16
) -> TeacherConfig:
    """Dynamic distillation by the capacity gap: of the pool's largest teacher, the base's own
    configuration and ``samples`` random ones, the teacher whose backbone and FPN compute (MACs;
    the heads are the same in every teacher) is closest to ``gap`` times the student's (on a log
    scale). A teacher far larger than its student teaches it
    less than a moderately larger one (Mirzadeh et al. 2020, "teacher assistant"), and what a student
    can absorb changes as the search shrinks it, so each candidate gets its own. A whole student
    (detector-level space) counts with its own FPN width and input size."""

    def macs(arch: Arch, spec: Any = pool.spec) -> float:
        return float(sum(v for part, v in detector_cost(spec, arch).macs.items() if part != "heads"))

    want = gap * (macs(student.arch, student.spec(pool.spec)) if isinstance(student, Student) else macs(student))
    options = [pool.largest(), pool.base_config(), *(pool.random(rng) for _ in range(samples))]
    return min(options, key=lambda c: abs(math.log(macs(pool.arch_of(c)) / want)))
