"""After the plateau: the cool-down and the rewound cycles that settle a base (see :mod:`jdnas_sdk.converge`).

A constant-rate plateau is not the end of what a schedule gives: :func:`settle` trains the best
weights once more with the rate decayed (the cool-down), then whole rewound cycles at the peak rate
(warm-up, cosine decay: the schedule an extra-steps control gets) while one still gains on
``select``. Each keeps its weights only where ``select`` says they are better, checkpoints, and is
recorded in the detector file and the curve's JSON as it ends, so a killed run resumes inside it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from ._io import atomic_write_json
from .detectors import save_detector
from .evaluate import evaluate
from .train import TrainConfig, checkpoint_path, train

# ``converge`` and ``result`` below are jdnas_sdk.converge's ConvergeConfig and ConvergeResult (typed Any:
# that module imports this one, and an import back would be a circle)
ConvergeConfig = ConvergeResult = Any

__all__ = ["settle", "save_result", "curve_path"]

log = logging.getLogger("jdnas_sdk.converge")  # one logger for the whole convergence story


def curve_path(out: str | os.PathLike[str]) -> Path:
    """The JSON beside the detector file ``out`` that holds its training curve."""
    path = Path(out)
    return path.with_name(path.name + ".curve.json")


def save_result(model: nn.Module, out: Path, result: ConvergeResult, metadata: dict[str, Any] | None) -> None:
    """The detector file (``model``'s weights, the curve in its metadata), then the curve's JSON."""
    save_detector(
        model,
        out,
        metadata={
            "steps": result.best_weights_steps,
            "trained_steps": result.steps,
            "best_select_ap": result.best_ap,
            "converged": result.converged,
            "curve": json.dumps(result.curve),
            "cooldown": json.dumps(result.cooldown),
            "cycles": json.dumps(result.cycles),
            **(metadata or {}),
        },
    )
    atomic_write_json(curve_path(out), result.to_json())


def settle(
    model: nn.Module,
    train_data: Any,
    select_data: Any,
    out: Path,
    config: TrainConfig,
    converge: ConvergeConfig,
    result: ConvergeResult,
    metadata: dict[str, Any] | None,
    progress: bool,
) -> None:
    """After the plateau: the cool-down (unless one ran already: a file converged by an earlier
    run gets one if it lacks it), then the rewound cycles still due. ``model`` holds the best
    weights; ``result`` is the record, saved with them into ``out`` as each step ends."""
    run = _Run(model, train_data, select_data, out, config, converge, result, metadata, progress)
    if converge.cooldown_steps and result.cooldown is None:
        _cool_down(run)
    _cycles(run)


@dataclass
class _Run:
    """What the cool-down and the cycles work on (the arguments of :func:`settle`)."""

    model: nn.Module
    train_data: Any
    select_data: Any
    out: Path
    config: TrainConfig
    converge: ConvergeConfig
    result: ConvergeResult
    metadata: dict[str, Any] | None
    progress: bool

    def save(self) -> None:
        save_result(self.model, self.out, self.result, self.metadata)


def _cool_down(run: _Run) -> None:
    """Train the best weights ``converge.cooldown_steps`` more steps, the rate warmed up briefly (a
    fresh optimiser) and decayed by cosine to its floor; keep them where their select AP beats the
    best, else restore the best. Resumable from its own checkpoint."""
    steps = run.converge.cooldown_steps
    ap, _, kept, ckpt = _train_decayed(run, steps=steps)
    run.result.cooldown = {"steps": steps, "select_ap": ap, "kept": kept}
    run.save()
    ckpt.unlink(missing_ok=True)
    log.info(
        "[converge] cool-down of %d steps: select AP %.1f, %s (best %.1f)",
        steps,
        100 * ap,
        "kept" if kept else "not kept",
        100 * run.result.best_ap,
    )


def _train_decayed(run: _Run, *, steps: int, cycle: int = 0) -> tuple[float, float, bool, Path]:
    """Train the best weights ``steps`` steps from a fresh optimiser, the rate warmed up briefly
    and decayed by cosine to its floor (checkpointed beside the detector file: the cool-down's, or
    rewound cycle ``cycle``'s, with its own data order), then keep them where their select AP beats
    the best (``result.best_ap`` is raised), else restore the best. Returns the select AP, its gain
    over the best before, whether it was kept, and the checkpoint (for the caller to remove once the
    outcome is saved)."""
    model, config, result = run.model, run.config, run.result
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    schedule = replace(
        config,
        steps=steps,
        schedule="cosine",
        warmup_steps=min(config.warmup_steps, steps // 10),
        seed=config.seed + cycle,
        checkpoint_every=max(1, min(run.converge.eval_every, steps)),
    )
    ckpt = checkpoint_path(run.out.with_name(run.out.name + (f".cycle{cycle}" if cycle else ".cooldown")))
    train(model, run.train_data, config=schedule, checkpoint=ckpt, progress=run.progress)
    ap = evaluate(model, run.select_data, progress=False).ap
    gain, kept = ap - result.best_ap, ap > result.best_ap
    if kept:
        result.best_ap = ap
    else:
        model.load_state_dict(best)
    return ap, gain, kept, ckpt


def _cycles_done(result: ConvergeResult, converge: ConvergeConfig) -> bool:
    """No cycle asked, ``max_cycles`` run, or the last one gained less than ``cycle_min_gain``."""
    if not converge.cycle_steps or len(result.cycles) >= converge.max_cycles:
        return True
    return bool(result.cycles) and result.cycles[-1]["gain"] < converge.cycle_min_gain


def _cycles(run: _Run) -> None:
    """Rewound cycles (see the module docstring): from the best weights, each trains
    ``converge.cycle_steps`` steps at the peak rate again (warm-up, then cosine decay to the floor;
    a fresh optimiser and its own data order) and is kept where ``select`` beats the best; they stop
    once one gains less than ``cycle_min_gain`` or after ``max_cycles``. Each cycle checkpoints and
    is recorded as it ends, so a killed run resumes inside the cycle it was in."""
    result, converge, ran = run.result, run.converge, False
    while not _cycles_done(result, converge):
        ran = True
        index, steps = len(result.cycles), converge.cycle_steps
        ap, gain, kept, ckpt = _train_decayed(run, steps=steps, cycle=index + 1)
        result.cycles.append({"steps": steps, "select_ap": ap, "gain": gain, "kept": kept})
        run.save()
        ckpt.unlink(missing_ok=True)
        log.info(
            "[converge] rewound cycle %d of %d steps: select AP %.1f (%+.1f), %s (best %.1f)",
            index + 1,
            steps,
            100 * ap,
            100 * gain,
            "kept" if kept else "not kept",
            100 * result.best_ap,
        )
    if ran and result.cycles[-1]["gain"] >= converge.cycle_min_gain:
        log.warning(
            "[converge] %s still gained %.1f AP from its last rewound cycle (%d cycles, the most asked): a student's "
            "or control's training of that length may still improve it; give more cycles to settle it",
            run.out,
            100 * result.cycles[-1]["gain"],
            len(result.cycles),
        )
