"""Train a base until its ``select`` AP stops improving, and record the curve.

A base that is still climbing makes any student look good or bad by accident: the student's
extra training steps would be compared with a base that never got them. :func:`train_until_converged`
trains in chunks of ``eval_every`` steps at a constant rate after the warm-up (so the rate does
not depend on when training stops), evaluates on ``select`` after each chunk, keeps the best
weights, and stops after ``patience`` evaluations without an improvement of at least
``min_delta`` AP, unless the curve's trend still climbs (or at ``max_steps``; its checkpoint is then
kept, so the same call with a larger ``max_steps`` continues exactly where it stopped). The trend
guards against stopping on noise: a select AP that jumps +/-1 AP between evaluations can set a best
that three later evaluations miss while the curve still rises (the benchmark Faster R-CNN base,
stopped that way, gained 4.8 test AP from 1,200 more steps: ``benchmarks/results/teacher_probe.md``),
so patience only ends training when the least-squares line through the last ``trend_window``
evaluations rises less than ``min_trend`` AP across them. The rule a run stopped by is recorded
with its curve. With ``cooldown_steps``, the best weights then train that many
more steps with the rate decayed to its floor (cosine), the step that settles a constant-rate
plateau: without it a base sits on its plateau's noise, and any student or control trained after it
with a decaying rate gains from the decay alone, which flatters both. The cooled weights are kept
where ``select`` says they are better. With ``cycle_steps``, the settled weights then train whole
rewound cycles of that many steps (the peak rate again, warm-up, cosine decay: the schedule an
extra-steps control gets) while a cycle still gains ``cycle_min_gain`` select AP, at most
``max_cycles`` of them: a constant-rate plateau with a short cool-down is not the end of what a
schedule gives (the benchmark RetinaNet base, settled that way at 63.7 select AP, reached 71.4 from
one 1,630-step cycle, so its control beat every student by the cycle alone), and a base is only
converged once the schedule its control will get no longer improves it. The detector file holds
the best weights; its metadata (``curve``: the curve as a JSON string) and a JSON beside it
(``OUT.curve.json``) hold the curve. Killed, the same call resumes: the
training from its checkpoint, the curve from its JSON.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ._io import atomic_torch_save, atomic_write_json, first_line, read_json, torch_load
from .detectors import load_detector, nonfinite_tensor
from .errors import TrainingError
from .evaluate import evaluate
from .settle import curve_path, save_result, settle
from .train import TrainConfig, checkpoint_path, data_fingerprint, train

__all__ = ["ConvergeConfig", "ConvergeResult", "train_until_converged", "curve_path", "trend_rise"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvergeConfig:
    """When to evaluate and when to stop: every ``eval_every`` steps on ``select``; stop after
    ``patience`` evaluations without ``min_delta`` (AP, 0-1) over the best so far once the line
    fitted to the last ``trend_window`` evaluations rises less than ``min_trend`` (AP, 0-1) across
    them (``trend_window=0``: patience alone), or at ``max_steps``; then ``cooldown_steps`` of
    decaying rate and up to ``max_cycles`` rewound cycles of ``cycle_steps`` while each gains
    ``cycle_min_gain`` (AP, 0-1) on ``select``."""

    eval_every: int = 100
    patience: int = 3
    min_delta: float = 0.002
    max_steps: int = 3000
    cooldown_steps: int = 0
    trend_window: int = 8
    min_trend: float = 0.01
    cycle_steps: int = 0
    max_cycles: int = 3
    cycle_min_gain: float = 0.01

    def __post_init__(self) -> None:
        bad = self.eval_every < 1 or self.patience < 1 or self.max_steps < self.eval_every or self.min_delta < 0
        if bad or self.cooldown_steps < 0:
            raise TrainingError(
                f"need eval_every >= 1, patience >= 1, max_steps >= eval_every, min_delta >= 0 and cooldown_steps "
                f">= 0, got {self.eval_every}, {self.patience}, {self.max_steps}, {self.min_delta}, "
                f"{self.cooldown_steps}"
            )
        if self.cycle_steps < 0 or self.max_cycles < 1 or self.cycle_min_gain < 0:
            raise TrainingError(
                f"need cycle_steps >= 0 (0: no cycles), max_cycles >= 1 and cycle_min_gain >= 0, got "
                f"{self.cycle_steps}, {self.max_cycles} and {self.cycle_min_gain}"
            )
        if self.trend_window < 0 or self.trend_window in (1, 2) or self.min_trend < 0:
            raise TrainingError(
                f"need trend_window 0 (off) or >= 3 evaluations and min_trend >= 0, got {self.trend_window} and "
                f"{self.min_trend}"
            )


@dataclass
class ConvergeResult:
    """The curve (``[{"step", "select_ap"}]``), the step of the best select AP (whose weights are
    kept) and of the last improvement by ``min_delta`` (patience counts from it), whether training
    stopped by its stopping rule (``converged``) rather than at ``max_steps``, and the steps trained;
    ``cooldown``: the cool-down's steps, its select AP and whether its weights were kept (None
    before it ran); ``rule``: the stopping rule it trained under (``patience``, ``min_delta``,
    ``trend_window``, ``min_trend``; None in curves recorded before the trend rule: patience alone);
    ``cycles``: the rewound cycles so far, each ``{"steps", "select_ap", "gain", "kept"}``; ``data``: the
    ``train`` and ``select`` datasets' fingerprints (None in curves recorded before them)."""

    curve: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_ap: float = -1.0
    improved_step: int = 0
    converged: bool = False
    steps: int = 0
    cooldown: dict[str, Any] | None = None
    rule: dict[str, float] | None = None
    cycles: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, str | None] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def best_weights_steps(self) -> int:
        """The training steps the kept weights received: up to the best evaluation, then the
        cool-down and the cycles that were kept."""
        cooled = self.cooldown["steps"] if self.cooldown and self.cooldown["kept"] else 0
        return self.best_step + cooled + sum(c["steps"] for c in self.cycles if c["kept"])

    def best_text(self) -> str:
        """``best select AP 78.5 at step 0, then 4800 steps of cool-down and cycles``: which weights
        were kept, in words (the cool-down and cycles train on after the plateau's best step)."""
        text = f"best select AP {100 * self.best_ap:.1f} at step {self.best_step}"
        after = self.best_weights_steps - self.best_step
        return text + (f", then {after} steps of cool-down and cycles" if after else "")


