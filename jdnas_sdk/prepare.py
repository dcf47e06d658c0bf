"""What ``compress`` does between its checks and its search: the run is set up here.

After :mod:`jdnas_sdk.preflight` has refused what cannot succeed, :func:`before_work` loads the
target's table, checks the latency floor and the workdir's disk and measures this machine's
missing kernels; :func:`check_data` checks the splits against the detector; :func:`make_runner`
and :func:`search_config` turn the arguments into the executor and the search's settings;
:func:`target_latency` gives the base's estimate and the target (refusing one below the space's
smallest student); :func:`pick_teachers` gives the pool (given, loaded, or trained here by
:func:`teacher_pool`) and the lone teacher. :class:`CompressRun` carries what the steps after the
search (:mod:`jdnas_sdk.finish`) need. Kept apart from :mod:`jdnas_sdk.compress` so that module
reads as the run's order of steps.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ._io import atomic_write_bytes
from .arch import Arch
from .converge import ConvergeConfig
from .data import CocoDetection
from .data.checks import check_images, unread_targets
from .detectors import describe, load_detector, spec_of, thaw
from .distill.losses import SAME_AS_STUDENT
from .errors import DataError, SearchError
from .evaluate import evaluate
from .families import get_family
from .latency import Estimator, load_table
from .latency.local import measure_missing_ops
from .preflight import (
    TEACHER_SOURCES,
    Request,
    cheapest,
    check_floor,
    check_output_space,
    floor_error,
    parse_budget,
)
from .protocol import Recipe
from .search import Executor, SearchConfig, make_executor
from .space import SearchSpace
from .teachers import ShrinkConfig, TeacherPool, grow_teacher, train_pool_to_file
from .train import TrainConfig

__all__ = [
    "CompressRun",
    "check_data",
    "given_pool",
    "make_runner",
    "search_config",
    "pick_teachers",
    "target_latency",
    "before_work",
    "teacher_pool",
    "given_teacher",
    "new_run",
    "TEACHER_MUST_MATCH",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompressRun:
    """One compress run as its search and the steps after it see it: the workdir, the method,
    where teachers come from (``teacher``: ``"pool"``, ``"base"``, ``"none"`` or ``"given"``, the
    user's own at ``teacher_file``) with the pool and the lone teacher model (either may be
    ``None``), the three splits (train, select, test), the search's settings, whether bars show and
    the recipe (the final training's schedule and whether it is kept only where select gains)."""

    work: Path
    method: str
    teacher: str
    teacher_pool: TeacherPool | None
    teacher_model: nn.Module | None
    train_data: Any
    select_data: Any
    test_data: Any
    config: SearchConfig
    progress: bool
    recipe: Recipe = field(default_factory=Recipe)
    teacher_file: Path | None = None  # teacher "given": its copy in ``work`` (every student distils from it)


def check_data(spec: Any, train_data: Any, select_data: Any, test_data: Any) -> None:
    """Every split holds images, and each CocoDetection's classes fit the detector and its images
    decode (:func:`~jdnas_sdk.data.checks.check_images`; a user's own training set is taken as it is)."""
    for name, split, why in (
        ("select", select_data, "choices of the search are made on it"),
        ("test", test_data, "the final numbers are measured on it"),
        ("training", train_data, "students are fine-tuned on it"),
    ):
        if len(split) == 0:
            raise DataError(f"the {name} set is empty: {why}")
        if hasattr(split, "check_compatible"):  # a CocoDetection; a user's own training set is taken as it is
            split.check_compatible(spec)
            check_images(split, name=f"the {name} set")
    unread = unread_targets(spec.family)
    if unread and hasattr(train_data, "with_masks"):  # the SDK's COCO loader: boxes and masks, no keypoints
        raise DataError(
            f"a {spec.family} trains on {', '.join(unread)}, which the SDK's COCO loader does not read, and "
            "compress trains every student: it cannot compress this detector (jdnas eval, latency and export "
            "take it)"
        )
    if "masks" in get_family(spec.family).target_fields and getattr(train_data, "with_masks", True) is False:
        raise DataError(
            f"a {spec.family} trains on masks, but the training set was loaded without them: load it with "
            "load_protocol_splits(root, with_masks=True), or pass data=FOLDER"
        )


def make_runner(executor: str | Executor, parallel: int, progress: bool) -> Executor:
    """What trains the candidates: ``"local"`` (this process), ``"ray"`` (Ray tasks on a local Ray,
    or on the cluster of an initialised Ray) or an executor object such as
    ``RayExecutor(address="auto", num_cpus=4)``. Made before any work: without Ray, ``"ray"``
    fails here saying how to install it."""
    if parallel < 1:  # SearchConfig says so too, but only after the executor was made
        raise SearchError(f"parallel (candidates per round) must be >= 1, got {parallel}")
    if executor == "local" and parallel > 1:
        log.info(
            "parallel=%d with the local executor: each round's candidates train one after another in this "
            "process (the same archive as on Ray, no speed-up); executor='ray' trains them at once",
            parallel,
        )
    return make_executor(executor, **({"progress": progress} if executor == "local" else {}))


def search_config(budget: int | str, finetune_steps: int, seed: int, parallel: int, recipe: Recipe) -> SearchConfig:
    """The search's settings (a bad budget or round size is a SearchError before any work)."""
    candidates, wall_s = parse_budget(budget)
    return SearchConfig(
        candidates=candidates or 10_000,
        wall_s=wall_s,
        finetune_steps=finetune_steps,
        seed=seed,
        parallel=parallel,
        train=recipe.search_train_config(),
        kd=recipe.kd,
        bn_images=recipe.bn_images,
        refit_images=recipe.refit_images,
        max_step_share=recipe.max_step_share,
        teacher_gap=recipe.teacher_gap,
        free_moves=recipe.free_moves,
        parent_reach=recipe.parent_reach,
    )


#: What a teacher must share with the model for distillation (:class:`~jdnas_sdk.distill.Distiller`
#: compares class scores class by class, FPN level by level, and anchor by anchor for dense heads)
TEACHER_MUST_MATCH = (*SAME_AS_STUDENT, "anchor_sizes")


def given_teacher(teacher: str | os.PathLike[str], spec: Any, *, pool: Any = None) -> nn.Module | None:
    """The user's own teacher when ``teacher`` names a detector file (``None`` for the named sources
    of :data:`~jdnas_sdk.preflight.TEACHER_SOURCES`), loaded and checked before any work: it must
    match the model in :data:`TEACHER_MUST_MATCH` (any backbone, width or depth; the feature
    adapters take any FPN width). Every student of the search and the final one distil from it."""
    if teacher in TEACHER_SOURCES:
        return None
    if pool is not None:
        raise SearchError(f"give a pool (teacher='pool') or a teacher file ({teacher}), not both")
    model = load_detector(teacher)  # a DetectorFileError names a damaged or foreign file
    differ = _differences(spec_of(model), spec)
    if differ:
        raise SearchError(
            f"teacher {teacher} does not match the model ({differ}): distillation needs the same "
            f"family, classes, FPN levels and anchors; give such a teacher, or teacher='pool'"
        )
    return model.eval()


def given_pool(pool: Any, spec: Any) -> TeacherPool | None:
    """The user's teacher pool (a :class:`TeacherPool` or its file, loaded), ``None`` for none.
    Refused before any work when grown from another kind of detector than the model (another
    family, classes, FPN levels or anchors): its teachers could not teach the students, and the
    search would fail only when it first picks one."""
    if pool is None:
        return None
    origin, pool = (pool, TeacherPool.load(pool)) if isinstance(pool, (str, os.PathLike)) else ("(given)", pool)
    differ = _differences(pool.spec, spec)
    if differ:
        raise SearchError(
            f"teacher pool {origin} does not match the model ({differ}): grow a pool from this "
            "model (`jdnas teachers train --base MODEL ...`), or leave pool out to train one here"
        )
    return pool


def _differences(theirs: Any, spec: Any) -> str:
    """The :data:`TEACHER_MUST_MATCH` fields where ``theirs`` and ``spec`` differ, as ``"family a vs b; ..."``."""
    return "; ".join(
        f"{n} {getattr(theirs, n)} vs {getattr(spec, n)}"
        for n in TEACHER_MUST_MATCH
        if getattr(theirs, n) != getattr(spec, n)
    )


def new_run(
    work: Path,
    method: str,
    teacher: str | os.PathLike[str],
    given: nn.Module | None,
    splits: tuple[Any, Any, Any],
    config: SearchConfig,
    progress: bool,
    recipe: Recipe,
) -> CompressRun:
    """The run's :class:`CompressRun` (its teachers still to pick). A teacher file of the user's own
    is first copied into ``work`` under its content digest: workers read it there like every other
    file of the run, nothing the run deletes can be it, and a resumed run given another teacher
    has another name in its settings, so the search refuses to mix the two."""
    teacher_file = None
    if given is not None:
        data = Path(teacher).read_bytes()
        teacher_file = work / f"teacher-{hashlib.sha256(data).hexdigest()[:12]}.pt"
        if not teacher_file.is_file():
            atomic_write_bytes(teacher_file, data)
    kind = "given" if given is not None else str(teacher)
    return CompressRun(work, method, kind, None, given, *splits, config, progress, recipe, teacher_file=teacher_file)


def pick_teachers(
    run: CompressRun,
    pool: TeacherPool | str | Path | None,
    base: nn.Module,
    pool_steps: int,
    seed: int,
    *,
    grow_steps: int = 0,
) -> CompressRun:
    """``run`` with its teachers: the pool (``run.teacher == "pool"``: given, or trained in its
    workdir, its largest first grown on the select split for at most ``grow_steps`` where that is
    > 0) and the lone teacher (the base, or the user's own file, ``"given"``; for the pipeline with
    a pool, the pool's largest teacher)."""
    teacher_pool = None
    if run.teacher == "pool":
        teacher_pool = _pool(
            pool,
            base,
            run.train_data,
            run.work / "pool.pt",
            pool_steps,
            seed,
            run.progress,
            run.select_data,
            grow_steps,
        )
    teacher_model = base if run.teacher == "base" else run.teacher_model  # "given": the user's own, loaded
    if run.method == "pipeline" and teacher_pool is not None:  # the pipeline distils from the largest teacher
        teacher_model = teacher_pool.sample(teacher_pool.largest(), calibration=run.train_data)
    return replace(run, teacher_pool=teacher_pool, teacher_model=teacher_model)


def target_latency(
    model: nn.Module, estimator: Estimator, base_arch: Arch, space: SearchSpace, latency: float | None, ms: float | None
) -> tuple[float, float]:
    """``(base_ms, target_ms)``; refuses a target below the space's smallest student."""
    table = estimator.table
    if estimator.lacks_fixed():
        log.info("[compress] measuring the fixed part (pre/post-processing) of this detector on %s", table.target)
        estimator.calibrate_fixed(model)  # the detector at hand: its own weights give its NMS load
    base_ms = estimator.total_ms(base_arch)
    if ms is not None:
        target_ms = float(ms)
    elif latency is not None and 0 < latency:
        target_ms = base_ms * float(latency)
    else:
        raise SearchError("give latency=RATIO (0 < RATIO) or ms=MILLISECONDS")
    floor = estimator.total_ms(cheapest(space))
    if target_ms < floor:
        raise floor_error(target_ms, floor, base_ms, table.target)
    return base_ms, target_ms


def before_work(
    model: nn.Module,
    target: str,
    input_size: tuple[int, int] | None,
    space: SearchSpace | None,
    request: Request,
    workdir: str | Path,
    progress: bool,
) -> tuple[Any, tuple[int, int], SearchSpace]:
    """``(table, input size, space)`` after what compress checks before any work, inside the workdir
    lock that :func:`holds_workdir` holds for the run (a second run on the workdir refuses naming this
    one, or waits with ``wait``; a run that fails to start leaves no workdir): the latency floor from
    what the table holds (nothing measured or written), the workdir's disk (read-only or full: now,
    not after training); then this machine's missing kernels are measured, counted, with a progress bar."""
    spec, base_arch = describe(model)
    table, size = load_table(target), input_size or (spec.min_size, spec.min_size)
    space = space or SearchSpace(base_arch, spec=spec)  # the whole detector: backbone and heads
    check_floor(table, spec, base_arch, space, size, request)
    check_output_space(workdir, model, what="the workdir")
    measure_missing_ops(table, spec, base_arch, size, progress=progress)
    return table, size, space


def teacher_pool(
    base: nn.Module,
    data: CocoDetection,
    *,
    path: str | Path,
    steps: int = 100,
    seed: int = 0,
    progress: bool = True,
    select_data: Any = None,
    grow_steps: int = 0,
) -> TeacherPool:
    """The elastic teacher pool grown around ``base`` and trained once by progressive shrinking for
    ``steps`` steps, saved at ``path``; loaded from there when it exists, resumed when it was killed.

    With ``grow_steps`` and ``select_data``, the largest network is first trained alone until its
    select AP stops improving (at most ``grow_steps``, then a third as many with the rate decayed;
    :func:`~jdnas_sdk.teachers.grow_teacher`),
    frozen beside the pool (``<pool>.largest.pt``) as the teacher a student gets when the largest is
    chosen, and the elastic phases follow from its weights (no largest-only phase)."""
    path = Path(path)
    if path.is_file():
        return TeacherPool.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    trained = TeacherPool.from_base(thaw(base), seed=seed)
    phases = (0.2, 0.3, 0.5)
    if grow_steps and select_data is not None:
        base_ap = evaluate(base, select_data, progress=False).ap
        converge = ConvergeConfig(
            eval_every=max(1, grow_steps // 6),
            patience=3,
            max_steps=max(1, grow_steps),
            cooldown_steps=grow_steps // 3,  # the base's rate was decayed: so must the teacher's be
            trend_window=0,  # a grown network dips below its start and climbs back: a rise, not a base still learning
        )
        grown = grow_teacher(
            trained,
            data,
            select_data,
            path.with_name(path.stem + ".largest.pt"),
            base_select_ap=base_ap,
            converge=converge,
            progress=progress,
        )
        trained.frozen_largest, phases = Path(grown.file), (0.0, 0.4, 0.6)
    config = ShrinkConfig(
        train=TrainConfig(
            steps=steps,
            batch_size=4,
            optimizer="adamw",
            lr=2e-4,
            weight_decay=0.05,
            warmup_steps=min(10, steps // 5),
            seed=seed,
            checkpoint_every=10,
        ),
        phases=phases,
    )
    log.info("[compress] training a teacher pool around the base for %d steps (largest %s)", steps, trained.max_arch)
    train_pool_to_file(trained, data, path, config=config, progress=progress)
    return trained


def _pool(
    pool: TeacherPool | str | Path | None,
    base: nn.Module,
    data: CocoDetection,
    path: Path,
    steps: int,
    seed: int,
    progress: bool,
    select_data: Any,
    grow_steps: int,
) -> TeacherPool:
    """The pool given (an object or a file), or one trained around ``base`` at ``path``."""
    if isinstance(pool, TeacherPool):
        return pool
    if pool is not None:
        return TeacherPool.load(pool)
    return teacher_pool(
        base,
        data,
        path=path,
        steps=steps,
        seed=seed,
        progress=progress,
        select_data=select_data,
        grow_steps=grow_steps,
    )
