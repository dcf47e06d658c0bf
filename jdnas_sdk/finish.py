"""What ``compress`` does after its search: the chosen student finished, checked and written out.

:func:`finish_student` trains the chosen candidate ``final_steps`` more steps with its teacher
(checkpointed: a killed run resumes, a finished one is loaded); :func:`run_controls` trains the
controls the claim is made against (the base given as many more steps, and the student's arch cut
from the base); :func:`write_result` writes ``result.json`` with everything the report and a reader
need; :func:`write_outputs` saves the student's file and writes the report beside it. Kept apart
from :mod:`jdnas_sdk.compress` so that module reads as the run's order of steps.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_path, atomic_write_json, read_json
from ._stopwatch import Stopwatch
from .arch import Arch
from .data import CocoDetection
from .detectors import load_detector, read_detector_file, save_detector
from .distill import finetune
from .errors import DetectorFileError
from .evaluate import evaluate
from .latency import Estimator
from .latency.local import describe_table
from .prepare import CompressRun
from .protocol import Recipe, claim, hints, score, train_control
from .report import write_report
from .search import SearchConfig, load_candidate
from .student import Student
from .teachers import TeacherConfig, TeacherPool
from .train import TrainConfig, checkpoint_path, wall_path

__all__ = [
    "INFERENCE_ONLY",
    "finish_student",
    "split_images",
    "final_teacher",
    "final_is_control",
    "final_schedule",
    "run_controls",
    "write_result",
    "write_outputs",
]

log = logging.getLogger(__name__)


def finish_student(
    run: CompressRun, best: Any, final_steps: int, row: dict[str, Any], *, started: Path | None = None
) -> nn.Module:
    """The chosen student, trained ``final_steps`` more steps (its row notes the search's AP and the
    final teacher, and its select AP where that was measured here or by the search), in eval mode.
    ``started``: a checkpoint of this student's first steps of the same final schedule (the final
    race's, :mod:`jdnas_sdk.race`); training goes on from it."""
    work = run.work
    if not final_steps:
        student = load_candidate(work / "search" / best.file)
        student.eval()
        row.update(select_ap=best.ap)  # the search measured it
        return student
    code, teacher_of = final_teacher(run, best)
    student = _final(
        work, best, teacher_of, code, run.train_data, final_steps, run.config, run.recipe, run.progress, started
    )
    row.update(search_ap=best.ap, final_steps=final_steps, final_teacher=code)
    if run.recipe.keep_better:
        trained_ap = evaluate(student, run.select_data, progress=False).ap
        kept = "trained" if trained_ap >= best.ap else "start"
        row.update(final_kept=kept, final_select_ap=trained_ap, select_ap=max(trained_ap, best.ap))
        log.info(
            "[compress] final training: select AP %.1f -> %.1f; kept the %s weights",
            100 * best.ap,
            100 * trained_ap,
            kept,
        )
        if kept == "start":
            student = load_candidate(work / "search" / best.file)
    student.eval()
    return student


def final_teacher(run: CompressRun, candidate: Any) -> tuple[str | None, Callable[[], nn.Module | None]]:
    """The teacher ``candidate`` trains its final steps with: its code (None: no teacher) and a function
    building it (the pipeline's distillation teacher; the joint search's choice for the candidate)."""
    if run.method == "pipeline":  # the teacher its distillation stage used
        pool = run.teacher_pool
        code = str(pool.largest()) if pool is not None else (run.teacher if run.teacher in ("base", "given") else None)
        return code, lambda: run.teacher_model
    return candidate.teacher, lambda: _teacher_of(candidate, run.teacher_pool, run.teacher_model, run.train_data)


def final_schedule(recipe: Recipe, config: SearchConfig) -> TrainConfig:
    """The final student's and the extra-steps control's schedule: the recipe's final rate, one seed."""
    return replace(recipe.train_config(), seed=config.seed * 7919 + 999_983)


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
    recipe: Recipe,
    progress: bool,
    started: Path | None = None,
) -> nn.Module:
    """The chosen candidate trained ``steps`` more steps with ``teacher_of()`` on the recipe's final
    schedule (checkpointed: a killed run resumes; a finished one is loaded, its teacher never built),
    going on from ``started`` (the race's checkpoint of its first steps) where given."""
    done, wanted = work / "final.pt", {"candidate": best.index, "final_steps": steps}
    if done.is_file():
        if _is_final_of(done, work / "search" / best.file, wanted):
            return load_detector(done)
        done.unlink()  # made for another candidate, step count or detector, or damaged: train again
    _own_checkpoint(done, wanted, started)
    student, teacher = load_candidate(work / "search" / best.file), teacher_of()
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
        config=final_schedule(recipe, config),
        out=done,
        metadata=wanted,
        progress=progress,
    )
    _owner(checkpoint_path(done)).unlink(missing_ok=True)
    if started is not None:
        started.unlink(missing_ok=True)  # the race's checkpoint has served
    return student


