"""The joint search: student morphism and dynamic distillation, in rounds of candidates.

Each candidate picks a parent from the archive, proposes a few morphism actions on the search
space's grid, rejects proposals over the current latency bound by the table before any training,
picks the teacher (the parent's, or a mutation of it, from the pool), builds the student by
morphism (weights inherited from the parent), fine-tunes it with distillation, evaluates its mAP
and adds it to the archive. The bound starts at the base's latency and tightens to the target over
the first ``tighten`` fraction of the budget, so a lineage shrinks step by step while its weights
carry over. A round of ``parallel`` candidates is decided from the archive as it stood at the
round's start, trained by an executor (here, or on Ray workers), then recorded in slot order.
Every random draw is seeded by (seed, candidate index): the same seed and round size give the
same search on any number of workers, and a killed search resumes where it stopped. On a table
this machine measures, proposals are guessed and confirmed by measurement in this process
(:class:`~jdnas_sdk.latency.ConfirmedLatency`): the executor still changes nothing, a resumed
search still proposes what it did (the guesses come from the table pinned at its start, the
confirmations read back what they measured), but two searches from scratch are only as alike as
their measurements.

The moves and proposals live in :mod:`.moves`, the free moves scored first in :mod:`.free`; this
module holds the settings (:class:`SearchConfig`, :func:`search_settings`), the bound's schedule
and the loop.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ..arch import Arch
from ..detectors import describe
from ..distill import FINETUNE_DEFAULTS, KDConfig
from ..errors import SearchError
from ..latency import ConfirmedLatency, Estimator
from ..space import SearchSpace
from ..teachers import TeacherConfig, TeacherPool
from ..train import TrainConfig
from .archive import Archive, Candidate
from .executor import CandidateJob, Executor
from .first import first_teacher, record_base
from .free import free_slots
from .moves import PINNED_TABLE, as_searched, propose, search_latency
from .moves import apply_move as apply_move  # apply_move, moves: re-exported, their home is .moves
from .moves import moves as moves
from .rounds import Slot, make_executor, relative, rounds_spent_s, run_round, say
from .teachers import TeacherFiles, gap_teacher

__all__ = ["SearchConfig", "joint_search", "propose", "latency_bound", "search_settings", "open_archive"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """Budget and moves of a search. The budget is ``candidates`` students, or ``wall_s`` seconds
    when set (whichever ends first). ``parallel`` is the round size: each round proposes that many
    candidates from the archive as it stood at the round's start (1: one at a time).
    ``free_moves``: before the trained candidates, every student that differs from the base only in
    settings that change no weight (:data:`~jdnas_sdk.search.moves.FREE_KNOBS`) and is faster is
    scored untrained and joins the archive; they do not count against ``candidates``.
    ``parent_reach``: a candidate over the current bound may still be a parent when cutting that
    share of its latency would bring it within (``None``: only candidates within the bound). Without
    it, the first lineage to reach the bound keeps the search to itself, however it got there (an
    input-size cut that costs accuracy no training recovers, say), and a more accurate one a step
    behind is never continued. ``refit_images``: a tower conv beside one a move removed is refit by
    least squares on that many training images before the candidate trains (0: not;
    :mod:`jdnas_sdk.morph.refit`)."""

    candidates: int = 12
    wall_s: float | None = None
    finetune_steps: int = 50
    max_actions: int = 3
    tighten: float = 0.6
    teacher_mutation: float = 0.5
    proposals: int = 200
    seed: int = 0
    kd: KDConfig = field(default_factory=KDConfig)
    train: TrainConfig = FINETUNE_DEFAULTS
    parallel: int = 1
    bn_images: int = 0
    max_step_share: float | None = None
    teacher_gap: float | None = None
    free_moves: bool = False
    parent_reach: float | None = None
    refit_images: int = 0

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.finetune_steps < 1 or self.max_actions < 1 or self.parallel < 1:
            raise SearchError(
                f"candidates, finetune_steps, max_actions and parallel must be >= 1, got {self.candidates}, "
                f"{self.finetune_steps}, {self.max_actions} and {self.parallel}"
            )
        if not 0 < self.tighten <= 1:
            raise SearchError(f"tighten must be in (0, 1], got {self.tighten}")
        if self.bn_images < 0 or (self.max_step_share is not None and not 0 < self.max_step_share < 1):
            raise SearchError(
                f"bn_images must be >= 0 and max_step_share in (0, 1) or None, got {self.bn_images}, "
                f"{self.max_step_share}"
            )
        if self.parent_reach is not None and not 0 < self.parent_reach < 1:
            raise SearchError(f"parent_reach must be in (0, 1) or None, got {self.parent_reach}")
        if self.refit_images < 0:
            raise SearchError(f"refit_images must be >= 0, got {self.refit_images}")


def latency_bound(iteration: int, config: SearchConfig, base_ms: float, target_ms: float) -> float:
    """The bound at ``iteration`` (1-based): from the base's latency down to the target."""
    progress = min(1.0, iteration / max(1.0, config.tighten * config.candidates))
    return max(target_ms, base_ms + (target_ms - base_ms) * progress)


