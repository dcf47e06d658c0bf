"""``compress``: the SDK's one call, from a trained detector to a faster, trained student.

Everything that can be checked before training is checked first, so an impossible request fails
in seconds: the model must be a supported detector, the target must have a table, the validation
set must hold images, and the latency asked for must be reachable by the search space at all
(the fixed part of a detector, pre- and post-processing, is the floor no backbone change removes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ._io import atomic_write_json
from ._lock import holds_workdir
from .arch import Arch
from .cost import detector_cost
from .data import CocoDetection
from .detectors import describe, load_detector, read_detector_file, save_detector, thaw
from .distill import finetune
from .errors import DataError, SearchError
from .latency import ConfirmedLatency, Estimator, fixed_key, load_table
from .latency.local import describe_table, measure_missing_ops
from .preflight import Request, check_floor, check_output_space, parse_budget, smallest_arch, validate_request
from .protocol import Recipe, claim, lineage_steps, protocol_splits, score, train_control
from .report import write_report
from .search import Executor, SearchConfig, joint_search, make_executor, pipeline_search
from .space import SearchSpace
from .student import Heads, Student
from .teachers import ShrinkConfig, TeacherConfig, TeacherPool, train_pool_to_file
from .train import TrainConfig

__all__ = ["CompressResult", "Recipe", "compress", "parse_budget", "smallest_arch", "teacher_pool"]

log = logging.getLogger(__name__)


@dataclass
class CompressResult:
    """The student (trained, eval mode), its arch, the metrics of base, student and controls (each
    with ``test_ap``, the final number, and ``select_ap``, what choices saw), the search history
    (every candidate) and where the report and files are. ``modelled`` is true when the target's
    table is MODELLED (roofline, e.g. ``v100-trt``): every latency in ``metrics`` is then an
    estimate from published peaks, nothing was measured on the target."""

    student: nn.Module
    arch: Arch
    metrics: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]
    workdir: Path
    report: Path | None = None
    student_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    modelled: bool = False

    @property
    def latency_source(self) -> str:
        """``"MODELLED"`` (a roofline table: estimates only) or ``"measured"`` (a table timed on the target)."""
        return "MODELLED" if self.modelled else "measured"

    def summary(self) -> str:
        """Base, student and controls, one line each (test AP, select AP), the claim, then where the
        files are (and MODELLED when it is)."""
        lines = []
        for name in ("base", "student", "control", "arch_control"):
            row = self.metrics.get(name)
            if row is None:
                continue
            measured = f", measured {row['measured_ms']:.2f} ms" if "measured_ms" in row else ""
            when = (
                f"estimated {row['estimated_ms']:.2f} ms{measured}"
                if "estimated_ms" in row
                else f"{row.get('steps', 0)} more steps, no teacher"
            )
            lines.append(
                f"{name:12s} test AP {100 * row['test_ap']:5.1f}  select AP {100 * row['select_ap']:5.1f}  "
                f"AP50 {100 * row['ap50']:5.1f}  {when}  {row.get('arch', '')}".rstrip()
            )
        lines.append(claim(self.metrics))
        if self.modelled:
            lines.append(f"latency: MODELLED ({self.target} is a roofline table: estimates, not measurements)")
        lines.append(f"student: {self.student_file}; report: {self.report}")
        return "\n".join(lines)


def _search_estimator(table: Any, spec: Any, size: tuple[int, int]) -> tuple[Estimator, ConfirmedLatency | None]:
    """The search's estimator, and on a table this machine measures (``cpu-ort`` here) its
    :class:`~jdnas_sdk.latency.ConfirmedLatency`: proposals are guessed (missing kernels
    interpolated, not measured one by one: proposals touch hundreds of new kernels) and each
    candidate is confirmed by measuring what its estimate lacks, so the latency a candidate is held
    to is a sum of measured entries. Elsewhere the table's own rule (modelled or interpolated)
    applies and there is nothing to confirm with."""
    estimator = Estimator(table, spec, size)
    if estimator.backend is None:
        return estimator, None
    confirmed = ConfirmedLatency(table, spec, size, estimator.backend)
    return confirmed.estimator, confirmed


def _metrics_of(
    base: Any, best: Any, base_arch: Arch, chosen: Student, spec: Any, size: tuple[int, int]
) -> dict[str, dict[str, Any]]:
    """The base's and the chosen student's rows (the student's cost with its own head settings)."""
    return {
        "base": _metrics(base, base_arch, spec, size),
        "student": _metrics(best, chosen.arch, chosen.spec(spec), size),
    }


def _metrics(candidate: Any, arch: Arch, spec: Any, size: tuple[int, int]) -> dict[str, Any]:
    cost = detector_cost(spec, arch, input_size=size)
    return {
        "ap": candidate.ap,
        "ap50": candidate.ap50,
        "ap75": candidate.ap75,
        "estimated_ms": candidate.latency_ms,
        "params": cost.total_params,
        "macs": cost.total_macs,
        "arch": str(arch),
        "heads": str(Heads.of(spec)),
    }


def _check_data(spec: Any, train_data: Any, select_data: Any, test_data: Any) -> None:
    for name, split, why in (
        ("select", select_data, "choices of the search are made on it"),
        ("test", test_data, "the final numbers are measured on it"),
        ("training", train_data, "students are fine-tuned on it"),
    ):
        if len(split) == 0:
            raise DataError(f"the {name} set is empty: {why}")
        if hasattr(split, "check_compatible"):  # a CocoDetection; a user's own training set is taken as it is
            split.check_compatible(spec)


def _runner(executor: str | Executor, parallel: int, progress: bool) -> Executor:
    """What trains the candidates: ``"local"`` (this process), ``"ray"`` (Ray tasks on a local Ray,
    or on the cluster of an initialised Ray) or an executor object such as
    ``RayExecutor(address="auto", num_cpus=4)``. Made before any work: without Ray, ``"ray"``
    fails here saying how to install it."""
    if parallel < 1:  # SearchConfig says so too, but only after the executor was made
        raise SearchError(f"parallel (candidates per round) must be >= 1, got {parallel}")
    return make_executor(executor, **({"progress": progress} if executor == "local" else {}))


def _config(budget: int | str, finetune_steps: int, seed: int, parallel: int, recipe: Recipe) -> SearchConfig:
    """The search's settings (a bad budget or round size is a SearchError before any work)."""
    candidates, wall_s = parse_budget(budget)
    return SearchConfig(
        candidates=candidates or 10_000,
        wall_s=wall_s,
        finetune_steps=finetune_steps,
        seed=seed,
        parallel=parallel,
        train=recipe.train_config(),
        kd=recipe.kd,
        bn_images=recipe.bn_images,
        max_step_share=recipe.max_step_share,
        teacher_gap=recipe.teacher_gap,
    )


def _teachers(
    teacher: str,
    method: str,
    pool: TeacherPool | str | Path | None,
    base: nn.Module,
    train_data: Any,
    work: Path,
    pool_steps: int,
    seed: int,
    progress: bool,
) -> tuple[TeacherPool | None, nn.Module | None]:
    """``(pool, teacher model)``: the pool (``teacher="pool"``: given, or trained in ``work``) and the
    lone teacher (the base; for the pipeline with a pool, the pool's largest teacher)."""
    teacher_pool = (
        _pool(pool, base, train_data, work / "pool.pt", pool_steps, seed, progress) if teacher == "pool" else None
    )
    teacher_model = base if teacher == "base" else None
    if method == "pipeline" and teacher_pool is not None:  # the pipeline distils from the largest teacher
        teacher_model = teacher_pool.sample(teacher_pool.largest(), calibration=train_data)
    return teacher_pool, teacher_model


def _target_ms(
    model: nn.Module, estimator: Estimator, base_arch: Arch, space: SearchSpace, latency: float | None, ms: float | None
) -> tuple[float, float]:
    """``(base_ms, target_ms)``; refuses a target below the space's smallest student."""
    table, spec, size = estimator.table, estimator.spec, estimator.input_size
    if estimator.backend is not None and fixed_key(spec, size) not in table:
        log.info("[compress] measuring the fixed part (pre/post-processing) of this detector on %s", table.target)
        estimator.calibrate_fixed(model)  # its own weights: a random-weight stand-in would mis-time NMS
    base_ms = estimator.total_ms(base_arch)
    if ms is not None:
        target_ms = float(ms)
    elif latency is not None and 0 < latency:
        target_ms = base_ms * float(latency)
    else:
        raise SearchError("give latency=RATIO (0 < RATIO) or ms=MILLISECONDS")
    floor = estimator.total_ms(space.smallest() if space.head_values() else smallest_arch(space))
    if target_ms < floor:
        fixed = estimator.estimate(base_arch).by_stage
        raise SearchError(
            f"{target_ms:.2f} ms is below anything the search space reaches on {table.target}: its smallest student "
            f"runs in {floor:.2f} ms (the base in {base_ms:.2f} ms, of which "
            f"{fixed['heads'] + fixed['fixed']:.2f} ms are "
            "heads and pre/post-processing that no backbone change removes). Ask for more latency, or a wider space"
        )
    return base_ms, target_ms


def _before_work(
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


@holds_workdir
def compress(
    model: nn.Module,
    *,
    target: str = "cpu-ort",
    data: str | Path | None = None,
    train_data: CocoDetection | None = None,
    select_data: CocoDetection | None = None,
    test_data: CocoDetection | None = None,
    val_data: CocoDetection | None = None,
    latency: float | None = 0.5,
    ms: float | None = None,
    budget: int | str = 12,
    workdir: str | Path = "runs/compress",
    method: str = "joint",
    pool: TeacherPool | str | Path | None = None,
    teacher: str = "pool",
    finetune_steps: int = 50,
    final_steps: int = 200,
    pool_steps: int = 100,
    recipe: Recipe | None = None,
    control: bool = True,
    arch_control: bool = False,
    input_size: tuple[int, int] | None = None,
    space: SearchSpace | None = None,
    seed: int = 0,
    measure: bool = True,
    progress: bool = True,
    parallel: int = 1,
    executor: str | Executor = "local",
    wait: bool | float = False,
) -> CompressResult:
    """Search a student of ``model`` that is faster on ``target`` and as accurate as possible.

    ``data``: a dataset folder whose ``train`` split trains, ``select`` split decides every choice
    and ``test`` split gives the final numbers only (a folder with only ``val`` has it cut into
    select/test halves by image id); or ``train_data``, ``select_data``, ``test_data`` in memory
    (``val_data``: the deprecated name of ``select_data``, cut in halves without ``test_data``).
    ``latency``: a fraction of the base's estimated latency, or ``ms`` a bound. ``budget``:
    candidates or a wall time (``"2h"``). ``method``: ``"joint"`` or ``"pipeline"``. ``teacher``:
    ``"pool"`` (``pool``, or one trained here for ``pool_steps``), ``"base"`` or ``"none"``. The
    chosen student then trains ``final_steps`` more steps with its teacher. ``recipe``: how
    candidates and the final student train (:class:`~jdnas_sdk.protocol.Recipe`); ``control`` /
    ``arch_control``: the controls of :mod:`jdnas_sdk.protocol` (the claim is made against the
    best of base and ``control``). On a modelled table (``v100-trt``) latencies are estimates only.
    ``executor`` trains rounds of ``parallel`` candidates. All lands in ``workdir``; a rerun
    resumes (``wait``: :func:`_before_work`).
    """
    began, recipe = time.monotonic(), recipe or Recipe()
    train_data, select_data, test_data = protocol_splits(data, train_data, select_data, test_data, val_data)
    spec, base_arch = describe(model)  # UnsupportedModelError for anything else, at once
    _check_data(spec, train_data, select_data, test_data)
    request = validate_request(
        latency=latency,
        ms=ms,
        budget=budget,
        method=method,
        teacher=teacher,
        finetune_steps=finetune_steps,
        final_steps=final_steps,
        pool_steps=pool_steps,
        seed=seed,
    )
    runner, config = _runner(executor, parallel, progress), _config(budget, finetune_steps, seed, parallel, recipe)
    table, size, space = _before_work(model, target, input_size, space, request, workdir, progress)
    estimator, confirmed = _search_estimator(table, spec, size)
    base_ms, target_ms = _target_ms(model, estimator, base_arch, space, latency, ms)
    (work := Path(workdir)).mkdir(parents=True, exist_ok=True)
    base = thaw(model)
    teacher_pool, teacher_model = _teachers(teacher, method, pool, base, train_data, work, pool_steps, seed, progress)
    log.info(
        "[compress] %s %s on %s%s: base %.2f ms estimated, target %.2f ms; %s search, budget %s",
        spec.family,
        base_arch,
        table.target,
        " (MODELLED table)" if table.modelled else "",
        base_ms,
        target_ms,
        method,
        budget,
    )
    common = dict(
        estimator=estimator,
        confirmed=confirmed,
        target_ms=target_ms,
        train_data=train_data,
        val_data=select_data,
        workdir=work / "search",
        space=space,
        config=config,
        executor=runner,
        progress=progress,
    )
    archive, best = _search(method, base, teacher, teacher_pool, teacher_model, target_ms, common)
    arch = (chosen := Student.parse(best.arch)).arch  # the backbone; ``chosen`` is the whole student
    metrics = _metrics_of(archive.candidates[0], best, base_arch, chosen, spec, size)
    student = _finish(
        work,
        best,
        method,
        teacher,
        teacher_pool,
        teacher_model,
        train_data,
        final_steps,
        config,
        progress,
        metrics["student"],
    )
    steps = lineage_steps(work / "search", archive.candidates, best.index) + final_steps
    metrics["student"].update(score(student, select_data, test_data), steps=steps)
    metrics["base"].update(score(model, select_data, test_data))
    _controls(work, metrics, chosen, steps, config, train_data, select_data, test_data, control, arch_control, progress)
    if measure and estimator.backend is not None:
        metrics["base"]["measured_ms"] = estimator.backend.measure_detector(model, size).median_ms
        metrics["student"]["measured_ms"] = estimator.backend.measure_detector(student, size).median_ms
    history = [c.to_json() for c in archive.candidates]
    _write_result(
        work,
        table,
        confirmed.measuring
        if confirmed is not None
        else estimator,  # the guess's caches may predate the search's measurements
        method,
        target_ms,
        size,
        best.index,
        metrics,
        history,
        began,
        recipe,
        (train_data, select_data, test_data),
        base_arch,
        chosen,
    )
    return _result(work, student, arch, base_arch, metrics, history, table)


def _write_result(
    work: Path,
    table: Any,
    estimator: Estimator,
    method: str,
    target_ms: float,
    size: tuple[int, int],
    chosen: int,
    metrics: dict[str, dict[str, Any]],
    history: list[dict[str, Any]],
    began: float,
    recipe: Recipe,
    splits: tuple[Any, Any, Any],
    base_arch: Arch,
    student: Student,
) -> None:
    """``result.json``: everything the report and a reader need (splits' sizes, recipe, the claim)."""
    atomic_write_json(
        work / "result.json",
        {
            "target": table.target,
            "modelled": table.modelled,
            "device": table.fingerprint.describe(),
            "table": describe_table(table),
            "method": method,
            "target_ms": target_ms,
            "input_size": list(size),
            "chosen": chosen,
            "metrics": metrics,
            "history": history,
            "wall_s": time.monotonic() - began,
            "recipe": recipe.to_json(),
            "splits": dict(zip(("train", "select", "test"), map(len, splits))),
            "claim": claim(metrics),
            "breakdown": {
                "base": estimator.estimate(base_arch).by_stage,
                "student": estimator.estimate(student).by_stage,
            },
        },
    )
    log.info("[compress] %s", claim(metrics))


def _search(
    method: str,
    base: nn.Module,
    teacher: str,
    teacher_pool: TeacherPool | None,
    teacher_model: nn.Module | None,
    target_ms: float,
    common: dict[str, Any],
) -> tuple[Any, Any]:
    """The search's archive and its best candidate within ``target_ms`` (a SearchError when none is)."""
    archive = (
        joint_search(base, pool=teacher_pool, base_teacher=teacher == "base", **common)
        if method == "joint"
        else pipeline_search(base, teacher=teacher_model, **common)
    )
    best = archive.best(target_ms)
    if best is None:
        raise SearchError(
            f"no candidate met {target_ms:.2f} ms within the budget ({len(archive.candidates) - 1} "
            "candidates); give a larger budget"
        )
    return archive, best


def _controls(
    work: Path,
    metrics: dict[str, dict[str, Any]],
    arch: Student,
    steps: int,
    config: SearchConfig,
    train_data: Any,
    select_data: Any,
    test_data: Any,
    control: bool,
    arch_control: bool,
    progress: bool,
) -> None:
    """The controls' rows in ``metrics``: the base trained ``steps`` more steps on the final
    schedule (``control``), and the student's arch cut from the base and trained so (``arch_control``)."""
    schedule = replace(config.train, seed=config.seed * 7919 + 999_983)  # the final training's schedule and seed
    base_file = work / "search" / "candidates" / "000.pt"
    for name, wanted, cut in (("control", control, None), ("arch_control", arch_control, arch)):
        if not wanted:
            continue
        log.info(
            "[compress] %s: the base%s trained %d more steps, no teacher",
            name,
            f" cut to {cut}" if cut is not None else "",
            steps,
        )
        model = train_control(
            work / f"{name}.pt", load_detector(base_file), train_data, steps, schedule, arch=cut, progress=progress
        )
        metrics[name] = {**score(model, select_data, test_data), "steps": steps, "arch": str(cut or "(the base's)")}


def _result(
    work: Path,
    student: nn.Module,
    arch: Arch,
    base_arch: Arch,
    metrics: dict[str, dict[str, Any]],
    history: list[dict[str, Any]],
    table: Any,
) -> CompressResult:
    """The student's file and the report written beside ``result.json``, and what compress returns."""
    student_file = work / "student.pt"
    save_detector(student, student_file, metadata={"base_arch": str(base_arch), "target": table.target})
    report = write_report(work)
    return CompressResult(
        student=student,
        arch=arch,
        metrics=metrics,
        history=history,
        workdir=work,
        report=report,
        student_file=student_file,
        target=table.target,
        modelled=table.modelled,
    )


def _finish(
    work: Path,
    best: Any,
    method: str,
    teacher: str,
    teacher_pool: TeacherPool | None,
    teacher_model: nn.Module | None,
    train_data: Any,
    final_steps: int,
    config: SearchConfig,
    progress: bool,
    row: dict[str, Any],
) -> nn.Module:
    """The chosen student, trained ``final_steps`` more steps (its row notes the search's AP and the
    final teacher), in eval mode."""
    if not final_steps:
        student = load_detector(work / "search" / best.file)
        student.eval()
        return student
    if method == "pipeline":  # the teacher its distillation stage used
        code = str(teacher_pool.largest()) if teacher_pool is not None else ("base" if teacher == "base" else None)
        teacher_of = lambda: teacher_model  # noqa: E731
    else:
        code = best.teacher
        teacher_of = lambda: _teacher_of(best, teacher_pool, teacher_model, train_data)  # noqa: E731
    student = _final(work, best, teacher_of, code, train_data, final_steps, config, progress)
    row.update(search_ap=best.ap, final_steps=final_steps, final_teacher=code)
    student.eval()
    return student


def _teacher_of(
    best: Any, pool: TeacherPool | None, teacher_model: nn.Module | None, data: CocoDetection
) -> nn.Module | None:
    """The teacher the joint search gave the chosen candidate."""
    if pool is not None and best.teacher:
        return pool.sample(TeacherConfig.parse(best.teacher), calibration=data)
    return teacher_model


def _final(
    work: Path,
    best: Any,
    teacher_of: Callable[[], nn.Module | None],
    code: str | None,
    data: CocoDetection,
    steps: int,
    config: SearchConfig,
    progress: bool,
) -> nn.Module:
    """The chosen candidate trained ``steps`` more steps with ``teacher_of()`` (checkpointed: a
    killed run resumes; a finished one is loaded, its teacher never built)."""
    done, wanted = work / "final.pt", {"candidate": best.index, "final_steps": steps}
    if done.is_file():
        if wanted.items() <= read_detector_file(done)["metadata"].items():
            return load_detector(done)
        done.unlink()  # made for another candidate or step count: train again
    student, teacher = load_detector(work / "search" / best.file), teacher_of()
    log.info(
        "[compress] training the chosen student (candidate %d) %d more steps %s",
        best.index,
        steps,
        f"with teacher {code}" if teacher is not None else "without a teacher",
    )
    finetune(
        student,
        data=data,
        steps=steps,
        teacher=teacher,
        kd=config.kd,
        config=replace(config.train, seed=config.seed * 7919 + 999_983),
        out=done,
        metadata=wanted,
        progress=progress,
    )
    return student


def teacher_pool(
    base: nn.Module, data: CocoDetection, *, path: str | Path, steps: int = 100, seed: int = 0, progress: bool = True
) -> TeacherPool:
    """The elastic teacher pool grown around ``base`` and trained once by progressive shrinking for
    ``steps`` steps, saved at ``path``; loaded from there when it exists, resumed when it was killed."""
    path = Path(path)
    if path.is_file():
        return TeacherPool.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    trained = TeacherPool.from_base(thaw(base), seed=seed)
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
        )
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
) -> TeacherPool:
    if isinstance(pool, TeacherPool):
        return pool
    if pool is not None:
        return TeacherPool.load(pool)
    return teacher_pool(base, data, path=path, steps=steps, seed=seed, progress=progress)
