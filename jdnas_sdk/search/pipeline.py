"""The naive pipeline baseline: prune, then distil, then search, each run to completion.

The paper compares its joint search with this pipeline under the same budget. Budget here is
fine-tuning steps: the joint search spends ``candidates x finetune_steps``; the pipeline spends a
third on fine-tuning the pruned student, a third on distilling it, and a third on a search that
morphs the distilled student into random architectures (shrunk into the target by random moves)
and fine-tunes each without a teacher. Candidates go to the same archive format as the joint search.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from ..arch import Arch, Stage
from ..detectors import describe, load_detector, save_detector
from ..distill import finetune
from ..errors import SearchError
from ..evaluate import evaluate
from ..latency import Estimator
from ..morph import morph_to
from ..space import SearchSpace
from .archive import Archive, Candidate
from .joint import SearchConfig, propose, search_settings

__all__ = ["pipeline_search", "uniform_prune"]

logger = logging.getLogger(__name__)


def _scaled(space: SearchSpace, ratio_index: int) -> Arch:
    base = space.base
    stages = []
    for s, stage in enumerate(base.stages, start=1):
        widths, mids = space.stage_widths(s), space.mid_widths(s)
        base_w = widths.index(stage.width) if stage.width in widths else len(widths) - 1
        base_m = [mids.index(m) if m in mids else len(mids) - 1 for m in stage.mids]
        stages.append(Stage(widths[max(0, base_w - ratio_index)], tuple(mids[max(0, i - ratio_index)] for i in base_m)))
    stem = stages[0].width if space.tied_stem else base.stem
    return Arch(block=base.block, stem=stem, stages=tuple(stages), groups=base.groups)


def uniform_prune(space: SearchSpace, latency: Callable[[Arch], float], target_ms: float) -> Arch:
    """The base with every width moved the same number of grid steps down: the least pruning
    that meets ``target_ms`` (then blocks are removed from the deepest stage if widths are not enough)."""
    for steps in range(0, max(len(space.stage_widths(s)) for s in range(1, 5))):
        arch = _scaled(space, steps)
        if latency(arch) <= target_ms:
            return arch
    arch = _scaled(space, 99)
    while latency(arch) > target_ms:
        deepest = max(range(4), key=lambda i: arch.stages[i].depth - space.depth_range(i + 1)[0])
        lo = space.depth_range(deepest + 1)[0]
        if arch.stages[deepest].depth <= lo:
            raise SearchError(f"even the smallest architecture of the space misses {target_ms:.2f} ms")
        stages = list(arch.stages)
        stages[deepest] = Stage(stages[deepest].width, stages[deepest].mids[:-1])
        arch = replace(arch, stages=tuple(stages))
    return arch


def pipeline_search(
    base: nn.Module,
    *,
    estimator: Estimator,
    target_ms: float,
    train_data: Any,
    val_data: Any,
    workdir: str | Path,
    space: SearchSpace,
    teacher: nn.Module | None,
    config: SearchConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] = logger.info,
) -> Archive:
    """Prune -> distil -> search under the step budget of a joint search with ``config``."""
    config = config or SearchConfig()
    work = Path(workdir)
    (work / "candidates").mkdir(parents=True, exist_ok=True)
    _, base_arch = describe(base)
    settings = search_settings("pipeline", base_arch, target_ms, estimator, space, config, teacher=teacher is not None)
    archive = Archive.open(work / "archive.json", settings)
    budget = config.candidates * config.finetune_steps
    stage_steps = max(1, budget // 3)
    search_count = max(1, config.candidates // 3)

    def file_of(index: int) -> Path:
        return work / "candidates" / f"{index:03d}.pt"

    def record(index: int, model: nn.Module, arch: Arch, parent: int | None, what: str, t0: float, teacher_code: str | None) -> None:
        """Evaluate ``model`` (already saved at ``file_of(index)``) and add it to the archive."""
        metrics = evaluate(model, val_data, progress=False)
        archive.add(Candidate(index, str(arch), parent, (what,), teacher_code, estimator.total_ms(arch), metrics.ap,
                              metrics.ap50, metrics.ap75, str(file_of(index).relative_to(work)), bound_ms=target_ms,
                              wall_s=time.monotonic() - t0))
        log(f"[pipeline] {index}: {what}: {estimator.total_ms(arch):.2f} ms, AP {100 * metrics.ap:.1f}")

    def train_step(index: int, model: nn.Module, steps: int, kd_teacher: nn.Module | None, what: str) -> None:
        """Fine-tune ``model`` and save it at ``file_of(index)`` (resumable from the checkpoint beside it)."""
        cfg = replace(config.train, seed=config.seed * 7919 + index)
        finetune(model, data=train_data, steps=steps, teacher=kd_teacher, kd=config.kd, config=cfg, out=file_of(index),
                 metadata={"candidate": index, "stage": what}, progress=progress)

    if len(archive.candidates) > 1:
        log(f"[pipeline] resuming: {len(archive.candidates) - 1} steps already on disk")
    if not archive.candidates:
        t0 = time.monotonic()
        save_detector(base, file_of(0), metadata={"candidate": 0, "stage": "base"})
        record(0, base, base_arch, None, "base", t0, None)
    if len(archive.candidates) == 1:  # 1. prune to the target, fine-tune
        t0 = time.monotonic()
        arch = uniform_prune(space, estimator.total_ms, target_ms)
        pruned = morph_to(base, arch)
        train_step(1, pruned, stage_steps, None, "prune+finetune")
        record(1, pruned, arch, 0, "prune+finetune", t0, None)
    if len(archive.candidates) == 2:  # 2. distil the pruned student
        t0 = time.monotonic()
        student = load_detector(work / archive.candidates[1].file)
        train_step(2, student, stage_steps, teacher, "distil")
        record(2, student, Arch.parse(archive.candidates[1].arch), 1, "distil", t0, "teacher" if teacher else None)
    distilled = archive.candidates[2]
    while len(archive.candidates) < 3 + search_count:  # 3. search around the distilled student
        index = len(archive.candidates)
        t0 = time.monotonic()
        rng = random.Random(config.seed * 1_000_003 + index)
        arch = space.sample(rng)  # a random architecture, shrunk by random moves until the table puts it in budget
        if estimator.total_ms(arch) > target_ms:
            _, arch, _, _ = propose(arch, space, estimator.total_ms, target_ms, rng, max_actions=1,
                                    tries=config.proposals)
        model = morph_to(load_detector(work / distilled.file), arch)
        train_step(index, model, max(1, (budget - 2 * stage_steps) // search_count), None, "search")
        record(index, model, arch, 2, "search", t0, None)
    return archive
