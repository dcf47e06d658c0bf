"""The joint search: student morphism and dynamic distillation, one candidate at a time.

Each iteration picks a parent from the archive, proposes a few morphism actions on the search
space's grid, rejects proposals over the current latency bound by the table before any training,
picks the teacher (the parent's, or a mutation of it, from the pool), builds the student by
morphism (weights inherited from the parent), fine-tunes it with distillation, evaluates its mAP
and adds it to the archive. The bound starts at the base's latency and tightens to the target over
the first ``tighten`` fraction of the budget, so a lineage shrinks step by step while its weights
carry over. Every random draw is seeded by (seed, iteration): the same seed gives the same search,
and a killed search resumes at the candidate it was working on.
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
from ..detectors import describe, load_detector, save_detector
from ..distill import FINETUNE_DEFAULTS, KDConfig, finetune
from ..errors import SearchError
from ..evaluate import evaluate
from ..latency import Estimator
from ..morph import Action, AddBlock, MoveBoundary, RemoveBlock, SetBlockWidth, SetStageWidth, apply_action, morph
from ..space import SearchSpace
from ..teachers import TeacherConfig, TeacherPool
from ..train import TrainConfig
from .archive import Archive, Candidate

__all__ = ["SearchConfig", "joint_search", "propose", "latency_bound", "search_settings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """Budget and moves of a search. The budget is ``candidates`` students, or ``wall_s`` seconds
    when set (whichever ends first)."""

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

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.finetune_steps < 1 or self.max_actions < 1:
            raise SearchError("candidates, finetune_steps and max_actions must be >= 1")
        if not 0 < self.tighten <= 1:
            raise SearchError(f"tighten must be in (0, 1], got {self.tighten}")


def latency_bound(iteration: int, config: SearchConfig, base_ms: float, target_ms: float) -> float:
    """The bound at ``iteration`` (1-based): from the base's latency down to the target."""
    progress = min(1.0, iteration / max(1.0, config.tighten * config.candidates))
    return max(target_ms, base_ms + (target_ms - base_ms) * progress)


def _grid_step(grid: tuple[int, ...], value: int, step: int) -> int | None:
    if value not in grid:
        return None
    index = grid.index(value) + step
    return grid[index] if 0 <= index < len(grid) else None


def moves(arch: Arch, space: SearchSpace) -> list[Action]:
    """Single actions from ``arch`` that stay in ``space``, widths moving one grid step."""
    out: list[Action] = []
    for s, stage in enumerate(arch.stages, start=1):
        lo, hi = space.depth_range(s)
        if stage.depth < hi:
            out.append(AddBlock(s, stage.depth - 1))
        if stage.depth > lo:
            out += [RemoveBlock(s, j) for j in range(1, stage.depth)]
        for step in (-1, 1):
            width = _grid_step(space.stage_widths(s), stage.width, step)
            if width is not None:
                out.append(SetStageWidth(s, width))
            for j, mid in enumerate(stage.mids):
                new = _grid_step(space.mid_widths(s), mid, step)
                if new is not None:
                    out.append(SetBlockWidth(s, j, new))
        if s < 4:
            out += [MoveBoundary(s, earlier=True), MoveBoundary(s, earlier=False)]
    valid = []
    for action in out:
        try:
            if space.why_not(apply_action(arch, action)) is None:
                valid.append(action)
        except Exception:  # noqa: BLE001 - an action that does not apply is simply not a move
            continue
    return valid


def _shrinks(action: Action, arch: Arch) -> bool:
    if isinstance(action, RemoveBlock):
        return True
    if isinstance(action, SetStageWidth):
        return action.width < arch.stages[action.stage - 1].width
    if isinstance(action, SetBlockWidth):
        return action.mid < arch.stages[action.stage - 1].mids[action.index]
    return False


def propose(parent: Arch, space: SearchSpace, latency: Callable[[Arch], float], bound_ms: float,
            rng: random.Random, *, max_actions: int = 3, tries: int = 200) -> tuple[list[Action], Arch, float, int]:
    """Moves from ``parent`` (1 to ``max_actions`` of them, then up to 40 more shrinking ones while
    still over the bound) whose result the table puts within ``bound_ms``.

    Returns (actions, arch, estimated latency, rejected proposals). Over the bound, shrinking moves
    are drawn more often. Raises :class:`SearchError` when ``tries`` proposals all miss the bound.
    """
    rejected = 0
    for _ in range(tries):
        arch, actions = parent, []
        wanted = rng.randint(1, max_actions)
        while len(actions) < wanted or (latency(arch) > bound_ms and len(actions) < max_actions + 40):
            options = moves(arch, space)
            over = latency(arch) > bound_ms
            shrinking = [a for a in options if _shrinks(a, arch)]
            choices = shrinking if over and shrinking and (len(actions) >= wanted or rng.random() < 0.8) else options
            if not choices:
                break
            action = rng.choice(choices)
            arch = apply_action(arch, action)
            actions.append(action)
        if actions and arch != parent:
            ms = latency(arch)
            if ms <= bound_ms:
                return actions, arch, ms, rejected
        rejected += 1
    raise SearchError(f"no proposal from {parent} met the latency bound {bound_ms:.2f} ms in {tries} tries")


