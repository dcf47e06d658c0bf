"""The whole job on a fresh machine, as ``jdnas demo`` runs it: a synthetic dataset with disjoint
train, select and test splits, a small Faster R-CNN trained from scratch until its select AP stops
improving, compression for a target (choices on select), the base, the student and the
extra-steps control measured on test, the student's ONNX export and the report. Every step reuses
what an earlier run left in the work folder, so a killed demo resumes.

The settings fit about a quarter of an hour on two CPU cores: a base trained at most 300 steps,
stopped early once its select AP stops improving (on 2 cores it is usually still climbing at 300:
the control beside the student shows how much of any difference is just more training), a 0.5x
latency target in the whole-detector space at the base's input size (backbone, FPN, proposals, box
head; each candidate's latency confirmed by measuring the kernels it adds), a
short search ranked after adaptive BatchNorm, and a final training at the base's peak learning
rate (LR rewinding), with the base as the teacher where it converged (none where it is still
improving: the student would outgrow it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write_json, read_json
from ._lock import holds_workdir
from ._seed import seeded
from .arch import DetectorSpec
from .compress import CompressResult, compress
from .converge import ConvergeConfig, ConvergeResult, train_until_converged
from .data import load_protocol_splits, make_synthetic_dataset
from .deploy import ExportResult, export
from .detectors import build_detector, describe
from .errors import SearchError, WorkdirError
from .evaluate import EvalResult, evaluate
from .preflight import validate_request
from .space import DEFAULT_HEAD_GRID, SearchSpace
from .train import TrainConfig

__all__ = ["DemoResult", "run_demo", "base_state"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo's files are and what it measured."""

    data_dir: Path
    base_file: Path
    base_metrics: EvalResult
    compressed: CompressResult
    exported: ExportResult
    wall_s: float

    def files(self) -> str:
        """One line naming every file the demo wrote."""
        return (
            f"files: dataset {self.data_dir}/, base {self.base_file}, student {self.compressed.student_file}, "
            f"ONNX {self.exported.onnx_path}, report {self.compressed.report} (and report.md)"
        )


@holds_workdir  # one demo per workdir; a failed start leaves no folder
def run_demo(
    workdir: str | Path = "runs/demo",
    *,
    steps: int = 300,
    eval_every: int = 100,
    patience: int = 2,
    train_images: int = 600,
    select_images: int = 100,
    test_images: int = 100,
    size: int = 160,
    seed: int = 0,
    target: str = "cpu-ort",
    latency: float = 0.5,
    vary_input_size: bool = False,
    candidates: int = 3,
    finetune_steps: int = 20,
    final_steps: int = 100,
    teacher: str = "auto",
    pool_steps: int = 10,
    say: Callable[[str], None] = log.info,
    progress: bool = True,
) -> DemoResult:
    """Run the five steps in ``workdir`` and report each through ``say`` (the CLI passes ``print``);
    ``progress``: tqdm bars on the long steps. ``steps`` is the most the base trains; it stops
    earlier when ``patience`` evaluations on select (every ``eval_every`` steps) bring no gain.
    ``teacher="auto"``: the base when it converged, else none (a base still improving is a teacher
    the student outgrows during its own training; see the README's "Measured"; one whose select AP
    stayed 0 has not started to detect).

    The search space is the whole detector (backbone, FPN, proposals, box head) at the base's input
    size; ``vary_input_size`` adds the input size. It is off here for time alone: each input size a
    candidate tries is about 60 new kernels and an end-to-end run for this machine's table, some
    30 s to measure on a fresh machine, and a search tries several (``jdnas profile`` measures them
    ahead, after which they cost nothing)."""
    settings = {k: v for k, v in locals().items() if k not in ("workdir", "say", "progress")}  # the options only
    _check_options(settings)  # before the dataset is written: compress would refuse them only after the base
    work = Path(workdir)
    _same_settings(work, settings)  # before any work: a folder of another demo is refused, not half-reused
    began = time.perf_counter()
    say = _timed(say, began)  # each step's line says when it began: where the quarter hour goes
    data_dir = work / "data"
    _dataset(data_dir, train_images, select_images, test_images, size, seed, say, progress)
    train_set, select_set, test_set = load_protocol_splits(data_dir)
    model, curve, converged = _base(
        work / "base.pt", train_set, select_set, size, seed, steps, eval_every, patience, say, progress
    )
    teacher = _auto_teacher(teacher, converged, say)
    say("[3/5] evaluating the base on the test split (COCO mAP, pycocotools)")
    metrics = evaluate(model, test_set, progress=progress)
    atomic_write_json(work / "base_metrics.json", {**metrics.to_dict(), "select_curve": curve})
    say(f"      base: {metrics.summary()}")
    say(
        f"[4/5] compressing for {target}: joint search, {candidates} candidates x {finetune_steps} fine-tuning steps "
        f"ranked on select, teacher: {teacher}, latency {latency}x the base, then {final_steps} more steps for the "
        "chosen student at the base's peak rate; the control: the base trained as many more steps"
    )
    spec, base_arch = describe(model)
    grid = {**DEFAULT_HEAD_GRID, **({} if vary_input_size else {"size": (1.0,)})}  # one size: the base's
    result = compress(
        model,
        target=target,
        space=SearchSpace(base_arch, spec=spec, heads=grid),
        train_data=train_set,
        select_data=select_set,
        test_data=test_set,
        latency=latency,
        budget=candidates,
        workdir=work / "compress",
        finetune_steps=finetune_steps,
        final_steps=final_steps,
        teacher=teacher,
        pool_steps=pool_steps,
        seed=seed,
        progress=progress,
    )
    say(result.summary())
    say("[5/5] exporting the student to ONNX (pre- and post-processing included)")
    exported = export(result.student, work / "student.onnx")
    say(f"      {exported.summary()}")
    return DemoResult(
        data_dir=data_dir,
        base_file=work / "base.pt",
        base_metrics=metrics,
        compressed=result,
        exported=exported,
        wall_s=time.perf_counter() - began,
    )