def trend_rise(curve: list[dict[str, float]], window: int) -> float | None:
    """How much the least-squares line through the last ``window`` points of ``curve`` rises
    across them (AP, 0-1), or None with fewer than three points (or ``window`` 0). A line, not the
    best point: one lucky evaluation sets a best that noise then keeps out of reach, while the
    line follows where the evaluations around it are heading."""
    points = curve[-window:] if window else []
    if len(points) < 3:
        return None
    steps = [float(p["step"]) for p in points]
    aps = [float(p["select_ap"]) for p in points]
    mean_step, mean_ap = sum(steps) / len(steps), sum(aps) / len(aps)
    spread = sum((s - mean_step) ** 2 for s in steps)
    slope = sum((s - mean_step) * (a - mean_ap) for s, a in zip(steps, aps)) / spread
    return slope * (steps[-1] - steps[0])


def _rule(converge: ConvergeConfig) -> dict[str, float]:
    """The stopping rule of ``converge``, as a run records it beside its curve."""
    return {
        "patience": converge.patience,
        "min_delta": converge.min_delta,
        "trend_window": converge.trend_window,
        "min_trend": converge.min_trend,
    }


def _stalled(result: ConvergeResult, converge: ConvergeConfig) -> bool:
    """Patience is spent and the trend no longer climbs (see the module docstring)."""
    after = [p for p in result.curve if p["step"] > result.improved_step]
    if len(after) < converge.patience:
        return False
    rise = trend_rise(result.curve, converge.trend_window)
    return rise is None or rise < converge.min_trend


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9


def _stage(value: Any) -> bool:
    """A cool-down or cycle record: its steps, select AP and whether its weights were kept."""
    return (
        isinstance(value, dict)
        and _count(value.get("steps"))
        and _ap(value.get("select_ap"))
        and isinstance(value.get("kept"), bool)
    )


