"""``compress``: the SDK's one call, from a trained detector to a faster, trained student.

Everything that can be checked before training is checked first, so an impossible request fails
in seconds: the model must be a supported detector, the target must have a table, the train, select
and test sets must hold disjoint images, and the latency asked for must be reachable by the search
space at all (the fixed part of a detector, pre- and post-processing, is a floor no move removes).

This module keeps the run's order of steps; the set-up between the checks and the search lives in
:mod:`jdnas_sdk.prepare`, the steps after the search (final training, controls, ``result.json``,
the student's file and report) in :mod:`jdnas_sdk.finish`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from ._args import as_input_size, as_path
from ._lock import holds_workdir
from ._stopwatch import Stopwatch
from .arch import Arch, DetectorSpec
from .cost import detector_cost
from .data import CocoDetection
from .detectors import describe, thaw
from .errors import ArchError, SearchError
from .families import get_family
from .finish import final_is_control, finish_student, run_controls, write_outputs, write_result
from .latency import ConfirmedLatency, Estimator
from .lowering import detector_input
from .measured import measured_ms
from .morph import inherited
from .morph.refit import depth_refit_hook
from .preflight import parse_budget, smallest_arch, validate_request, warn_search_disk
from .prepare import (
    CompressRun,
    before_work,
    check_data,
    given_pool,
    given_teacher,
    make_runner,
    new_run,
    pick_teachers,
    search_config,
    target_latency,
    teacher_pool,
)
from .protocol import Recipe, claim, hints, lineage_steps, protocol_splits, score
from .race import final_race
from .search import Executor, joint_search, pipeline_search
from .search.files import candidate_files
from .space import SearchSpace
from .student import Heads, Student
from .teachers import TeacherPool

__all__ = ["CompressResult", "Recipe", "compress", "parse_budget", "smallest_arch", "teacher_pool"]

log = logging.getLogger(__name__)

#: The run's wall time over all its sittings (a killed run resumed counts both), beside result.json.
WALL_FILE = "wall.json"


@dataclass
class CompressResult:
    """The student (trained, eval mode), its arch, the metrics of base, student and controls (each
    with ``test_ap``, the final number, and ``select_ap``, what choices saw), the search history
    (every candidate) and where the report and files are. ``modelled`` is true when the target's
    table is MODELLED (roofline, e.g. ``v100-trt``): every latency in ``metrics`` is then an
    estimate from published peaks, nothing was measured on the target. ``recipe``: how the student
    and the control trained (what the summary's hints repeat)."""

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
    recipe: Recipe | None = None

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
            code = row.get("arch", "") + (f"@{row['heads']}" if row.get("heads") else "")  # the whole detector
            lines.append(
                f"{name:12s} test AP {100 * row['test_ap']:5.1f}  select AP {100 * row['select_ap']:5.1f}  "
                f"AP50 {100 * row['ap50']:5.1f}  {when}  {code}".rstrip()
            )
        lines.append(claim(self.metrics))
        lines += hints(self.metrics, train=self.recipe.train_config() if self.recipe else None)
        if self.modelled:
            lines.append(f"latency: MODELLED ({self.target} is a roofline table: estimates, not measurements)")
        lines.append(f"student: {self.student_file}; report: {self.report}")
        return "\n".join(lines)


def _search_estimator(
    table: Any, model: Any, size: tuple[int, int], progress: bool, train_data: Any = None, refit_images: int = 0
) -> tuple[Estimator, ConfirmedLatency | None]:
    """The search's estimator, and on a table this machine measures (``cpu-ort`` here) its
    :class:`~jdnas_sdk.latency.ConfirmedLatency`: proposals are guessed (missing kernels
    interpolated, not measured one by one: proposals touch hundreds of new kernels) and each
    candidate is confirmed by measuring what its estimate lacks, so the latency a candidate is held
    to is a sum of measured entries. Elsewhere the table's own rule (modelled or interpolated)
    applies and there is nothing to confirm with. A new head setting's fixed entry is timed on the base
    ``model`` morphed to the candidate as the search makes its candidates (a removed tower conv's
    neighbour refit on ``refit_images`` training images): post-processing's load follows the weights,
    and these are closer to a trained candidate's than random ones (on a trained RetinaNet they overstated
    trained students' NMS loads by a median 84%, random weights by 423%: benchmarks/fixed_entry_weights.py)."""
    spec = describe(model)[0]
    estimator = Estimator(table, spec, size)
    if estimator.backend is None:
        return estimator, None
    hook = depth_refit_hook(train_data, refit_images, []) if train_data is not None and refit_images else None
    measure_on = partial(inherited, model, after_step=hook)
    confirmed = ConfirmedLatency(table, spec, size, estimator.backend, progress=progress, measure_on=measure_on)
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
    """A row of the result: AP, latency, and the cost at the map the backbone sees, the ``size``
    image after the detector's own resize, padded to a multiple of 32 (a student with a smaller
    ``min_size`` sees less; a base off the multiple, e.g. 112 px, is counted at 128)."""
    cost = detector_cost(spec, arch, input_size=detector_input(spec, size)[2:])
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


def _space(
    space: SearchSpace | None, heads: Mapping[str, Sequence[float]] | None, arch: Arch, spec: DetectorSpec
) -> SearchSpace | None:
    """``space``, or the whole-detector space around the base with head grid ``heads`` (``None``:
    ``before_work`` makes the default one). Both given is an error: which one to follow is unclear."""
    if heads is None:
        return space
    if space is not None:
        raise ArchError("give compress either space= (a whole SearchSpace) or heads= (its head grid), not both")
    return SearchSpace(arch, spec=spec, heads=dict(heads))


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
    latency: float | None = None,
    ms: float | None = None,
    budget: int | str = 12,
    workdir: str | Path = "runs/compress",
    method: str = "joint",
    pool: TeacherPool | str | Path | None = None,
    teacher: str | Path = "pool",
    finetune_steps: int = 50,
    final_steps: int = 200,
    pool_steps: int = 100,
    recipe: Recipe | None = None,
    control: bool = True,
    arch_control: bool = False,
    input_size: tuple[int, int] | None = None,
    space: SearchSpace | None = None,
    heads: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    measure: bool = True,
    progress: bool = True,
    parallel: int = 1,
    executor: str | Executor = "local",
    wait: bool | float = False,
) -> CompressResult:
    """Search a student of ``model`` that is faster on ``target`` and as accurate as possible.

    ``data``: a dataset folder whose ``train`` split trains, ``select`` split decides every choice and ``test``
    split gives the final numbers only (a folder with only ``val`` has it cut into select/test halves by image
    id); or ``train_data``, ``select_data``, ``test_data`` in memory (``val_data``: the deprecated name of
    ``select_data``, cut in halves without ``test_data``). ``latency``: a fraction of the base's estimated
    latency (0.5 when neither is given), or ``ms`` a bound, not both. ``budget``: candidates or a wall time
    (``"2h"``). ``method``: ``"joint"`` or ``"pipeline"``. ``teacher``: ``"pool"`` (``pool``, or one trained
    here for ``pool_steps``), ``"base"``, ``"none"``, or a detector file of your own (same family and classes,
    e.g. a larger or longer-trained model) every student distils from. The chosen student then trains
    ``final_steps`` more steps with its teacher. ``recipe``: how candidates and the final student train
    (:class:`~jdnas_sdk.protocol.Recipe`); ``control`` / ``arch_control``: the controls of
    :mod:`jdnas_sdk.protocol` (the claim is made against the best of base and ``control``). ``heads``: the
    default space's head grid, per setting (e.g. ``{"size": (1.0,), "topk": (300, 1000)}``; the rest as
    :data:`~jdnas_sdk.space.DEFAULT_HEAD_GRID`), or ``space``, a whole :class:`~jdnas_sdk.space.SearchSpace` of
    your own. On a modelled table (``v100-trt``) latencies are estimates only. ``executor`` trains rounds of
    ``parallel`` candidates. All lands in ``workdir``; a rerun resumes (``wait``:
    :func:`~jdnas_sdk.prepare.before_work`).
    """
    began, recipe = time.monotonic(), recipe or Recipe()
    spec, base_arch = describe(model)  # UnsupportedModelError for anything else, at once
    input_size, workdir = as_input_size(input_size), as_path(workdir, "workdir")
    watch = Stopwatch(Path(workdir) / WALL_FILE, started=began)  # read only: a damaged one is refused here, first
    request = validate_request(  # the options, before any data is read
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
    space, config = _space(space, heads, base_arch, spec), search_config(budget, finetune_steps, seed, parallel, recipe)
    given = given_teacher(teacher, spec, pool=pool)  # the user's own teacher file, loaded and checked before any work
    pool = given_pool(pool, spec)  # a pool file, read now: a missing or foreign one is refused before any work
    masks = "masks" in get_family(spec.family).target_fields  # a Mask R-CNN trains on them
    train_data, select_data, test_data = protocol_splits(
        data, train_data, select_data, test_data, val_data, with_masks=masks
    )
    check_data(spec, train_data, select_data, test_data)
    runner = make_runner(executor, parallel, progress)
    table, size, space = before_work(model, target, input_size, space, request, workdir, progress)
    files = candidate_files(str(base_arch), space, config, method=method)
    warn_search_disk(workdir, model, files=files, parallel=parallel)  # every candidate's file is kept
    estimator, confirmed = _search_estimator(table, model, size, progress, train_data, recipe.refit_images)
    base_ms, target_ms = target_latency(model, estimator, base_arch, space, request.ratio, request.ms)
    (work := Path(workdir)).mkdir(parents=True, exist_ok=True)
    with watch:  # every sitting's time, a killed one's too
        base = thaw(model)
        run = new_run(work, method, teacher, given, (train_data, select_data, test_data), config, progress, recipe)
        run = pick_teachers(run, pool, base, pool_steps, seed, grow_steps=recipe.grow_teacher_steps)
        log.info(
            "[compress] %s %s on %s%s: base %.2f ms estimated, target %.2f ms; %s search, budget %s",
            *(spec.family, base_arch, table.target, " (MODELLED table)" if table.modelled else ""),
            *(base_ms, target_ms, method, budget),
        )
        archive, best = _search(run, base, estimator, confirmed, target_ms, space, runner)
        best, chosen, metrics, student = _finish(run, archive, best, target_ms, final_steps, (base_arch, spec, size))
        arch = chosen.arch  # the backbone; ``chosen`` is the whole student
        steps = lineage_steps(work / "search", archive.candidates, best.index) + final_steps
        known = metrics["student"].get("select_ap")  # measured by the search or the keep-better check
        metrics["student"].update(score(student, select_data, test_data, select_ap=known), steps=steps)
        metrics["base"].update(score(model, select_data, test_data, select_ap=archive.candidates[0].ap))
        same = control and final_is_control(run, best, metrics["student"], steps)
        run_controls(run, metrics, chosen, steps, control=control, arch_control=arch_control, same_as_final=same)
        if measure and estimator.backend is not None:  # recorded: a finished run called again reports the same
            timed = measured_ms(work, {"base": model, "student": student}, estimator.backend, size)  # interleaved
            metrics["base"]["measured_ms"], metrics["student"]["measured_ms"] = timed["base"], timed["student"]
        history = [c.to_json() for c in archive.candidates]
        if confirmed is not None:  # the guess's caches may predate what the search measured
            estimator = confirmed.measuring
        confirmation = None if confirmed is None else confirmed.to_json()
        watch.finish()  # its time is what it took until now: the finished run called again reports the same
        write_result(
            run, estimator, target_ms, best.index, metrics, history, watch, recipe, base_arch, chosen, confirmation
        )
    return _result(work, student, arch, base_arch, metrics, history, table, recipe)


def _finish(
    run: CompressRun, archive: Any, best: Any, target_ms: float, final_steps: int, base: tuple[Arch, Any, Any]
) -> tuple[Any, Student, dict[str, dict[str, Any]], nn.Module]:
    """After the search: the final race where the recipe asks for one, then the chosen student
    trained its final steps; ``(chosen candidate, its Student, the metrics rows, the student)``.
    ``base``: the base's backbone, spec and input size."""
    base_arch, spec, size = base
    race = final_race(run, archive, best, target_ms, final_steps)
    best = race.winner
    chosen = Student.parse(best.arch)
    metrics = _metrics_of(archive.candidates[0], best, base_arch, chosen, spec, size)
    if race.contenders:
        metrics["student"]["race"] = race.to_json()
    student = finish_student(run, best, final_steps, metrics["student"], started=race.checkpoint)
    return best, chosen, metrics, student


def _search(
    run: CompressRun,
    base: nn.Module,
    estimator: Estimator,
    confirmed: ConfirmedLatency | None,
    target_ms: float,
    space: SearchSpace,
    runner: Executor,
) -> tuple[Any, Any]:
    """The search's archive (in ``work/search``) and its best candidate within ``target_ms`` (a
    SearchError when none is); candidates confirmed by ``confirmed`` where given."""
    common = dict(
        estimator=estimator,
        confirmed=confirmed,
        target_ms=target_ms,
        train_data=run.train_data,
        val_data=run.select_data,
        workdir=run.work / "search",
        space=space,
        config=run.config,
        executor=runner,
        progress=run.progress,
    )
    archive = (
        joint_search(
            base, pool=run.teacher_pool, base_teacher=run.teacher == "base", teacher_file=run.teacher_file, **common
        )
        if run.method == "joint"
        else pipeline_search(
            base,
            teacher=run.teacher_model,
            teacher_name=run.teacher_file.name if run.teacher_file is not None else None,
            **common,
        )
    )
    best = archive.best(target_ms)
    if best is None:
        raise SearchError(
            f"no candidate met {target_ms:.2f} ms within the budget ({len(archive.candidates) - 1} "
            "candidates); give a larger budget"
        )
    return archive, best


def _result(
    work: Path,
    student: nn.Module,
    arch: Arch,
    base_arch: Arch,
    metrics: dict[str, dict[str, Any]],
    history: list[dict[str, Any]],
    table: Any,
    recipe: Recipe,
) -> CompressResult:
    """The student's file and the report written beside ``result.json``, and what compress returns."""
    student_file, report = write_outputs(work, student, base_arch, table)
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
        recipe=recipe,
    )