def _owner(checkpoint: Path) -> Path:
    """Where the candidate and step count a final checkpoint belongs to are written."""
    return checkpoint.with_name(checkpoint.name + ".json")


def _is_final_of(done: Path, chosen_file: Path, wanted: dict[str, Any]) -> bool:
    """Whether ``done`` is the chosen candidate's final training as ``wanted`` asks (its metadata, and its
    detector the candidate's own); if not, the warning says what it holds instead."""
    chosen = read_detector_file(chosen_file)
    try:
        found = read_detector_file(done)
    except DetectorFileError as exc:
        log.warning("[compress] %s; training the chosen student's final steps again", exc)
        return False
    had = found["metadata"]
    shaped = (found["spec"], found.get("arch")) == (chosen["spec"], chosen.get("arch"))  # not another detector's
    if wanted.items() <= had.items() and shaped:
        return True
    log.warning(
        "[compress] %s holds %s trained %s final steps; this run asks candidate %d (%s), %d steps: training it again",
        done,
        f"candidate {had.get('candidate')}" if shaped else f"another detector ({found.get('student')})",
        had.get("final_steps"),
        wanted["candidate"],
        chosen.get("student"),
        wanted["final_steps"],
    )
    return False


def _own_checkpoint(done: Path, wanted: dict[str, Any], started: Path | None) -> None:
    """Make the checkpoint of the final training that writes ``done`` ``wanted``'s: one another
    candidate or step count left (a run killed before it chose again), or one nothing says whose it
    is, is removed with its time file, since resuming it would train the wrong weights; then, if none
    is left, the race's ``started`` seeds it."""
    checkpoint = checkpoint_path(done)
    owner = _owner(checkpoint)
    try:
        mine = read_json(owner) == wanted
    except (OSError, ValueError):
        mine = False
    if checkpoint.is_file() and not mine:
        log.info("[compress] removing %s: a checkpoint of another final training", checkpoint)
        checkpoint.unlink()
    if not mine:  # nor is the time that training spent this one's
        wall_path(done).unlink(missing_ok=True)
    if not checkpoint.is_file() and started is not None:
        if started.is_file():
            with atomic_path(checkpoint) as partial:  # whole or absent
                shutil.copyfile(started, partial)
        else:
            log.warning("[compress] the race's checkpoint %s is gone; the final training starts over", started)
    atomic_write_json(owner, wanted)


#: Detector settings only inference reads (training never looks at them; one-stage ``topk_candidates``
#: is read by ``postprocess_detections`` alone)
INFERENCE_ONLY = frozenset(
    {
        "rpn_pre_nms_top_n_test",
        "rpn_post_nms_top_n_test",
        "score_thresh",
        "nms_thresh",
        "detections_per_img",
        "topk_candidates",
    }
)


def final_is_control(run: CompressRun, best: Any, row: dict[str, Any], steps: int) -> bool:
    """Whether the extra-steps control would repeat the student's final training step for step: the
    chosen candidate holds the base's weights and differs from it only in settings that inference
    alone reads (a free move to fewer proposals), and it was trained all ``steps`` with no teacher,
    on the schedule the control uses. Every draw of training is seeded by (seed, step), so the
    control's weights are then the final student's: trained once, scored under each one's settings."""
    if row.get("final_teacher") is not None or row.get("final_steps") != steps or not (run.work / "final.pt").is_file():
        return False
    start, base = (read_detector_file(run.work / "search" / f) for f in (best.file, "candidates/000.pt"))
    differ = {k for k, v in base["spec"].items() if start["spec"].get(k) != v}
    weights, own = base["state_dict"], start["state_dict"]
    return (
        differ <= INFERENCE_ONLY
        and own.keys() == weights.keys()
        and all(torch.equal(own[k], weights[k]) for k in weights)
    )