def _ap(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -1.0 <= value <= 1.0


def _parse_curve(raw: Any) -> ConvergeResult:
    """A curve file's JSON as a :class:`ConvergeResult`; ``ValueError`` naming the first field that
    is not what this module writes."""
    if not isinstance(raw, dict):
        raise ValueError(f"it holds a {type(raw).__name__}, not an object")
    unknown = sorted(set(raw) - set(ConvergeResult.__dataclass_fields__))
    points = raw.get("curve", [])
    checks = {
        "unknown keys": not unknown,
        "curve": isinstance(points, list)
        and all(isinstance(p, dict) and _count(p.get("step")) and _ap(p.get("select_ap")) for p in points),
        "best_ap": _ap(raw.get("best_ap", -1.0)),
        "converged": isinstance(raw.get("converged", False), bool),
        "cooldown": raw.get("cooldown") is None or _stage(raw["cooldown"]),
        "cycles": isinstance(raw.get("cycles", []), list) and all(_stage(c) for c in raw.get("cycles", [])),
        "rule": raw.get("rule") is None or isinstance(raw["rule"], dict),
        "data": raw.get("data") is None or isinstance(raw["data"], dict),
        **{key: _count(raw.get(key, 0)) for key in ("best_step", "improved_step", "steps")},
    }
    bad = [key for key, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"{bad[0]}: {unknown}" if bad[0] == "unknown keys" else f"field {bad[0]!r} is malformed")
    return ConvergeResult(**raw)


def _recorded(out: Path, train_data: Any, select_data: Any) -> ConvergeResult:
    """The curve recorded so far beside ``out`` (empty before the first evaluation). Refused, before
    any training: a damaged curve file; one whose weights are gone (neither ``out`` nor its
    checkpoint exists: going on would save untrained weights as trained); one recorded on other
    train or select data (continuing or reusing it would mix two datasets in one base)."""
    curve_file, result = curve_path(out), ConvergeResult()
    if curve_file.exists():
        try:
            result = _parse_curve(read_json(curve_file))
        except (OSError, ValueError) as exc:
            raise TrainingError(
                f"the curve file {curve_file} is damaged ({exc}); delete it (and {checkpoint_path(out).name} beside "
                "it) to train from the start"
            ) from exc
        if result.steps and not out.is_file() and not checkpoint_path(out).is_file():
            raise TrainingError(
                f"the curve file {curve_file} records {result.steps} steps, but neither {out.name} nor its checkpoint "
                "is there to hold their weights; delete the curve file to train from the start"
            )
    data = {"train": data_fingerprint(train_data), "select": data_fingerprint(select_data)}
    for split, now in data.items():
        was = (result.data or {}).get(split)
        if None not in (was, now) and was != now:
            raise TrainingError(
                f"{curve_file} was recorded with other {split} data (fingerprint {was}, this dataset's {now}); give "
                "the data it was trained on, or another output file (or delete it and its checkpoint) to start over"
            )
    result.data = data
    return result


def _read_best(best_file: Path, ckpt: Path, curve_file: Path) -> dict[str, Any]:
    """The best weights so far; a damaged file is refused naming it (never loaded as other numbers)."""
    try:
        weights = torch_load(best_file)
        if not isinstance(weights, dict) or nonfinite_tensor(weights) is not None:
            raise ValueError("not the finite weights of a detector")
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise TrainingError(
            f"{best_file}, the best weights so far, cannot be read ({first_line(exc)}); "
            f"restore it, or delete it with {ckpt} and {curve_file} to train from the start"
        ) from exc
    return weights


def train_until_converged(
    model: nn.Module,
    train_data: Any,
    select_data: Any,
    out: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    converge: ConvergeConfig | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    keep_start: bool = False,
) -> ConvergeResult:
    """Train ``model`` on ``train_data`` until its AP on ``select_data`` stops improving; save the
    best weights as the detector file ``out`` (``model`` holds them on return). ``config`` gives the
    optimiser, rate and warm-up (its ``steps`` and ``schedule`` are replaced: constant after the
    warm-up, in chunks); ``converge`` when to stop. ``keep_start``: for weights that are already
    good (a trained detector file re-converged, a network grown from a converged base), ``model`` is
    evaluated on ``select_data`` before any training and is step 0 of the curve, so training that
    never beats the starting weights returns them (a constant-rate first phase can wreck them)."""
    config, converge = config or TrainConfig(), converge or ConvergeConfig()
    config = replace(config, schedule="constant", checkpoint_every=converge.eval_every)
    out, curve_file = Path(out), curve_path(out)
    best_file = out.with_name(out.name + ".best")
    result = _recorded(out, train_data, select_data)
    ckpt = checkpoint_path(out)
    saved = out.is_file() and curve_file.is_file()  # an earlier run ended: the file holds the best weights
    if saved and (result.converged or result.steps >= converge.max_steps or not ckpt.exists()):  # done before
        if result.rule != _rule(converge):
            log.warning(
                "[converge] %s was trained before under another stopping rule (%s, asked: %s); reusing it as it is "
                "(delete it, or give another output file, to train under this one)",
                out,
                result.rule or "patience alone",
                _rule(converge),
            )
        model.load_state_dict(load_detector(out).state_dict())
        settle(model, train_data, select_data, out, config, converge, result, metadata, progress)
        return result
    if saved:  # stopped at a lower max_steps before: go on from its checkpoint
        log.info(
            "[converge] %s stopped at step %d before; continuing to at most %d", out, result.steps, converge.max_steps
        )
        if not best_file.is_file():
            atomic_torch_save(best_file, load_detector(out).state_dict())
        result.cooldown, result.cycles = None, []  # a cool-down and cycles follow the new plateau
    if best_file.is_file():  # a resumed run's best weights: checked before any step
        _read_best(best_file, ckpt, curve_file)
    result.rule = _rule(converge)
    if keep_start and not result.curve:  # a fresh start: the starting weights are a candidate
        start_ap = evaluate(model, select_data, progress=False).ap
        log.info("[converge] starting weights: select AP %.1f, kept unless training beats them", 100 * start_ap)
        result.curve.append({"step": 0, "select_ap": start_ap})
        result.best_ap, result.best_step, result.improved_step = start_ap, 0, 0
        atomic_torch_save(best_file, model.state_dict())
    while not result.converged and result.steps < converge.max_steps and not _stalled(result, converge):
        steps = result.steps + converge.eval_every
        train(model, train_data, config=replace(config, steps=steps), checkpoint=ckpt, progress=progress)
        ap = evaluate(model, select_data, progress=False).ap
        result.curve.append({"step": steps, "select_ap": ap})
        result.steps = steps
        if ap > result.best_ap + converge.min_delta or result.best_ap < 0:
            result.improved_step = steps  # patience counts from the last improvement by min_delta
        if ap > result.best_ap:
            result.best_ap, result.best_step = ap, steps
            atomic_torch_save(best_file, model.state_dict())
        rise = trend_rise(result.curve, converge.trend_window)
        log.info(
            "[converge] step %d: select AP %.1f (best %.1f at step %d; trend %s AP over the last %d evaluations)",
            steps,
            100 * ap,
            100 * result.best_ap,
            result.best_step,
            "n/a" if rise is None else f"{100 * rise:+.1f}",
            min(len(result.curve), converge.trend_window) if rise is not None else 0,
        )
        atomic_write_json(curve_file, result.to_json())
    result.converged = _stalled(result, converge)
    if best_file.is_file():
        model.load_state_dict(_read_best(best_file, ckpt, curve_file))
    save_result(model, out, result, metadata)
    if result.converged:  # a plateau ends it; stopped by max_steps, the checkpoint stays for a larger max_steps
        ckpt.unlink(missing_ok=True)
    best_file.unlink(missing_ok=True)
    settle(model, train_data, select_data, out, config, converge, result, metadata, progress)
    log.info(
        "[converge] %s after %d steps: %s; curve in %s",
        "converged" if result.converged else "stopped at max_steps",
        result.steps,
        result.best_text(),
        curve_file,
    )
    return result