def search_settings(method: str, base_arch: Arch, target_ms: float, estimator: Estimator, space: SearchSpace,
                    config: SearchConfig, **extra: Any) -> dict[str, Any]:
    """What a search's archive must have been made with to be resumed (checked by :meth:`Archive.open`)."""
    return {"method": method, "base": str(base_arch), "target_ms": round(target_ms, 6), "table": estimator.table.target,
            "candidates": config.candidates, "finetune_steps": config.finetune_steps, "seed": config.seed,
            "space": [list(space.width_ratios), list(space.depth)], "kd": config.kd.__dict__, **extra}


def _pick_parent(archive: Archive, bound_ms: float, rng: random.Random) -> Candidate:
    within = [c for c in archive.candidates if c.latency_ms <= bound_ms]
    if within:
        contenders = rng.sample(within, min(3, len(within)))
        return max(contenders, key=lambda c: (c.ap, -c.latency_ms))
    return min(archive.candidates, key=lambda c: (c.latency_ms, -c.ap))  # none within: the closest to it


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
    progress: bool = True,
    log: Callable[[str], None] = logger.info,
) -> Archive:
    """Run (or resume) the joint search in ``workdir``; returns the archive (candidate 0 is the base).

    Teachers come from ``pool`` (dynamic distillation); without one, ``base_teacher`` distils from
    the base itself, otherwise students fine-tune without KD.
    """
    config = config or SearchConfig()
    work = Path(workdir)
    (work / "candidates").mkdir(parents=True, exist_ok=True)
    spec, base_arch = describe(base)
    base_ms = estimator.total_ms(base_arch)
    settings = search_settings("joint", base_arch, target_ms, estimator, space, config, pool=pool is not None,
                               base_teacher=base_teacher)
    archive = Archive.open(work / "archive.json", settings)
    if not archive.candidates:
        base_file = work / "candidates" / "000.pt"
        save_detector(base, base_file)
        metrics = evaluate(base, val_data, progress=False)
        first_teacher = str(pool.largest()) if pool is not None else ("base" if base_teacher else None)
        archive.add(Candidate(0, str(base_arch), None, (), first_teacher, base_ms, metrics.ap, metrics.ap50,
                              metrics.ap75, str(base_file.relative_to(work))))
        log(f"[search] base {base_arch}: {base_ms:.2f} ms (estimated), AP {100 * metrics.ap:.1f}")
    elif len(archive.candidates) > 1:
        log(f"[search] resuming: {len(archive.candidates) - 1} candidates already on disk, next is "
            f"{len(archive.candidates)}/{config.candidates}")
    began = time.monotonic() - sum(c.wall_s for c in archive.candidates)
    teachers: dict[str, nn.Module] = {}
    for index in range(len(archive.candidates), config.candidates + 1):
        if config.wall_s is not None and time.monotonic() - began > config.wall_s:
            log(f"[search] wall-time budget of {config.wall_s:.0f} s spent after {index - 1} candidates")
            break
        t0 = time.monotonic()
        rng = random.Random(config.seed * 1_000_003 + index)
        bound = latency_bound(index, config, base_ms, target_ms)
        parent = _pick_parent(archive, bound, rng)
        actions, arch, ms, rejected = propose(Arch.parse(parent.arch), space, estimator.total_ms, bound, rng,
                                              max_actions=config.max_actions, tries=config.proposals)
        teacher_code = parent.teacher
        teacher: nn.Module | None = None
        if pool is not None:
            current = TeacherConfig.parse(parent.teacher) if parent.teacher else pool.largest()
            if rng.random() < config.teacher_mutation:
                current = pool.mutate(current, rng)
            teacher_code = str(current)
            if teacher_code not in teachers:
                teachers.clear()  # keep one sampled teacher in memory
                teachers[teacher_code] = pool.sample(current, calibration=train_data)
            teacher = teachers[teacher_code]
        elif base_teacher:
            teacher = base
        student = morph(load_detector(work / parent.file), actions)
        ckpt = work / "candidates" / f"{index:03d}.ckpt"
        cfg = replace(config.train, seed=config.seed * 7919 + index)
        finetune(student, data=train_data, steps=config.finetune_steps, teacher=teacher, kd=config.kd, config=cfg,
                 checkpoint=ckpt, progress=progress)
        metrics = evaluate(student, val_data, progress=False)
        file = work / "candidates" / f"{index:03d}.pt"
        save_detector(student, file, metadata={"candidate": index, "parent": parent.index})
        candidate = Candidate(index, str(arch), parent.index, tuple(str(a) for a in actions), teacher_code, ms,
                              metrics.ap, metrics.ap50, metrics.ap75, str(file.relative_to(work)), bound_ms=bound,
                              wall_s=time.monotonic() - t0, rejected=rejected)
        archive.add(candidate)
        ckpt.unlink(missing_ok=True)
        log(f"[search] {index}/{config.candidates}: {ms:.2f} ms (bound {bound:.2f}), AP {100 * metrics.ap:.1f}, "
            f"parent {parent.index}, teacher {teacher_code}, {len(actions)} actions, {rejected} rejected by the table")
    return archive

