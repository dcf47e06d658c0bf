"""The final race: the search's few best candidates each train the start of the final schedule,
and the one ``select`` then ranks first finishes it.

A search ranks its candidates after a short fine-tune, and that ranking favours students whose
moves kept most of their parent's function at once (a smaller input, fewer proposals) over
students that lose more at first and recover more with training. Successive halving (Jamieson &
Talwalkar 2016; Hyperband, Li et al. 2017) spends a little more to rank again where it matters:
each of the ``Recipe.final_race`` most accurate candidates within the target trains the first
``Recipe.race_share`` of the final schedule itself (same rate, warm-up and decay, its own final
teacher), is scored on ``select``, and the winner goes on from its checkpoint. The student still
receives exactly ``final_steps`` final steps, so the extra-steps control is unchanged; the other
contenders' steps cost wall time only (inside ``compress``'s). Where the winner's full final
training then loses on ``select``, ``Recipe.keep_better`` keeps its search weights, as it would
without a race. A contender whose loss diverges is left out of the race.

A killed race resumes: ``race/race.json`` names the race (contenders, schedule, distillation) and
holds each finished contender's score; it is written before any contender trains, and checkpoints
that no record of this race owns are removed, so a race with other settings starts over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write_json, read_json
from .distill import finetune
from .errors import NonFiniteLossError
from .evaluate import evaluate
from .finish import final_schedule, final_teacher
from .prepare import CompressRun
from .search import load_candidate
from .train import checkpoint_identity

__all__ = ["RaceResult", "race_steps", "final_race"]

log = logging.getLogger(__name__)

RACE_FORMAT = "jdnas-final-race"


@dataclass(frozen=True)
class RaceResult:
    """The race's winner, the checkpoint it goes on from (None: no race was run) and every
    contender's scores, best of the search first (``race_select_ap`` None: its loss diverged)."""

    winner: Any
    checkpoint: Path | None
    contenders: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> list[dict[str, Any]]:
        return [dict(c) for c in self.contenders]


def race_steps(final_steps: int, share: float) -> int:
    """Steps each contender trains: ``share`` of ``final_steps``, at least 1 and fewer than all."""
    return min(max(1, round(final_steps * share)), final_steps - 1)


def final_race(run: CompressRun, archive: Any, best: Any, target_ms: float, final_steps: int) -> RaceResult:
    """Race the ``run.recipe.final_race`` most accurate candidates of ``archive`` within
    ``target_ms`` (see the module docstring); ``best`` (the search's own choice) alone, with no
    race, where the recipe asks for one contender, fewer than two are within the target, the
    final training has fewer than two steps, or every contender diverged."""
    contenders = archive.top(target_ms, run.recipe.final_race)
    if run.recipe.final_race < 2 or len(contenders) < 2 or final_steps < 2:
        return RaceResult(winner=best, checkpoint=None)
    steps = race_steps(final_steps, run.recipe.race_share)
    folder = run.work / "race"
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "race.json"
    identity = _identity(run, contenders, final_steps, steps)
    scores = _scores(record, identity)
    if scores is None:  # a new race, or another race's record: checkpoints no record owns are stale
        for stale in folder.glob("*.ckpt"):
            stale.unlink()
        scores = {}
        atomic_write_json(record, {"format": RACE_FORMAT, **identity, "select_ap": scores})
    for place, candidate in enumerate(contenders, start=1):
        if str(candidate.index) in scores:
            continue
        log.info(
            "[race] candidate %d (%d/%d, search select AP %.1f): %d of the %d final steps",
            candidate.index,
            place,
            len(contenders),
            100 * candidate.ap,
            steps,
            final_steps,
        )
        scores[str(candidate.index)] = _run(run, candidate, folder, final_steps, steps)
        atomic_write_json(record, {"format": RACE_FORMAT, **identity, "select_ap": scores})
    finished = [c for c in contenders if scores[str(c.index)] is not None]
    if not finished:
        log.warning("[race] every contender diverged; the search's best goes on alone")
        return RaceResult(winner=best, checkpoint=None)
    winner = max(finished, key=lambda c: (scores[str(c.index)], c.ap, -c.latency_ms))
    for candidate in contenders:  # only the winner's checkpoint goes on
        if candidate is not winner:
            (folder / f"{candidate.index:03d}.ckpt").unlink(missing_ok=True)
    rows = tuple(
        {
            "candidate": c.index,
            "arch": c.arch,
            "latency_ms": c.latency_ms,
            "search_select_ap": c.ap,
            "race_select_ap": scores[str(c.index)],
            "race_steps": steps,
            "won": c is winner,
        }
        for c in contenders
    )
    log.info(
        "[race] candidate %d wins (select AP %.1f after %d steps; the search's first, %d, scored %s)",
        winner.index,
        100 * scores[str(winner.index)],
        steps,
        contenders[0].index,
        "diverged" if scores[str(contenders[0].index)] is None else f"{100 * scores[str(contenders[0].index)]:.1f}",
    )
    return RaceResult(winner=winner, checkpoint=folder / f"{winner.index:03d}.ckpt", contenders=rows)


def _run(run: CompressRun, candidate: Any, folder: Path, final_steps: int, steps: int) -> float | None:
    """``candidate`` trained the first ``steps`` of the final schedule (checkpointed in ``folder``),
    then its select AP; None where its loss diverged (the checkpoint is removed)."""
    student = load_candidate(run.work / "search" / candidate.file)
    _, teacher_of = final_teacher(run, candidate)
    checkpoint = folder / f"{candidate.index:03d}.ckpt"
    try:
        finetune(
            student,
            data=run.train_data,
            steps=final_steps,
            teacher=teacher_of(),
            kd=run.config.kd,
            config=final_schedule(run.recipe, run.config),
            checkpoint=checkpoint,
            stop_after=steps,
            progress=run.progress,
        )
    except NonFiniteLossError as exc:
        log.warning("[race] candidate %d left out: %s", candidate.index, exc)
        checkpoint.unlink(missing_ok=True)
        return None
    return evaluate(student, run.select_data, progress=False).ap


def _identity(run: CompressRun, contenders: list[Any], final_steps: int, steps: int) -> dict[str, Any]:
    """What makes two races the same race (JSON values, as the record stores them)."""
    identity = {
        "final_steps": final_steps,
        "steps": steps,
        "schedule": checkpoint_identity(final_schedule(run.recipe, run.config)),
        "kd": asdict(run.config.kd),
        "contenders": [
            {"index": c.index, "arch": c.arch, "file": c.file, "ap": c.ap, "teacher": final_teacher(run, c)[0]}
            for c in contenders
        ],
    }
    return json.loads(json.dumps(identity))


def _scores(record: Path, identity: dict[str, Any]) -> dict[str, float | None] | None:
    """The select APs a killed race already measured (None for a diverged contender); None when
    there is no record of this race (none, another race's, or one that cannot be read)."""
    if not record.is_file():
        return None
    try:
        data = read_json(record)
    except (OSError, ValueError) as exc:
        log.warning("[race] %s is unreadable (%s); racing again", record, exc)
        return None
    if not isinstance(data, dict) or data.get("format") != RACE_FORMAT:
        log.warning("[race] %s is not a race record; racing again", record)
        return None
    if any(data.get(k) != v for k, v in identity.items()):
        return None
    scores = data.get("select_ap")
    if not isinstance(scores, dict) or not all(v is None or isinstance(v, (int, float)) for v in scores.values()):
        log.warning("[race] %s holds no scores it can read; racing again", record)
        return None
    return {str(k): None if v is None else float(v) for k, v in scores.items()}
