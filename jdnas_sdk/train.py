"""Training and fine-tuning of torchvision detectors, resumable after a kill.

One loop serves base training and, later, fine-tuning with distillation: ``extra_losses`` adds
terms (for example a KD loss) to the detector's own losses. The loop is SGD with a linear warm-up
and a cosine (or constant) decay, gradient clipping, and a non-finite-loss check. It writes a
checkpoint every ``checkpoint_every`` steps; calling it again with the same checkpoint path picks
up at the last checkpoint and, because every random draw is seeded by (seed, step), continues
exactly as an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ._stopwatch import Stopwatch
from .checkpoint import (
    checkpoint_identity,
    checkpoint_path,
    data_fingerprint,
    load_checkpoint,
    save_checkpoint,
    wall_path,
)
from .data.loader import ResumableSampler, collate, hflip
from .detectors import save_detector
from .errors import NonFiniteLossError, TrainingError

__all__ = [
    "TrainConfig",
    "TrainResult",
    "ExtraLosses",
    "train",
    "check_targets",
    "train_to_file",
    "sittings_metadata",
    "training_stopwatch",
    "remove_training_files",
    "checkpoint_path",
    "wall_path",
    "learning_rate",
    "make_optimizer",
    "augment",
    "step_seed",
    "checkpoint_identity",
    "data_fingerprint",
    "recalibrate_bn",
]

log = logging.getLogger(__name__)

#: ``extra_losses(model, images, targets, losses) -> {name: loss}``, added to the detector's losses.
#: When it is an ``nn.Module`` (a distiller with adapters), its parameters are trained with the
#: model's and its state is kept in the checkpoints.
ExtraLosses = Callable[
    [nn.Module, list[torch.Tensor], list[dict[str, torch.Tensor]], dict[str, torch.Tensor]], dict[str, torch.Tensor]
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``lr`` is the peak rate after ``warmup_steps`` of linear warm-up.

    ``optimizer`` is ``"sgd"`` (momentum SGD, the detection standard) or ``"adamw"`` (which wants
    a rate around 1e-3 and converges faster when training from scratch on little data).
    """

    steps: int = 300
    optimizer: str = "sgd"
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    schedule: str = "cosine"
    min_lr_ratio: float = 0.02
    clip_grad_norm: float = 10.0
    hflip: bool = True
    seed: int = 0
    checkpoint_every: int = 50
    num_workers: int = 0

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 0,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0 and math.isfinite(self.lr),
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "clip_grad_norm": self.clip_grad_norm > 0,
            "checkpoint_every": self.checkpoint_every >= 1,
            "num_workers": self.num_workers >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise TrainingError(f"invalid training options: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")
        if self.optimizer not in ("sgd", "adamw"):
            raise TrainingError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise TrainingError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    steps: int
    resumed_from: int
    wall_s: float
    final_loss: float
    history: list[tuple[int, float]] = field(default_factory=list)


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate used at ``step`` (0-based): linear warm-up, then cosine decay or constant."""
    if step < config.warmup_steps:
        return config.lr * (0.001 + 0.999 * step / config.warmup_steps)
    if config.schedule == "constant":
        return config.lr
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser ``config`` names, over ``params``."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def step_seed(config: TrainConfig, step: int) -> int:
    """The seed of every random draw at ``step``: what makes a resumed run continue exactly."""
    return config.seed * 1_000_003 + step


def augment(
    images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], config: TrainConfig, step: int
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The batch of ``step`` with ``config``'s augmentation (random horizontal flips, seeded by step)."""
    if not config.hflip:
        return images, targets
    flips = torch.rand(len(images), generator=torch.Generator().manual_seed(step_seed(config, step))) < 0.5
    pairs = [hflip(i, t) if f else (i, t) for i, t, f in zip(images, targets, flips.tolist())]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def check_targets(model: nn.Module, data: Any) -> None:
    """Refuse, before step 0, a dataset without the targets the model trains on: a Mask R-CNN on
    boxes alone (torchvision's "Every element of targets should have a masks key" from inside the
    forward pass otherwise); keypoints, which the SDK's loader does not read."""
    heads = getattr(model, "roi_heads", None)
    if heads is None:
        return
    if heads.has_mask() and getattr(data, "with_masks", True) is False:
        raise TrainingError(
            "this Mask R-CNN trains on masks, but the dataset was loaded without them: load it with "
            "load_split(root, split, with_masks=True) or load_protocol_splits(root, with_masks=True)"
        )
    if heads.has_keypoint() and getattr(data, "with_masks", None) is not None:  # this SDK's COCO loader
        raise TrainingError(
            "this Keypoint R-CNN trains on keypoints, which the SDK's COCO loader does not read: training, "
            "compress and teacher pools need them; train it elsewhere (jdnas eval, latency and export take it)"
        )