#: The candidates' rate of the default recipe (AdamW 1e-3, rewound, ``search_lr_ratio`` 1): archives made
#: before the rate was a setting hold none, and resume at it; another rate is part of the settings, so a
#: search killed and called again at another rate is refused, not continued with two rates in one archive.
DEFAULT_SEARCH_LR = 1e-3


def search_settings(
    method: str,
    base_arch: Arch,
    target_ms: float,
    estimator: Estimator,
    space: SearchSpace,
    config: SearchConfig,
    **extra: Any,
) -> dict[str, Any]:
    """What a search's archive must have been made with to be resumed (checked by :meth:`Archive.open`)."""
    return {
        "method": method,
        "base": str(base_arch),
        "target_ms": round(target_ms, 6),
        "table": estimator.table.target,
        "candidates": config.candidates,
        "finetune_steps": config.finetune_steps,
        "seed": config.seed,
        "space": [list(space.width_ratios), list(space.depth)]
        + ([{k: list(v) for k, v in space.head_values().items()}] if space.head_values() else []),
        "kd": {k: v for k, v in config.kd.__dict__.items() if k != "box_weight" or v},  # as archives made before
        **extra,
        **({"bn_images": config.bn_images} if config.bn_images else {}),
        **({"refit_images": config.refit_images} if config.refit_images else {}),
        **({"max_step_share": config.max_step_share} if config.max_step_share is not None else {}),
        **({"teacher_gap": config.teacher_gap} if config.teacher_gap is not None else {}),
        **({"free_moves": True} if config.free_moves else {}),
        **({"parent_reach": config.parent_reach} if config.parent_reach is not None else {}),
        **({"parallel": config.parallel} if config.parallel != 1 else {}),  # 1: as archives made before rounds
        **({"lr": config.train.lr} if config.train.lr != DEFAULT_SEARCH_LR else {}),
    }


def open_archive(work: Path, settings: dict[str, Any], confirmed: ConfirmedLatency | None) -> Archive:
    """The search's archive in ``work`` (a resumed one must have been made with ``settings``). With
    ``confirmed``, the settings say so (an archive of guessed latencies is not resumed as confirmed)
    and the table its guesses come from is pinned there, so a resumed search proposes as before."""
    if confirmed is not None:
        settings = {**settings, "latency": "confirmed"}
    archive = Archive.open(work / "archive.json", settings)
    if confirmed is not None:
        confirmed.pin(work / PINNED_TABLE)
    return archive


def _pick_parent(
    candidates: list[Candidate], bound_ms: float, rng: random.Random, *, reach: float | None = None
) -> Candidate:
    """The more accurate of three drawn from those within ``bound_ms`` (or, with ``reach``, whom
    cutting that share of their latency brings within it); none: the fastest."""
    alive = [c for c in candidates if c.ok]  # a failed candidate has no student to morph
    limit = bound_ms if reach is None else bound_ms / (1 - reach)
    within = [c for c in alive if c.latency_ms <= limit]
    if within:
        contenders = rng.sample(within, min(3, len(within)))
        return max(contenders, key=lambda c: (c.ap, -c.latency_ms))
    return min(alive, key=lambda c: (c.latency_ms, -c.ap))  # none within: the closest to it


