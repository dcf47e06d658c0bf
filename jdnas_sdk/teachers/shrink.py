"""Integrated progressive shrinking: train every teacher of a pool at once, largest first.

Phase 1 trains the largest network alone. Phase 2 admits smaller depths, phase 3 smaller widths
too. From phase 2 on, each step is a *sandwich*: the largest, the smallest admitted and one
random admitted teacher each see the batch; the smaller ones also imitate the largest's FPN
features (in-place distillation); their gradients are added into the pool's weights at the
slices they use, and one optimiser step updates the pool. Checkpoints are written atomically and
every random draw is seeded by (seed, step), so a killed run resumes exactly where it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from .._io import atomic_torch_save, first_line, torch_load
from ..checkpoint import restore
from ..data.loader import ResumableSampler, collate
from ..distill.losses import feature_kd
from ..errors import NonFiniteLossError, TrainingError
from ..train import (
    TrainConfig,
    TrainResult,
    augment,
    check_targets,
    checkpoint_identity,
    checkpoint_path,
    learning_rate,
    make_optimizer,
    remove_training_files,
    sittings_metadata,
    step_seed,
    training_stopwatch,
)
from .pool import TeacherConfig, TeacherPool

__all__ = ["ShrinkConfig", "train_pool", "train_pool_to_file", "phase_of"]

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "jdnas-pool-checkpoint"


@dataclass(frozen=True)
class ShrinkConfig:
    """Progressive shrinking: ``phases`` are the fractions of ``train.steps`` spent on the largest
    alone, then with elastic depth, then with elastic depth and width; ``inplace_kd`` weighs the
    smaller teachers' imitation of the largest's features."""

    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_steps=10)
    )
    phases: tuple[float, float, float] = (0.2, 0.3, 0.5)
    inplace_kd: float = 1.0

    def __post_init__(self) -> None:
        if len(self.phases) != 3 or any(p < 0 for p in self.phases) or not math.isclose(sum(self.phases), 1.0):
            raise TrainingError(f"phases must be 3 non-negative fractions summing to 1, got {self.phases}")
        if not (math.isfinite(self.inplace_kd) and self.inplace_kd >= 0):  # NaN would turn in-place KD off
            raise TrainingError(f"inplace_kd must be a finite number >= 0, got {self.inplace_kd}")


def phase_of(config: ShrinkConfig, step: int) -> int:
    """0: largest only; 1: + elastic depth; 2: + elastic width."""
    first = config.phases[0] * config.train.steps
    second = first + config.phases[1] * config.train.steps
    return 0 if step < first else 1 if step < second else 2


def _sandwich(pool: TeacherPool, phase: int, rng: random.Random) -> list[TeacherConfig]:
    if phase == 0:
        return [pool.largest()]
    width = phase >= 2
    return [pool.largest(), pool.smallest(width=width), pool.random(rng, width=width)]


def _identity(pool: TeacherPool, config: ShrinkConfig) -> dict[str, Any]:
    train = checkpoint_identity(config.train)
    return {
        "spec": pool.spec.to_dict(),
        "base": str(pool.base_arch),
        "widths": list(pool.widths),
        "depth_delta": pool.depth_delta,
        "train": train,
        "phases": list(config.phases),
        "inplace_kd": config.inplace_kd,
    }


def train_pool(
    pool: TeacherPool,
    data: Any,
    *,
    config: ShrinkConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``pool`` in place by integrated progressive shrinking (see the module docstring)."""
    config = config or ShrinkConfig()
    tc = config.train
    if len(data) == 0:
        raise TrainingError("the training dataset is empty; give it at least one image")
    check_targets(pool.model, data)
    model = pool.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(tc, params)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    start, history = 0, list[tuple[int, float]]()
    if ckpt is not None and ckpt.exists():
        start, history = _load(ckpt, pool, optimizer, config)
        log.info("resuming pool training from %s at step %d of %d", ckpt, start, tc.steps)
    sampler = ResumableSampler(data, seed=tc.seed, start=start * tc.batch_size)
    batches = iter(
        DataLoader(data, batch_size=tc.batch_size, sampler=sampler, collate_fn=collate, num_workers=tc.num_workers)
    )
    features: dict[str, Any] = {}
    model.train()
    began = time.perf_counter()
    bar = tqdm(
        total=tc.steps, initial=start, desc="teacher pool", unit="step", disable=not progress, dynamic_ncols=True
    )
    try:
        for step in range(start, tc.steps):
            images, targets = augment(*next(batches), tc, step)
            seed = step_seed(tc, step)
            lr = learning_rate(tc, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            phase = phase_of(config, step)
            total_value = 0.0
            for index, teacher in enumerate(_sandwich(pool, phase, random.Random(seed))):
                torch.manual_seed(seed)
                net = model if index == 0 else pool.extract(teacher)
                net.train()
                handle = net.backbone.register_forward_hook(lambda _m, _i, out: features.__setitem__("now", out))
                try:
                    losses = net(images, targets)
                finally:
                    handle.remove()
                if index == 0:
                    features["largest"] = {k: v.detach() for k, v in features["now"].items()}
                elif config.inplace_kd > 0:
                    keys = list(features["largest"])
                    losses["kd_inplace"] = config.inplace_kd * feature_kd(
                        [features["now"][k] for k in keys], [features["largest"][k] for k in keys]
                    )
                total: Tensor = sum(losses.values())  # type: ignore[assignment]
                if not torch.isfinite(total):
                    raise NonFiniteLossError(
                        f"teacher {teacher} loss became {total.item()} at step {step}; "
                        f"lower the learning rate (now {lr:.3g})"
                    )
                total.backward()
                if net is not model:
                    pool.accumulate_grads(net)
                total_value += float(total.item())
            torch.nn.utils.clip_grad_norm_(params, tc.clip_grad_norm)
            optimizer.step()
            history.append((step + 1, total_value))
            bar.update(1)
            bar.set_postfix(loss=f"{total_value:.3f}", phase=phase + 1, lr=f"{lr:.3g}")
            done = step + 1
            if ckpt is not None and (done % tc.checkpoint_every == 0 or done == tc.steps):
                _save(ckpt, pool, optimizer, config, done, history)
    finally:
        bar.close()
    return TrainResult(
        steps=tc.steps,
        resumed_from=start,
        wall_s=time.perf_counter() - began,
        final_loss=history[-1][1] if history else float("nan"),
        history=history,
    )


def train_pool_to_file(
    pool: TeacherPool,
    data: Any,
    out: str | os.PathLike[str],
    *,
    config: ShrinkConfig | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``pool`` and save it as the pool file ``out``, checkpointing beside it (the pool's
    :func:`~jdnas_sdk.train.train_to_file`): killed, the same call resumes from
    ``checkpoint_path(out)``, removed once the file is written. The metadata records steps, final
    loss, the wall time over every sitting and how many, and the step training resumed from, plus
    ``metadata`` (:func:`~jdnas_sdk.train.sittings_metadata`)."""
    with training_stopwatch(out) as watch:
        result = train_pool(pool, data, config=config, checkpoint=checkpoint_path(out), progress=progress)
    pool.save(out, metadata={"steps": result.steps, **sittings_metadata(result, watch), **(metadata or {})})
    remove_training_files(out)
    return replace(result, wall_s=watch.elapsed())


def _save(
    path: Path,
    pool: TeacherPool,
    optimizer: torch.optim.Optimizer,
    config: ShrinkConfig,
    step: int,
    history: list[tuple[int, float]],
) -> None:
    atomic_torch_save(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "step": step,
            "identity": _identity(pool, config),
            "model": pool.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": [list(h) for h in history],
        },
    )


def _load(
    path: Path, pool: TeacherPool, optimizer: torch.optim.Optimizer, config: ShrinkConfig
) -> tuple[int, list[tuple[int, float]]]:
    try:
        state = torch_load(path)  # checksums checked
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise TrainingError(
            f"pool checkpoint {path} cannot be read ({type(exc).__name__}: {first_line(exc)}); delete it to start over"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a teacher-pool checkpoint; delete it or choose another output")
    if state.get("identity") != _identity(pool, config):
        raise TrainingError(
            f"checkpoint {path} belongs to another pool or other training options; delete it to start over"
        )
    return restore(path, state, pool.model, optimizer)