def train(
    model: nn.Module,
    data: Dataset[Any],
    *,
    config: TrainConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    extra_losses: ExtraLosses | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (a :class:`~jdnas_sdk.data.CocoDetection` or alike).

    With ``checkpoint`` set, state is saved there every ``config.checkpoint_every`` steps and at the
    end, and a later call with the same path resumes from it. Raises :class:`NonFiniteLossError`
    (leaving the last good checkpoint in place) when a loss becomes NaN or infinite.
    ``stop_after``: stop once that many steps of the schedule are done (the schedule is still
    ``config.steps`` long; the checkpoint, required, is saved there), so a later call resumes the
    same schedule where this one stopped.
    """
    config = config or TrainConfig()
    if stop_after is not None and (checkpoint is None or not 1 <= stop_after <= config.steps):
        raise TrainingError(
            f"stop_after must be within the schedule's 1..{config.steps} steps and needs a checkpoint to resume "
            f"from, got stop_after={stop_after}, checkpoint={checkpoint}"
        )
    end = config.steps if stop_after is None else stop_after
    if len(data) == 0:  # type: ignore[arg-type]
        raise TrainingError("the training dataset is empty; give it at least one image")
    check_targets(model, data)
    params = [p for p in model.parameters() if p.requires_grad]
    aux = extra_losses if isinstance(extra_losses, nn.Module) else None  # e.g. KD adapters: trained too
    if aux is not None:
        params += [p for p in aux.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters (all requires_grad=False)")
    optimizer = make_optimizer(config, params)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    start, history = 0, list[tuple[int, float]]()
    fingerprint = data_fingerprint(data) if ckpt is not None else None
    if ckpt is not None and ckpt.exists():
        start, history = load_checkpoint(ckpt, model, optimizer, config, aux, fingerprint)
        log.info("resuming from %s at step %d of %d", ckpt, start, config.steps)
    sampler = ResumableSampler(data, seed=config.seed, start=start * config.batch_size)
    loader = DataLoader(
        data, batch_size=config.batch_size, sampler=sampler, collate_fn=collate, num_workers=config.num_workers
    )
    model.train()
    began = time.perf_counter()
    smoothed = history[-1][1] if history else float("nan")
    bar = tqdm(total=end, initial=min(start, end), desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    batches = iter(loader)
    try:
        for step in range(start, end):
            images, targets = augment(*next(batches), config, step)
            torch.manual_seed(step_seed(config, step))
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = model(images, targets)
            if extra_losses is not None:
                losses = {**losses, **extra_losses(model, images, targets, losses)}
            total = sum(losses.values())
            if not torch.isfinite(total):
                parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                kept = (
                    f"the checkpoint {ckpt} is kept"
                    if ckpt is not None and ckpt.exists()
                    else "no checkpoint was written"
                )
                raise NonFiniteLossError(
                    f"loss became {total.item()} at step {step} ({parts}); {kept}. "
                    f"Lower the learning rate (now {lr:.4g}) or check the data for bad boxes."
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
            optimizer.step()
            value = float(total.item())
            history.append((step + 1, value))
            smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value
            bar.update(1)
            bar.set_postfix(loss=f"{smoothed:.3f}", lr=f"{lr:.3g}")
            done = step + 1
            if ckpt is not None and (done % config.checkpoint_every == 0 or done in (config.steps, end)):
                save_checkpoint(ckpt, model, optimizer, config, done, history, aux, fingerprint)
    finally:
        bar.close()
    wall = time.perf_counter() - began
    final = history[-1][1] if history else float("nan")
    return TrainResult(steps=max(start, end), resumed_from=start, wall_s=wall, final_loss=final, history=history)


def train_to_file(
    model: nn.Module,
    data: Dataset[Any],
    out: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    metadata: dict[str, Any] | None = None,
    extra_losses: ExtraLosses | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` and save it as the detector file ``out``, checkpointing beside it.

    Killed, the same call resumes from ``checkpoint_path(out)``; the checkpoint is removed once
    the detector file is written. The file's metadata records steps, final loss, the wall time over
    every sitting (``wall_path(out)`` keeps it while training) and how many, and the step training
    resumed from, plus ``metadata``; the result's ``wall_s`` is that total. ``extra_losses`` is
    :func:`train`'s.
    """
    config = config or TrainConfig()
    ckpt = checkpoint_path(out)
    with training_stopwatch(out) as watch:
        result = train(model, data, config=config, checkpoint=ckpt, extra_losses=extra_losses, progress=progress)
    save_detector(model, out, metadata={"steps": config.steps, **sittings_metadata(result, watch), **(metadata or {})})
    remove_training_files(out)
    return replace(result, wall_s=watch.elapsed())


@contextmanager
def training_stopwatch(out: str | os.PathLike[str]) -> Iterator[Stopwatch]:
    """The wall time of training the file ``out`` over its sittings (``wall_path(out)``): a time file
    beside an ``out`` that stands whole with no checkpoint is a finished training's, left by a kill
    between :func:`remove_training_files`' two removals, and is dropped, not counted."""
    if Path(out).is_file() and not checkpoint_path(out).exists():
        wall_path(out).unlink(missing_ok=True)
    with Stopwatch(wall_path(out)) as watch:
        yield watch


def sittings_metadata(result: TrainResult, watch: Stopwatch) -> dict[str, Any]:
    """The metadata a trained file records of its training: final loss, wall time over every sitting
    and how many, the step the last sitting resumed from."""
    return {
        "final_loss": result.final_loss,
        "train_wall_s": watch.elapsed(),
        "sittings": watch.total_sittings,
        "resumed_from": result.resumed_from,
    }


def remove_training_files(out: str | os.PathLike[str]) -> None:
    """Remove what training kept beside ``out`` once ``out`` is written: its checkpoint, then its
    wall-time file (killed between the two, ``out`` stands whole and the time file is left over:
    :func:`train_to_file` drops it when it trains ``out`` again from the start)."""
    checkpoint_path(out).unlink(missing_ok=True)
    wall_path(out).unlink(missing_ok=True)


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, data: Any, *, batches: int = 50, batch_size: int = 4, images: int | None = None
) -> int:
    """Re-estimate every BatchNorm's running statistics from scratch (cumulative average) on the
    first ``images`` images of ``data`` (default ``batches * batch_size``), weights untouched; the
    number of images used. Adaptive BatchNorm (EagleEye, Li et al. 2020): a morphed or sampled
    network's statistics no longer match its weights, and recalibrating them is what makes a short
    evaluation rank it fairly. Only the backbone (with the FPN) runs: the heads of torchvision's
    detectors have no BatchNorm."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    count = min(len(data), images if images is not None else batches * batch_size)
    if not norms or count < 1:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.eval()
    for m in norms:
        m.train()
    try:
        # at a 1x1 map one image is one value per channel, which BatchNorm refuses: a lone last image joins the
        # batch before it (each batch weighs the same in the average), a lone image alone its mirror
        starts = [s for s in range(0, count, batch_size) if count - s != 1 or s == 0]
        for start, end in zip(starts, [*starts[1:], count]):
            batch = [data[i][0] for i in range(start, end)]
            if len(batch) == 1:
                batch.append(batch[0].flip(-1))
            image_list, _ = model.transform(batch)
            model.backbone(image_list.tensors)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return count