@dataclass
class _Round:
    """What every slot of the joint search needs to decide its candidate."""

    work: Path
    base_ms: float
    target_ms: float
    space: SearchSpace
    estimator: Estimator
    config: SearchConfig
    pool: TeacherPool | None
    base_teacher: bool
    teachers: TeacherFiles
    confirmed: ConfirmedLatency | None = None
    free: int = 0  # candidates 1..free are the free moves; trained candidates follow
    teacher_file: str | None = None  # the user's own teacher, every candidate's

    def slot(self, index: int, candidates: list[Candidate]) -> Slot:
        """Candidate ``index`` from the archive as it stood at its round's start (``candidates``):
        parent, moves and teacher drawn from an RNG seeded by (seed, index), so by (seed, round, slot)."""
        config = self.config
        rng = random.Random(config.seed * 1_000_003 + index)
        bound = latency_bound(index - self.free, config, self.base_ms, self.target_ms)
        parent = _pick_parent(candidates, bound, rng, reach=config.parent_reach)
        floor = 0.0
        if config.max_step_share is not None:  # gradual: this step keeps >= (1 - share) of the parent's latency
            floor = parent.latency_ms * (1 - config.max_step_share)
            bound = max(bound, parent.latency_ms * (1 - config.max_step_share / 2))
        guess, confirm = search_latency(self.estimator, self.confirmed)
        actions, arch, ms, rejected = propose(
            as_searched(parent.arch, self.space),
            self.space,
            guess,
            bound,
            rng,
            max_actions=config.max_actions,
            tries=config.proposals,
            min_ms=floor,
            confirm=confirm,
        )
        teacher_code, teacher_file = parent.teacher, None
        if self.pool is not None:
            current = TeacherConfig.parse(parent.teacher) if parent.teacher else self.pool.largest()
            if config.teacher_gap is not None:
                current = gap_teacher(self.pool, arch, config.teacher_gap, rng)
            elif rng.random() < config.teacher_mutation:
                current = self.pool.mutate(current, rng)
            teacher_code = str(current)
            teacher_file = str(self.teachers.path(teacher_code))
        elif self.base_teacher:
            teacher_file = str(self.work / candidates[0].file)
        elif self.teacher_file is not None:
            teacher_file = self.teacher_file
        out = self.work / "candidates" / f"{index:03d}.pt"
        job = CandidateJob(
            index=index,
            parent_file=str(self.work / parent.file),
            out_file=str(out),
            steps=config.finetune_steps,
            train=replace(config.train, seed=config.seed * 7919 + index),
            kd=config.kd,
            actions=tuple(actions),
            teacher_file=teacher_file,
            metadata={"candidate": index, "parent": parent.index},
            bn_images=config.bn_images,
            refit_images=config.refit_images,
        )
        return Slot(
            index=index,
            arch=str(arch),
            parent=parent.index,
            actions=tuple(str(a) for a in actions),
            teacher=teacher_code,
            latency_ms=ms,
            file=relative(out, self.work),
            bound_ms=bound,
            rejected=rejected,
            job=job,
        )