#: The demo's options, recorded in its work folder at the start of the first run.
SETTINGS_FILE = "demo_settings.json"


def _same_settings(work: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``work`` (a new or empty folder), or check that the run there used
    them: a killed demo resumes, while a folder from a demo with other options (or from a version
    before the record) would fail late, minutes in, on its dataset, base or search."""
    record = work / SETTINGS_FILE
    if record.is_file():
        try:
            before = read_json(record)
        except (OSError, ValueError) as exc:
            raise WorkdirError(f"{record} is unreadable ({exc}); remove {work} or pass another --workdir") from exc
        if not isinstance(before, dict):
            raise WorkdirError(
                f"{record} holds {type(before).__name__}, not the demo's settings; remove {work} or pass another "
                "--workdir"
            )
        changed = sorted(k for k in settings.keys() | before.keys() if before.get(k) != settings.get(k))
        if changed:
            diff = ", ".join(f"{k} {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise WorkdirError(
                f"{work} holds a demo run with other settings ({diff}); pass another --workdir, or remove {work} "
                "to start over"
            )
        return
    if any(p for p in work.glob("*") if not p.name.endswith(".lock")):
        raise WorkdirError(
            f"{work} holds files but no {SETTINGS_FILE}: a demo of an earlier version, or another run's folder; "
            f"pass another --workdir, or remove {work} to start over"
        )
    atomic_write_json(record, settings)


def _dataset(
    data_dir: Path,
    train: int,
    select: int,
    test: int,
    size: int,
    seed: int,
    say: Callable[[str], None],
    progress: bool,
) -> None:
    """Step 1: the synthetic dataset with disjoint train, select and test splits (reused when there)."""
    if (data_dir / "annotations" / "instances_test.json").is_file():
        say(f"[1/5] reusing the synthetic dataset in {data_dir}")
        return
    say(
        f"[1/5] making a synthetic COCO dataset in {data_dir}: {train} train, {select} select "
        f"(choices), {test} test (final numbers) images"
    )
    make_synthetic_dataset(
        data_dir, train=train, val=0, select=select, test=test, size=size, seed=seed, progress=progress
    )


def _check_options(options: dict[str, Any]) -> None:
    """The demo's options, checked before any work: its own counts, then what compress will be asked
    (compress checks them itself, but only after the dataset is written and the base trained)."""
    low = [
        f"{name} {options[name]!r}"
        for name in ("steps", "eval_every", "patience", "train_images", "select_images", "test_images")
        if not isinstance(options[name], int) or isinstance(options[name], bool) or options[name] < 1
    ]
    if low:
        raise SearchError(f"the demo needs at least 1 of each: got {', '.join(low)}")
    if options["teacher"] not in ("auto", "pool", "base", "none"):
        raise SearchError(f"teacher must be auto, pool, base or none, got {options['teacher']!r}")
    validate_request(
        latency=options["latency"],
        ms=None,
        budget=options["candidates"],
        teacher="none" if options["teacher"] == "auto" else options["teacher"],
        finetune_steps=options["finetune_steps"],
        final_steps=options["final_steps"],
        pool_steps=options["pool_steps"],
        seed=options["seed"],
    )


def _auto_teacher(teacher: str, converged: bool, say: Callable[[str], None]) -> str:
    """``teacher``, with ``auto`` resolved: the base where it converged, else none. A base still
    climbing is a teacher the student outgrows during its own training, and pulls it down."""
    if teacher != "auto":
        return teacher
    if converged:
        say("      teacher: the base (converged)")
        return "base"
    say(
        "      teacher: none (the base has not converged; in the run that set this default, a student distilled "
        "from a base still improving ended 1.9 test AP below the extra-steps control; --teacher base distils anyway)"
    )
    return "none"


def _timed(say: Callable[[str], None], began: float) -> Callable[[str], None]:
    """``say`` with the time since ``began`` after each step's line (``[k/5] ...``)."""

    def timed(line: str) -> None:
        if line.startswith("["):
            spent = int(time.perf_counter() - began)
            line = f"{line}  ({spent // 60}:{spent % 60:02d} in)"
        say(line)

    return timed


def _base(
    out: Path,
    train_set: Any,
    select_set: Any,
    size: int,
    seed: int,
    steps: int,
    eval_every: int,
    patience: int,
    say: Callable[[str], None],
    progress: bool,
) -> tuple[Any, list[dict[str, float]], bool]:
    """The base detector trained until its select AP stops improving (reused when done), and its curve."""
    spec = DetectorSpec(
        family="fasterrcnn",
        backbone="resnet18",
        num_classes=train_set.num_classes,
        min_size=size,
        max_size=size,
        fpn_channels=64,
        representation_size=256,
        anchor_sizes=(16, 32, 64, 128, 256),
        category_ids=train_set.category_ids,
        class_names=train_set.class_names,
    )
    net = "Faster R-CNN (ResNet-18 FPN)"
    verb = f"reusing the small {net} trained" if out.is_file() else f"training a small {net}"
    say(
        f"[2/5] {verb} from scratch (AdamW 1e-3) until its select AP stops improving (evaluated every {eval_every} "
        f"steps, patience {patience}, at most {steps} steps)"
    )
    with seeded(seed):  # same seed, same base, in any process
        model = build_detector(spec)
    config = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05, seed=seed)
    converge = ConvergeConfig(eval_every=eval_every, patience=patience, max_steps=max(steps, eval_every))
    result = train_until_converged(
        model, train_set, select_set, out, config=config, converge=converge, progress=progress
    )
    state, converged = base_state(result)
    points = ", ".join(f"{p['step']}: {100 * p['select_ap']:.1f}" for p in result.curve)
    say(f"      select AP by step: {points}{state}")
    return model, result.curve, converged


def base_state(result: ConvergeResult) -> tuple[str, bool]:
    """How the base's training ended, as the demo says it, and whether it converged (a teacher). A
    curve flat at 0 stops by the same rule, but that base has not started to detect: no teacher."""
    if result.converged and result.best_ap <= 0:
        return " (flat at 0: it detects nothing yet)", False
    return (" (converged)", True) if result.converged else (" (stopped at the step limit)", False)
