"""The naive pipeline baseline: prune, then distil, then search, each run to completion.

The paper compares its joint search with this pipeline under the same budget. Budget here is
fine-tuning steps: the joint search spends ``candidates x finetune_steps``; the pipeline spends a
third on fine-tuning the pruned student, a third on distilling it, and a third on a search that
morphs the distilled student into random architectures (shrunk into the target by random moves)
and fine-tunes each without a teacher. Candidates go to the same archive format as the joint search,
and their training through the same executors (the search stage in rounds of ``parallel``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from ..arch import Arch, Stage
from ..detectors import describe, save_detector
from ..errors import SearchError
from ..evaluate import evaluate
from ..latency import ConfirmedLatency, Estimator
from ..space import SearchSpace
from ..student import Heads, Student
from .archive import Archive
from .executor import CandidateJob, Executor
from .joint import SearchConfig, open_archive, search_settings
from .moves import as_searched, propose, search_latency
from .rounds import Slot, make_executor, outcome_here, record, relative, run_round, say

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


def _scaled_student(space: SearchSpace, steps: int) -> Arch | Student:
    """:func:`_scaled` and, where the space has a head grid, every head setting moved the same
    number of steps down its grid from the base detector's value."""
    arch = _scaled(space, steps)
    values = space.head_values()
    if not values:
        return arch
    base = space.heads_of(Heads.of(space.spec))
    choice = {}
    for knob, grid in values.items():
        at = grid.index(base[knob]) if base[knob] in grid else len(grid) - 1
        choice[knob] = grid[max(0, at - steps)]
    return Student(arch, space.make_heads(choice))


