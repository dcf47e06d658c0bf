"""``finetune``: train a student for a few steps, with distillation from a teacher when given.

It is the foundation's training loop (checkpoints, exact resume, progress, non-finite checks)
with a :class:`~jdnas_sdk.distill.losses.Distiller` in its ``extra_losses`` hook.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from torch import nn

from ..errors import TrainingError
from ..train import TrainConfig, TrainResult, train, train_to_file
from .losses import Distiller, KDConfig

__all__ = ["finetune", "FINETUNE_DEFAULTS"]

#: Fine-tuning defaults: AdamW at a modest rate, a short warm-up, cosine decay.
FINETUNE_DEFAULTS = TrainConfig(optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_steps=10)


def finetune(
    student: nn.Module,
    *,
    data: Any,
    steps: int,
    teacher: nn.Module | None = None,
    kd: KDConfig | None = None,
    config: TrainConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Fine-tune ``student`` in place for ``steps`` steps on ``data``; with ``teacher``, add the KD
    terms of ``kd`` (feature imitation on every FPN level and class-score distillation).

    With ``out``, the student is saved there as a detector file (with ``metadata``) as
    :func:`~jdnas_sdk.train.train_to_file` does: checkpointed beside it, the checkpoint removed
    only once the file is written. Otherwise ``checkpoint`` (if given) is kept for the caller.

    Frozen BatchNorm is not converted here: pass a student from :func:`jdnas_sdk.detectors.thaw`
    to fine-tune its norms. The teacher is put in eval mode and never receives gradients.
    ``stop_after`` (with ``checkpoint``): train only the first that many steps of the ``steps``-long
    schedule; the same call without it resumes from the checkpoint and finishes the schedule.
    """
    if steps < 1:
        raise TrainingError(f"steps must be >= 1, got {steps}")
    base = config or FINETUNE_DEFAULTS
    cfg = replace(base, steps=steps, warmup_steps=min(base.warmup_steps, max(steps // 5, 0)))
    distiller = Distiller(student, teacher, kd, steps=cfg.steps) if teacher is not None else None
    if out is not None and checkpoint is not None:
        raise TrainingError("give checkpoint or out, not both: with out the checkpoint sits beside it")
    if out is not None and stop_after is not None:
        raise TrainingError("stop_after leaves a schedule unfinished: give a checkpoint, not out (a finished file)")
    try:
        if out is not None:
            return train_to_file(
                student, data, out, config=cfg, metadata=metadata, extra_losses=distiller, progress=progress
            )
        return train(
            student,
            data,
            config=cfg,
            checkpoint=checkpoint,
            extra_losses=distiller,
            progress=progress,
            stop_after=stop_after,
        )
    finally:
        if distiller is not None:
            distiller.detach()
