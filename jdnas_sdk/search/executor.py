"""Where candidates are trained: in this process (``local``) or as Ray tasks (``ray``).

A search decides *what* to train (a :class:`CandidateJob`: parent file, morphism, teacher file,
steps, seeds); an executor decides *where*. Every job reads its inputs from files and writes its
student file (atomically) and a small result file beside it, so the same job gives the same
student wherever it runs, a retried job resumes from its checkpoint, and a search whose driver was
killed finds the candidates already finished on disk. A candidate that fails for a reason of its
own (a loss that became NaN, a morphism that does not apply) comes back as a failed
:class:`CandidateOutcome` with the reason; anything else (a bug, a lost node after all retries)
stops the search.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .._io import atomic_write_json, read_json
from .._ray import worker_id
from ..detectors import load_detector, read_detector_file, save_detector
from ..distill import KDConfig, finetune
from ..errors import ArchError, SearchError, TrainingError
from ..evaluate import evaluate
from ..morph import Action, morph, morph_to
from ..morph.refit import Refit, depth_refit_hook
from ..student import Student
from ..train import TrainConfig, recalibrate_bn, remove_training_files
from .archive import load_candidate

__all__ = ["CandidateJob", "CandidateOutcome", "Executor", "LocalExecutor", "finished", "run_candidate", "worker_id"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidateJob:
    """One candidate to train and evaluate. Paths are absolute (on storage every worker mounts).

    The student is the parent at ``parent_file`` morphed by ``actions`` (or to ``morph_to``, an
    arch code, or left as it is when both are empty), fine-tuned ``steps`` steps (0: not trained,
    for moves that change no weight) with the teacher
    at ``teacher_file`` (none: no distillation), its BatchNorm statistics recalibrated on the first
    ``bn_images`` training images (adaptive BN; 0: not), saved at ``out_file``, evaluated. With
    ``refit_images``, a tower conv beside those a depth step of the morphism removed is refit by
    least squares right after that step, on that many training images (:mod:`jdnas_sdk.morph.refit`;
    0: not)."""

    index: int
    parent_file: str
    out_file: str
    steps: int
    train: TrainConfig
    kd: KDConfig
    actions: tuple[Action, ...] = ()
    morph_to: str | None = None
    teacher_file: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    bn_images: int = 0
    refit_images: int = 0

    @property
    def result_file(self) -> Path:
        """The result written beside the student once it is evaluated."""
        return Path(self.out_file).with_suffix(".json")

    def key(self) -> dict[str, Any]:
        """What makes the job this job: a result on disk is reused only when its key is equal."""
        return {
            "index": self.index,
            "parent": Path(self.parent_file).name,
            "actions": [str(a) for a in self.actions],
            "morph_to": self.morph_to,
            "teacher": Path(self.teacher_file).name if self.teacher_file else None,
            "steps": self.steps,
            "seed": self.train.seed,
            **({"bn_images": self.bn_images} if self.bn_images else {}),
            **({"refit_images": self.refit_images} if self.refit_images else {}),
        }  # 0: as keys made before them


@dataclass(frozen=True)
class CandidateOutcome:
    """A job's result: COCO metrics, or ``error`` (the reason it failed); who ran it and when
    (``started``/``ended`` are Unix times, ``worker`` is ``host:pid``)."""

    index: int
    ap: float = 0.0
    ap50: float = 0.0
    ap75: float = 0.0
    error: str | None = None
    worker: str = ""
    started: float = 0.0
    ended: float = 0.0


def _outcome(raw: Any) -> CandidateOutcome:
    """A result file's outcome; ``ValueError`` naming what is not as :func:`run_candidate` writes it
    (an AP outside 0..1 or -1 (no ground truth), a time that is no time, another field)."""
    if not isinstance(raw, dict):
        raise ValueError(f"its outcome is a {type(raw).__name__}, not an object")
    try:
        outcome = CandidateOutcome(**raw)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc

    def number(value: Any, low: float, high: float) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high

    aps = (outcome.ap, outcome.ap50, outcome.ap75)
    if not all(number(ap, 0.0, 1.0) or ap == -1 for ap in aps):
        raise ValueError(f"an AP is outside 0..1: {aps}")
    times = (outcome.started, outcome.ended)
    if not isinstance(outcome.index, int) or not all(number(t, 0.0, 1e11) for t in times):
        raise ValueError("its index or times are malformed")
    if not isinstance(outcome.error, (str, type(None))) or not isinstance(outcome.worker, str):
        raise ValueError("its error or worker is malformed")
    return outcome


def finished(job: CandidateJob) -> CandidateOutcome | None:
    """The outcome of ``job`` already on disk (its student written and evaluated), else None: a
    result file that is missing, another job's, or damaged (logged) means the job runs again, never
    that a damaged score ranks a candidate."""
    if not job.result_file.exists():
        return None
    try:
        data = read_json(job.result_file)
        if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(job.key())):
            return None
        outcome = _outcome(data.get("outcome"))
    except (OSError, ValueError) as exc:
        logger.warning("[search] %s is damaged (%s); training candidate %d again", job.result_file, exc, job.index)
        return None
    return outcome if outcome.error is not None or Path(job.out_file).is_file() else None


def run_candidate(
    job: CandidateJob, train_data: Any, val_data: Any, *, threads: int | None = None, progress: bool = False
) -> CandidateOutcome:
    """Train and evaluate ``job`` here; the student file and the result file are written atomically.

    ``threads`` sets torch's intra-op threads for the job (None: as they are). Torch's random
    state is seeded from the job (weights a morphism creates are drawn from it), so the student does
    not depend on what the process ran before. With ``job.bn_images``, BatchNorm is recalibrated on
    that many *training* images before the student is scored: the validation (select) images only
    ever score, so no choice is tuned on statistics of the images that rank it. A TrainingError
    (NaN loss, ...) or ArchError (a morphism that does not apply) makes a failed outcome."""
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.time()
    torch.manual_seed(job.train.seed)  # new blocks and KD adapters start the same in any process
    try:
        parent = load_candidate(job.parent_file)
        refits: list[Refit] = []
        hook = depth_refit_hook(train_data, job.refit_images, refits) if job.refit_images else None
        if job.morph_to is not None:
            student = morph_to(parent, Student.parse(job.morph_to), after_step=hook)
        else:
            student = morph(parent, list(job.actions), after_step=hook) if job.actions else parent
        metadata = dict(job.metadata)
        if refits:
            metadata["refit"] = "; ".join(f"{r.conv} {r.error_before:.3g}->{r.error_after:.3g}" for r in refits)
        if job.steps:
            finetune(
                student,
                data=train_data,
                steps=job.steps,
                teacher=load_detector(job.teacher_file) if job.teacher_file else None,
                kd=job.kd,
                config=job.train,
                out=job.out_file,
                metadata=metadata,
                progress=progress,
            )
        else:  # a move that changes no weight (fewer proposals, another input size): scored as it is
            save_detector(student, job.out_file, metadata={**metadata, "steps": 0})
        if job.bn_images:  # score (and hand down) the student with statistics that match its weights
            recalibrate_bn(student, train_data, images=job.bn_images)
            save_detector(
                student,
                job.out_file,
                metadata={**read_detector_file(job.out_file)["metadata"], "bn_images": job.bn_images},
            )
        metrics = evaluate(student, val_data, progress=False)
        outcome = CandidateOutcome(
            job.index, metrics.ap, metrics.ap50, metrics.ap75, worker=worker_id(), started=started, ended=time.time()
        )
    except (TrainingError, ArchError) as exc:
        remove_training_files(job.out_file)  # a failed candidate is not trained again: its checkpoint is litter
        outcome = CandidateOutcome(
            job.index, error=f"{type(exc).__name__}: {exc}", worker=worker_id(), started=started, ended=time.time()
        )
    atomic_write_json(job.result_file, {"key": job.key(), "outcome": asdict(outcome)})
    return outcome


class Executor(Protocol):
    """Runs candidate jobs. ``start`` once per search (it may check the workers can see ``workdir``
    and the data), ``run`` per round (outcomes in completion order), ``close`` at the end."""

    name: str
    capacity: int  # candidates it trains at once (for the progress bar)

    def start(self, workdir: Path, train_data: Any, val_data: Any) -> None: ...

    def run(self, jobs: Sequence[CandidateJob]) -> Iterator[CandidateOutcome]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Candidates trained one after another in this process (the default). ``threads``: torch
    intra-op threads while a candidate trains (None: as they are); ``progress``: a step bar."""

    name = "local"
    capacity = 1  # candidates in flight at once

    def __init__(self, *, threads: int | None = None, progress: bool = False) -> None:
        if threads is not None and threads < 1:
            raise SearchError(f"threads must be >= 1, got {threads}")
        self.threads, self.progress = threads, progress
        self._data: tuple[Any, Any] | None = None

    def start(self, workdir: Path, train_data: Any, val_data: Any) -> None:
        self._data = (train_data, val_data)

    def run(self, jobs: Sequence[CandidateJob]) -> Iterator[CandidateOutcome]:
        if self._data is None:
            raise SearchError("LocalExecutor.run before start()")
        before = torch.get_num_threads()
        try:
            for job in jobs:
                yield run_candidate(job, *self._data, threads=self.threads, progress=self.progress)
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        self._data = None
