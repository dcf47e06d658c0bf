"""Training checkpoints: what a killed run leaves so that the same call resumes it, and what a
resuming run must share with the one that wrote it (model spec, training options, the data's
fingerprint) before any of it is used. A checkpoint that cannot be read, belongs to another run or
is damaged is refused in one line naming the file and the fix, never half-loaded."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_torch_save, first_line, torch_load
from .detectors import nonfinite_tensor, spec_of
from .errors import TrainingError

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_identity",
    "checkpoint_path",
    "wall_path",
    "data_fingerprint",
    "load_checkpoint",
    "restore",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "jdnas-train-checkpoint"


def checkpoint_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`train_to_file` keeps its checkpoint for the detector file ``out``."""
    path = Path(out)
    return path.with_name(path.name + ".ckpt")


def wall_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`train_to_file` keeps the training's time over its sittings for the file ``out``
    (a :class:`~jdnas_sdk._stopwatch.Stopwatch`), removed with the checkpoint once ``out`` is written."""
    path = Path(out)
    return path.with_name(path.name + ".train-wall.json")


def checkpoint_identity(config: Any) -> dict[str, Any]:
    """The settings of ``config`` (a :class:`~jdnas_sdk.train.TrainConfig`, which imports this module)
    that a checkpoint must share with the run resuming it (steps may grow)."""
    out = asdict(config)
    for free in ("steps", "checkpoint_every", "num_workers"):
        out.pop(free)
    return out


def data_fingerprint(data: Any) -> str | None:
    """The dataset's :meth:`~jdnas_sdk.data.CocoDetection.fingerprint` (None for a dataset without one)."""
    fingerprint = getattr(data, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else None


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Any,
    aux: nn.Module | None = None,
    data: str | None = None,
) -> tuple[int, list[tuple[int, float]]]:
    """Load the checkpoint at ``path`` into ``model``, ``optimizer`` (and ``aux``, the extra-loss
    module); returns the step it was written at and the loss history. Refused with a
    :class:`TrainingError` naming the file and the fix: unreadable, another run's (spec, options,
    ``data`` fingerprint), beyond this run's steps, or a damaged field."""
    try:
        state = torch_load(path)  # checksums checked: a flipped bit is refused, not loaded as other numbers
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise TrainingError(f"checkpoint {path} cannot be read ({first_line(exc)}); delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a jdnas training checkpoint; delete it or choose another output path")
    spec = spec_of(model).to_dict()
    if state.get("spec") != spec or state.get("config") != checkpoint_identity(config):
        raise TrainingError(
            f"checkpoint {path} belongs to a different run (other model or training options); "
            "delete it to start over, or rerun with the options it was written with"
        )
    if None not in (data, state.get("data")) and state["data"] != data:
        raise TrainingError(
            f"checkpoint {path} was trained on other data (fingerprint {state['data']}, this dataset's {data}); "
            "give the dataset it was trained on, or delete it to start over"
        )
    if aux is not None and "aux" not in state:
        raise TrainingError(
            f"checkpoint {path} was written without the extra-loss module this run has; delete it to start over"
        )
    return restore(path, state, model, optimizer, steps=config.steps, aux=aux)


def restore(
    path: Path,
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int | None = None,
    aux: nn.Module | None = None,
) -> tuple[int, list[tuple[int, float]]]:
    """Load the checkpoint ``state`` read from ``path`` (its identity already checked by the caller)
    into ``model``, ``optimizer`` and ``aux``; returns its step and loss history. A step beyond
    ``steps`` (the resuming run's schedule; None: unbounded) or a damaged field is a
    :class:`TrainingError` naming the file, raised before the weights are used."""
    step = state.get("step")
    if steps is not None and isinstance(step, int) and not isinstance(step, bool) and step > steps >= 0:
        raise TrainingError(
            f"checkpoint {path} is at step {step}, beyond this run's {steps} steps; rerun with at least "
            f"{step} steps, or delete it to start over"
        )
    try:  # fields a damaged or hand-edited file lacks or holds wrongly: refused before any of it is used
        history = [(int(s), float(v)) for s, v in state["history"]]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step {step!r} is not a step count")
        if not all(math.isfinite(v) for _, v in history):
            raise ValueError("its loss history is not finite")
        weights = state["model"]
        if not isinstance(weights, dict):
            raise TypeError(f"its model weights are a {type(weights).__name__}, not a state_dict")
        if nonfinite_tensor(weights) is not None:
            raise ValueError("its model weights are not finite (NaN or inf)")
        model.load_state_dict(weights)
        if aux is not None:
            aux.load_state_dict(state["aux"])
        optimizer.load_state_dict(state["optimizer"])
        _check_optimizer_state(optimizer)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TrainingError(
            f"checkpoint {path} is damaged ({type(exc).__name__}: {first_line(exc)}); delete it to start over"
        ) from exc
    return step, history


def _check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Each parameter's optimizer buffers (momentum, Adam's moments) have its shape and are finite:
    torch's ``load_state_dict`` checks neither, and a wrong shape failed steps later inside the
    optimizer, a NaN as a "non-finite loss" blamed on the learning rate."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    continue
                if value.dim() and value.shape != param.shape:
                    raise ValueError(
                        f"its optimizer state {name!r} has shape {tuple(value.shape)} for a parameter of "
                        f"{tuple(param.shape)}"
                    )
                if value.is_floating_point() and not bool(value.isfinite().all()):
                    raise ValueError(f"its optimizer state {name!r} is not finite (NaN or inf)")


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Any,
    step: int,
    history: Sequence[tuple[int, float]],
    aux: nn.Module | None = None,
    data: str | None = None,
) -> None:
    """Write what :func:`load_checkpoint` reads, atomically (a kill leaves the previous one)."""
    atomic_torch_save(
        path,
        {
            **({"aux": aux.state_dict()} if aux is not None else {}),
            **({"data": data} if data is not None else {}),
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "step": step,
            "spec": spec_of(model).to_dict(),
            "config": checkpoint_identity(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": [list(item) for item in history],
        },
    )