def uniform_prune(
    space: SearchSpace,
    latency: Callable[[Any], float],
    target_ms: float,
    confirm: Callable[[Any], float] | None = None,
) -> Arch | Student:
    """The base with every width (and, where the space has a head grid, every head setting: FPN,
    box/mask head and tower widths, tower depth, proposals, input size) moved the same number of
    grid steps down: the least pruning that meets ``target_ms`` (then blocks are removed from the
    deepest stage if that is not enough). With ``confirm``, ``latency`` is a guess and a step it
    admits must also meet the target by ``confirm`` (only those steps are measured)."""
    grids = [len(space.stage_widths(s)) for s in range(1, 5)] + [len(v) for v in space.head_values().values()]
    for steps in range(0, max(grids)):
        arch = _scaled_student(space, steps)
        if latency(arch) <= target_ms and (confirm is None or confirm(arch) <= target_ms):
            return arch
    scaled = _scaled_student(space, 99)
    if isinstance(scaled, Student):
        heads, arch = scaled.heads, scaled.arch
        cost = lambda a: latency(Student(a, heads))  # noqa: E731 - the heads stay at their smallest
    else:
        heads, arch, cost = None, scaled, latency
    while cost(arch) > target_ms:
        deepest = max(range(4), key=lambda i: arch.stages[i].depth - space.depth_range(i + 1)[0])
        lo = space.depth_range(deepest + 1)[0]
        if arch.stages[deepest].depth <= lo:
            raise SearchError(f"even the smallest architecture of the space misses {target_ms:.2f} ms")
        stages = list(arch.stages)
        stages[deepest] = Stage(stages[deepest].width, stages[deepest].mids[:-1])
        arch = replace(arch, stages=tuple(stages))
    return arch if heads is None else Student(arch, heads)


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
    executor: str | Executor = "local",
    progress: bool = True,
    log: Callable[[str], None] = logger.info,
    confirmed: ConfirmedLatency | None = None,
    teacher_name: str | None = None,
) -> Archive:
    """Prune -> distil -> search under the step budget of a joint search with ``config``.

    Each stage's training runs through ``executor`` (the search stage in rounds of
    ``config.parallel``); the distillation stage's ``teacher`` is written to the workdir for it.
    ``confirmed``: as in :func:`~jdnas_sdk.search.joint.joint_search`, every student this
    baseline trains is held to a confirmed (measured-entry) latency, as the joint search's are.
    ``teacher_name`` (a teacher file's name) goes into the settings, so a resumed run given
    another teacher is refused."""
    config = config or SearchConfig()
    work = Path(workdir)
    (work / "candidates").mkdir(parents=True, exist_ok=True)
    _, base_arch = describe(base)
    settings = search_settings(
        "pipeline", base_arch, target_ms, estimator, space, config, teacher=teacher_name or teacher is not None
    )
    archive = open_archive(work, settings, confirmed)
    budget = config.candidates * config.finetune_steps
    stage_steps = max(1, budget // 3)
    search_count = max(1, config.candidates // 3)
    runner = make_executor(executor, **({"progress": progress} if executor == "local" else {}))

    guess, confirm = search_latency(estimator, confirmed)
    latency = confirm or guess  # what each stage's student is held to
    slot = partial(_slot, work, archive, config, latency=latency, target_ms=target_ms)

    if len(archive.candidates) > 1:
        say(log, f"[pipeline] resuming: {len(archive.candidates) - 1} steps already on disk")
    if not archive.candidates:
        _record_base(archive, base, base_arch, estimator, work, val_data, target_ms, log)
    total = 3 + search_count
    if len(archive.candidates) >= total:
        return archive
    teacher_file = work / "teachers" / "pipeline.pt" if teacher is not None else None
    runner.start(work, train_data, val_data)
    try:
        common = dict(label="pipeline", progress=progress, log=log, note=lambda s: f": {s.actions[0]}")
        if len(archive.candidates) == 1:  # 1. prune to the target, fine-tune
            arch = uniform_prune(space, guess, target_ms, confirm)
            run_round(
                archive, [slot(1, arch, 0, "prune+finetune", stage_steps, None, True)], runner, desc="prune", **common
            )
        if len(archive.candidates) == 2:  # 2. distil the pruned student
            _alive(archive, 1)

            def write_teacher(_: Slot) -> None:
                if teacher_file is not None and not teacher_file.is_file():
                    save_detector(teacher, teacher_file, metadata={"teacher": "pipeline"})

            run_round(
                archive,
                [
                    slot(
                        2, as_searched(archive.candidates[1].arch, space), 1, "distil", stage_steps, teacher_file, False
                    )
                ],
                runner,
                desc="distil",
                prepare=write_teacher,
                **common,
            )
        _alive(archive, 2)
        steps = max(1, (budget - 2 * stage_steps) // search_count)
        while len(archive.candidates) < total:  # 3. search around the distilled student, in rounds
            first = 3 + (len(archive.candidates) - 3) // config.parallel * config.parallel
            slots = [
                slot(i, _random_arch(i, space, estimator, target_ms, config, confirmed), 2, "search", steps, None, True)
                for i in range(first, min(first + config.parallel, total))
            ]
            run_round(archive, slots, runner, desc=f"search round {(first - 3) // config.parallel + 1}", **common)
    finally:
        runner.close()
    if teacher_file is not None:
        teacher_file.unlink(missing_ok=True)
    return archive


def _record_base(
    archive: Archive,
    base: nn.Module,
    base_arch: Arch,
    estimator: Estimator,
    work: Path,
    val_data: Any,
    target_ms: float,
    log: Callable[[str], None],
) -> None:
    """Candidate 0 of a new archive: the base, saved, evaluated and its latency estimated."""
    t0 = time.time()
    file = work / "candidates" / "000.pt"
    save_detector(base, file, metadata={"candidate": 0, "stage": "base"})
    record(
        archive,
        Slot(
            index=0,
            arch=str(base_arch),
            parent=None,
            actions=("base",),
            teacher=None,
            latency_ms=estimator.total_ms(base_arch),
            file=relative(file, work),
            bound_ms=target_ms,
        ),
        outcome_here(0, evaluate(base, val_data, progress=False), t0),
        label="pipeline",
        note=": base",
        log=log,
    )


def _slot(
    work: Path,
    archive: Archive,
    config: SearchConfig,
    index: int,
    arch: Arch,
    parent: int,
    what: str,
    steps: int,
    teacher_file: Path | None,
    morph: bool,
    *,
    latency: Callable[[Any], float],
    target_ms: float,
) -> Slot:
    """Stage ``what`` as candidate ``index``: the student of candidate ``parent`` (morphed to ``arch``
    when ``morph``) trained ``steps`` steps, with the teacher at ``teacher_file`` if any; its
    latency as ``latency`` puts it, its bound ``target_ms``."""
    latency_ms = latency(arch)
    out = work / "candidates" / f"{index:03d}.pt"
    job = CandidateJob(
        index=index,
        parent_file=str(work / archive.candidates[parent].file),
        out_file=str(out),
        steps=steps,
        train=replace(config.train, seed=config.seed * 7919 + index),
        kd=config.kd,
        morph_to=str(arch) if morph else None,
        teacher_file=None if teacher_file is None else str(teacher_file),
        metadata={"candidate": index, "stage": what},
        bn_images=config.bn_images,
        refit_images=config.refit_images,
    )
    return Slot(
        index=index,
        arch=str(arch),
        parent=parent,
        actions=(what,),
        teacher="teacher" if teacher_file is not None else None,
        latency_ms=latency_ms,
        file=relative(out, work),
        bound_ms=target_ms,
        job=job,
    )


def _alive(archive: Archive, index: int) -> None:
    """The pipeline goes on from candidate ``index``: it must have trained."""
    failed = archive.candidates[index]
    if not failed.ok:
        raise SearchError(
            f"the pipeline's {failed.actions[0]} stage (candidate {index}) failed: {failed.error}; "
            "the later stages start from it, so the pipeline cannot go on"
        )


def _random_arch(
    index: int,
    space: SearchSpace,
    estimator: Estimator,
    target_ms: float,
    config: SearchConfig,
    confirmed: ConfirmedLatency | None = None,
) -> Arch:
    """A random architecture for candidate ``index`` (seeded by (seed, index)), shrunk by random
    moves until the table (confirmed, with ``confirmed``) puts it within ``target_ms``."""
    rng = random.Random(config.seed * 1_000_003 + index)
    arch = space.sample_student(rng) if space.head_values() else space.sample(rng)
    guess, confirm = search_latency(estimator, confirmed)
    if guess(arch) > target_ms or (confirm is not None and confirm(arch) > target_ms):
        _, arch, _, _ = propose(
            arch, space, guess, target_ms, rng, max_actions=1, tries=config.proposals, confirm=confirm
        )
    return arch