def run_controls(
    run: CompressRun,
    metrics: dict[str, dict[str, Any]],
    arch: Student,
    steps: int,
    *,
    control: bool,
    arch_control: bool,
    same_as_final: bool = False,
) -> None:
    """The controls' rows in ``metrics``: the base trained ``steps`` more steps on the final
    schedule (``control``), and the student's arch cut from the base and trained so (``arch_control``).
    With the recipe's ``keep_better``, the extra-steps control is the base where its training did
    not gain on select, as the student's final training is judged (``metrics["base"]`` scored first).
    ``same_as_final`` (:func:`final_is_control`): the control takes the final student's trained
    weights on the base's settings instead of training them again (its row says ``trained_as``)."""
    work = run.work
    schedule = final_schedule(run.recipe, run.config)
    base_file = work / "search" / "candidates" / "000.pt"
    if control and same_as_final and not (work / "control.pt").is_file():
        model = load_detector(base_file)
        model.load_state_dict(load_detector(work / "final.pt").state_dict())
        save_detector(
            model, work / "control.pt", metadata={"control_steps": steps, "control_arch": "", "trained_as": "final"}
        )
        log.info("[compress] control: the final student's training, step for step (the base's settings, its weights)")
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
            work / f"{name}.pt",
            load_detector(base_file),
            run.train_data,
            steps,
            schedule,
            arch=cut,
            progress=run.progress,
        )
        metrics[name] = {
            **score(model, run.select_data, run.test_data),
            "steps": steps,
            "arch": str(cut or "(the base's)"),
            **({"trained_as": "final"} if cut is None and same_as_final else {}),
        }
        if cut is None and run.recipe.keep_better and "select_ap" in metrics.get("base", {}):
            trained = metrics[name]["select_ap"]
            gained = trained >= metrics["base"]["select_ap"]
            if not gained:  # its training did not gain: the control is the base
                keys = ("select_ap", "test_ap", "ap", "ap50", "ap75")
                metrics[name].update({k: metrics["base"][k] for k in keys if k in metrics["base"]})
            metrics[name].update(kept="trained" if gained else "start", trained_select_ap=trained)


def split_images(splits: tuple[Any, Any, Any]) -> dict[str, list[str] | None]:
    """Each split's images (train, select, test) as files relative to the folder the splits share (a
    COCO folder's root: ``images/test/...``): what a reader checks the held-out claim with (no file
    in two splits; loading enforced it). Not image ids: a dataset's split files number their images
    from 1 each, so ids repeat across splits while the pictures differ. ``None`` for a split that is
    not a COCO-format dataset."""
    files = {  # real paths, as the loader resolves images (a relative or linked dataset folder included)
        name: [os.path.realpath(f) for f in data.image_files()] if hasattr(data, "image_files") else None
        for name, data in zip(("train", "select", "test"), splits)
    }
    folders = [os.path.dirname(f) for names in files.values() if names for f in names]
    folders += [os.path.dirname(os.path.realpath(d.annotation_file)) for d in splits if hasattr(d, "annotation_file")]
    root = os.path.commonpath(folders) if folders else ""  # a COCO folder's: images/... beside annotations/
    return {name: None if names is None else [os.path.relpath(f, root) for f in names] for name, names in files.items()}


def write_result(
    run: CompressRun,
    estimator: Estimator,
    target_ms: float,
    chosen: int,
    metrics: dict[str, dict[str, Any]],
    history: list[dict[str, Any]],
    watch: Stopwatch,
    recipe: Recipe,
    base_arch: Arch,
    student: Student,
    confirmation: dict[str, Any] | None = None,
) -> None:
    """``result.json``: everything the report and a reader need (splits' sizes, recipe, the claim,
    and, where the search confirmed candidates by measuring, how much that measured). The table
    and input size are ``estimator``'s."""
    splits = (run.train_data, run.select_data, run.test_data)
    table, size = estimator.table, estimator.input_size
    atomic_write_json(
        run.work / "result.json",
        {
            "target": table.target,
            "modelled": table.modelled,
            "device": table.fingerprint.describe(),
            "table": describe_table(table),
            "method": run.method,
            "teacher": run.teacher,
            "teacher_file": None if run.teacher_file is None else str(run.teacher_file),
            "target_ms": target_ms,
            "input_size": list(size),
            "chosen": chosen,
            "metrics": metrics,
            "history": history,
            "wall_s": watch.elapsed(),  # every sitting of this run until it finished, a killed one's included
            "sittings": watch.total_sittings,
            "recipe": recipe.to_json(),
            "splits": dict(zip(("train", "select", "test"), map(len, splits))),
            "split_images": split_images(splits),
            "claim": claim(metrics),
            "breakdown": {
                "base": estimator.estimate(base_arch).by_stage,
                "student": estimator.estimate(student).by_stage,
            },
            "latency_confirmation": confirmation,
        },
    )
    log.info("[compress] %s", claim(metrics))
    for hint in hints(metrics, train=recipe.train_config()):
        log.warning("[compress] %s", hint)


def write_outputs(work: Path, student: nn.Module, base_arch: Arch, table: Any) -> tuple[Path, Path]:
    """``(student file, report)``: the student saved as ``student.pt`` and the report written
    beside ``result.json`` (which must be written first: the report reads it)."""
    student_file = work / "student.pt"
    save_detector(student, student_file, metadata={"base_arch": str(base_arch), "target": table.target})
    return student_file, write_report(work)