def joint_search(
    base: nn.Module,
    *,
    estimator: Estimator,
    target_ms: float,
    train_data: Any,
    val_data: Any,
    workdir: str | Path,
    space: SearchSpace,
    pool: TeacherPool | None = None,
    base_teacher: bool = False,
    config: SearchConfig | None = None,
    executor: str | Executor = "local",
    progress: bool = True,
    log: Callable[[str], None] = logger.info,
    confirmed: ConfirmedLatency | None = None,
    teacher_file: str | Path | None = None,
) -> Archive:
    """Run (or resume) the joint search in ``workdir``; returns the archive (candidate 0 is the base).
    With ``confirmed`` (a table this machine measures), proposals are guessed and each candidate's
    latency is confirmed by measuring what the table lacks (:class:`~jdnas_sdk.latency.ConfirmedLatency`).

    Teachers come from ``pool`` (dynamic distillation); without one, ``base_teacher`` distils from
    the base itself and ``teacher_file`` from the user's own detector (teacher ``"given"``),
    otherwise students fine-tune without KD. Candidates go in rounds of
    ``config.parallel``, trained by ``executor`` (``"local"``, ``"ray"`` or an executor object);
    the archive depends on the seed and the round size, not on the executor or its workers.
    Messages go to ``log`` when given, else to this module's logger.
    """
    config = config or SearchConfig()
    if teacher_file is not None and (pool is not None or base_teacher):
        raise SearchError("a search distils from a pool, the base or a teacher file: give one of them")
    work = Path(workdir)
    (work / "candidates").mkdir(parents=True, exist_ok=True)
    spec, base_arch = describe(base)
    base_ms = estimator.total_ms(base_arch)
    settings = search_settings(
        "joint",
        base_arch,
        target_ms,
        estimator,
        space,
        config,
        pool=pool is not None,
        base_teacher=base_teacher,
        **({"teacher_file": Path(teacher_file).name} if teacher_file is not None else {}),  # names its digest
    )
    archive = open_archive(work, settings, confirmed)
    runner = make_executor(executor, **({"progress": progress} if executor == "local" else {}))
    first = first_teacher(pool, base_teacher, teacher_file)
    record_base(archive, base, base_arch, base_ms, work, val_data, first, config.candidates, log)
    state = _Round(
        work,
        base_ms,
        target_ms,
        space,
        estimator,
        config,
        pool,
        base_teacher,
        TeacherFiles(work / "teachers", pool, train_data),
        confirmed,
        teacher_file=None if teacher_file is None else str(teacher_file),
    )
    free = free_slots(archive.candidates[0], state)
    state.free = len(free)
    if len(archive.candidates) > state.free + config.candidates:
        return archive
    began = time.monotonic() - rounds_spent_s(archive.candidates, config.parallel, first=state.free + 1)
    runner.start(work, train_data, val_data)
    try:
        if free:
            run_round(
                archive,
                free,
                runner,
                label="search",
                total=state.free + config.candidates,
                desc="free moves",
                note=lambda s: f" (free: {', '.join(s.actions)}, not trained)",
                progress=progress,
                log=log,
            )
        _run_rounds(archive, state, runner, began, progress, log)
    finally:
        runner.close()
    state.teachers.keep(set())
    return archive


def _run_rounds(
    archive: Archive, state: _Round, runner: Executor, began: float, progress: bool, log: Callable[[str], None]
) -> None:
    """Rounds of ``config.parallel`` candidates until the budget is spent (candidates, or wall time
    since ``began``: :func:`time.monotonic` less what earlier runs spent, :func:`rounds_spent_s`);
    each round is decided from the archive as it stood at the round's start, its teachers prepared,
    then trained by ``runner`` and recorded."""
    config, free = state.config, state.free
    while len(archive.candidates) <= free + config.candidates:
        if config.wall_s is not None and time.monotonic() - began > config.wall_s:
            say(
                log,
                f"[search] wall-time budget of {config.wall_s:.0f} s spent after "
                f"{len(archive.candidates) - 1 - free} trained candidates",
            )
            break
        first = (len(archive.candidates) - 1 - free) // config.parallel * config.parallel + 1 + free
        at_start = archive.candidates[:first]
        last = free + config.candidates
        slots = [state.slot(i, at_start) for i in range(first, min(first + config.parallel, last + 1))]
        state.teachers.keep({s.teacher for s in slots})
        run_round(
            archive,
            slots,
            runner,
            label="search",
            total=last,
            desc=f"round {(first - 1 - free) // config.parallel + 1}",
            prepare=state.teachers.prepare,
            note=lambda s: f", {len(s.actions)} actions, {s.rejected} rejected by the table",
            progress=progress,
            log=log,
        )
