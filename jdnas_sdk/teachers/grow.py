"""A teacher stronger than the base: the pool's largest network trained until ``select`` stops improving.

Progressive shrinking trains every teacher of the pool at once, and the largest pays for it: on
the benchmark Faster R-CNN (``benchmarks/results/teacher_pool.md``, an earlier stop, not held out)
the largest teacher scored 42.9 AP after shrinking against the 47.8 of the base it grew from, so
the pool never held a teacher worth learning from. :func:`grow_teacher` trains the largest
network alone first, from the base's weights (grown without changing its function, so it starts
at the base's accuracy, measured and counted as step 0: training that never beats it keeps the
starting weights), until its ``select`` AP stops improving
(:func:`~jdnas_sdk.converge.train_until_converged`), optionally cooled down (a decayed rate from
the best weights, kept only if ``select`` gains: a converged base has usually had its rate
decayed, so training on at a constant rate loses accuracy before it finds more), and freezes the
best weights as a detector file of their own. The elastic phases then start from those weights,
and the frozen file, not the largest slice as shrinking leaves it, is what a student gets when the
largest teacher is chosen.
Whether it beat the base on ``select`` is recorded beside it and said in the log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..converge import ConvergeConfig, train_until_converged
from ..train import TrainConfig
from .pool import TeacherPool

__all__ = ["GrownTeacher", "grow_teacher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrownTeacher:
    """The frozen largest teacher: its file, its best ``select`` AP and the base's, the step of
    the best weights, the steps trained, and whether training stopped by patience."""

    file: str
    select_ap: float
    base_select_ap: float
    best_step: int
    steps: int
    converged: bool

    @property
    def stronger(self) -> bool:
        """Whether the grown teacher beats the base on ``select``."""
        return self.select_ap > self.base_select_ap

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "stronger": self.stronger}


def grow_teacher(
    pool: TeacherPool,
    train_data: Any,
    select_data: Any,
    out: str | os.PathLike[str],
    *,
    base_select_ap: float,
    config: TrainConfig | None = None,
    converge: ConvergeConfig | None = None,
    progress: bool = True,
) -> GrownTeacher:
    """Train ``pool.model`` (the largest network) in place until its AP on ``select_data`` stops
    improving; ``pool.model`` holds the best weights on return and ``out`` is their frozen copy, a
    plain detector file. Killed, the same call resumes; done before, it reads ``out`` back."""
    config = config or TrainConfig(optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_steps=10)
    # patience alone: a grown network dips below its start and climbs back, a rise that is no base still learning
    converge = converge or ConvergeConfig(eval_every=50, patience=3, max_steps=600, trend_window=0)
    result = train_until_converged(
        pool.model,
        train_data,
        select_data,
        out,
        config=config,
        converge=converge,
        metadata={"teacher": str(pool.largest()), "role": "grown teacher", "base_select_ap": base_select_ap},
        progress=progress,
        keep_start=True,
    )
    grown = GrownTeacher(
        file=str(Path(out)),
        select_ap=result.best_ap,
        base_select_ap=base_select_ap,
        best_step=result.best_step,
        steps=result.steps,
        converged=result.converged,
    )
    log.info(
        "[teachers] the largest teacher %s: select AP %.1f after %d steps (best at %d), the base %.1f: %s",
        pool.largest(),
        100 * grown.select_ap,
        grown.steps,
        grown.best_step,
        100 * base_select_ap,
        "stronger than the base" if grown.stronger else "NOT stronger than the base",
    )
    return grown
