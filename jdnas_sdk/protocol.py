"""How compress is measured, and the recipe it trains by.

The protocol: the search and every choice in it see ``select`` only; ``test`` gives the final
numbers of the base, the student and its controls, once. The student is compared with the best
of the base and the *extra-steps control*: the base trained as many more steps as the student
received (the candidates of its lineage plus its final training), on the same schedule, without
distillation; otherwise a student that merely trained longer than its base looks like progress.
The *same-architecture control* (the student's architecture cut from the base by importance and
trained the same steps, without the search's lineage or a teacher) tells what the search and the
distillation added beyond the architecture.

The recipe (:class:`Recipe`) holds the choices that decide how much accuracy a student keeps,
each an option with a default from the literature: learning-rate rewinding, adaptive BatchNorm,
gradual morphism and the distillation losses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ._args import as_path
from .arch import Arch
from .data import CocoDetection, check_disjoint, check_given_splits, load_protocol_splits, split_val
from .detectors import load_detector, read_detector_file
from .distill import FINETUNE_DEFAULTS, KDConfig, finetune
from .errors import DataError, SearchError
from .evaluate import evaluate
from .morph import morph_to
from .student import Heads, Student
from .train import TrainConfig

__all__ = [
    "Recipe",
    "protocol_splits",
    "lineage_steps",
    "train_control",
    "score",
    "claim",
    "claim_gap",
    "size_hint",
    "base_hint",
    "hints",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How candidates and the final student train.

    ``lr_rewind`` (default): candidates and the final student train at ``base_lr``, the peak rate
    the base was trained at, with a linear warm-up and a cosine decay (Renda et al. 2020: rewinding
    the rate recovers pruned networks far better than fine-tuning at a small rate); False: a fifth of
    it, as before. ``base_lr`` is AdamW's 1e-3, the rate of this SDK's base recipe (``jdnas demo``,
    ``benchmarks/train_base.py``); give yours. ``bn_images``: adaptive BatchNorm before a candidate
    is scored, on that many *training* images (EagleEye, Li et al. 2020; training images because
    ``select`` must only score). ``max_step_share``: gradual morphism, the most a candidate may cut
    from its parent's latency (None: unbounded). ``teacher_gap``: with a teacher pool, each
    candidate's teacher is the pool's closest to that many times its compute (capacity gap; None:
    the parent's teacher mutated at random, as before). ``kd``: the distillation terms
    (:class:`~jdnas_sdk.distill.KDConfig`: normalised features, positive-only scores, a ramp).
    ``grow_teacher_steps``: with a pool trained here, its largest network first trains alone until
    its select AP stops improving (at most that many steps) and is frozen as the largest teacher
    (:func:`~jdnas_sdk.teachers.grow_teacher`); 0: progressive shrinking alone, as before.

    ``free_moves``: the joint search first scores, untrained, every student that differs from the
    base only in what changes no weight (R-CNN proposals kept at test time, input size); they are
    free to evaluate and, on small inputs, where much of the time is. ``search_lr_ratio``: candidates
    fine-tune at this fraction of the final student's rate (1: rewound too; measured on the
    benchmark's Faster R-CNN, a first move fine-tuned 30 steps scored 58.1 select AP at the peak
    rate, 53.0 at a tenth of it and 43.0 with adaptive BN alone). ``keep_better``: the final
    training, and the extra-steps control's, is kept only where ``select`` says it gained;
    otherwise the weights it started from are (as the base's cool-down is), applied to student and
    control alike. ``final_race``: the search's that many most accurate candidates within the target
    each train the first ``race_share`` of the final schedule, and the one ``select`` then ranks
    first finishes it (:mod:`jdnas_sdk.race`; 1: the search's best alone, as before).
    ``parent_reach``: a candidate over the search's current latency bound may still be a parent
    when cutting that share of its latency brings it within
    (:class:`~jdnas_sdk.search.joint.SearchConfig`; None: only those within, as before).
    ``refit_images``: a candidate that removed a head tower conv has the conv beside the gap refit
    by least squares on that many training images before it trains (:mod:`jdnas_sdk.morph.refit`;
    on the benchmark RetinaNet a tower cut scored 49.7 select AP untrained with it, 0.1 without,
    and 54.5 against 6.4 after 30 steps; 0: not, as before). ``checkpoint_every``: every training
    compress runs (candidates, race, final student, control) saves a checkpoint every that many steps
    (a kill loses at most that many; not a setting a resumed run must share)."""

    lr_rewind: bool = True
    base_lr: float = 1e-3
    bn_images: int = 200
    max_step_share: float | None = None
    teacher_gap: float | None = 2.0
    kd: KDConfig = field(default_factory=KDConfig)
    grow_teacher_steps: int = 0
    free_moves: bool = True
    search_lr_ratio: float = 1.0
    keep_better: bool = True
    final_race: int = 1
    race_share: float = 0.25
    parent_reach: float | None = None
    refit_images: int = 16
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if self.final_race < 1 or not 0 < self.race_share < 1:
            raise SearchError(
                f"recipe: final_race must be >= 1 and race_share in (0, 1), got {self.final_race}, {self.race_share}"
            )
        if self.base_lr <= 0 or self.bn_images < 0 or self.grow_teacher_steps < 0 or self.refit_images < 0:
            raise SearchError(
                f"recipe: base_lr must be > 0, bn_images, grow_teacher_steps and refit_images >= 0, got "
                f"{self.base_lr}, {self.bn_images}, {self.grow_teacher_steps}, {self.refit_images}"
            )
        if self.checkpoint_every < 1:
            raise SearchError(
                f"recipe: checkpoint_every (--checkpoint-every) must be >= 1 (steps between checkpoints), got "
                f"{self.checkpoint_every}"
            )
        if not 0 < self.search_lr_ratio <= 1:
            raise SearchError(f"recipe: search_lr_ratio must be in (0, 1], got {self.search_lr_ratio}")
        if self.teacher_gap is not None and self.teacher_gap <= 0:
            raise SearchError(f"recipe: teacher_gap must be > 0 or None, got {self.teacher_gap}")
        if self.max_step_share is not None and not 0 < self.max_step_share < 1:
            raise SearchError(f"recipe: max_step_share must be in (0, 1) or None, got {self.max_step_share}")
        if self.parent_reach is not None and not 0 < self.parent_reach < 1:
            raise SearchError(f"recipe: parent_reach must be in (0, 1) or None, got {self.parent_reach}")

    def train_config(self) -> TrainConfig:
        """The schedule of the final student and the extra-steps control."""
        lr = self.base_lr if self.lr_rewind else self.base_lr / 5
        return replace(FINETUNE_DEFAULTS, lr=lr, checkpoint_every=self.checkpoint_every)

    def search_train_config(self) -> TrainConfig:
        """The schedule of the search's candidates: the final one's at ``search_lr_ratio`` of its rate."""
        final = self.train_config()
        return replace(final, lr=final.lr * self.search_lr_ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "lr_rewind": self.lr_rewind,
            "base_lr": self.base_lr,
            "bn_images": self.bn_images,
            "max_step_share": self.max_step_share,
            "teacher_gap": self.teacher_gap,
            "kd": dict(self.kd.__dict__),
            "grow_teacher_steps": self.grow_teacher_steps,
            "free_moves": self.free_moves,
            "search_lr_ratio": self.search_lr_ratio,
            "keep_better": self.keep_better,
            "final_race": self.final_race,
            "race_share": self.race_share,
            "parent_reach": self.parent_reach,
            "refit_images": self.refit_images,
            "checkpoint_every": self.checkpoint_every,
        }


def protocol_splits(
    data: str | Path | None,
    train_data: Any,
    select_data: Any,
    test_data: Any,
    val_data: Any,
    *,
    with_masks: bool = False,
) -> tuple[Any, Any, Any]:
    """``(train, select, test)`` from a dataset folder or the datasets given (see :func:`~jdnas_sdk.compress.compress`);
    a DataError naming what is missing, or splits that share an image, before any work."""
    given = {"train_data": train_data, "select_data": select_data, "test_data": test_data, "val_data": val_data}
    if data is not None:
        if any(v is not None for v in given.values()):
            raise DataError(
                "give data=FOLDER (its train, select and test splits are used) or datasets in memory "
                "(train_data=, select_data=, test_data=), not both"
            )
        return load_protocol_splits(as_path(data, "data"), with_masks=with_masks)
    if val_data is not None:
        if select_data is not None:
            raise DataError("val_data= is the old name of select_data=; give one of them")
        log.warning("val_data= is deprecated: it is select_data=, the images every choice of the search is made on")
        if test_data is None:
            if not isinstance(val_data, CocoDetection):
                raise DataError("val_data without test_data: give test_data= (images for the final numbers only)")
            select_data, test_data = split_val(val_data)
            log.info(
                "no test_data: val_data (%d images) is cut in two by image id, %d select and %d test images",
                len(val_data),
                len(select_data),
                len(test_data),
            )
        else:
            select_data = val_data
    missing = [
        n for n, v in (("train_data", train_data), ("select_data", select_data), ("test_data", test_data)) if v is None
    ]
    if missing:
        raise DataError(
            f"compress needs data: pass data='FOLDER' (a dataset folder with train, select and test splits, "
            f"e.g. made by `jdnas data synth --out FOLDER`), or train_data=, select_data= and test_data= "
            f"(missing: {', '.join(missing)})"
        )
    names = ("val_data" if val_data is not None else "select_data", "test_data")  # as the caller named them
    check_given_splits(train_data, select_data, test_data, names=names)
    check_disjoint(train=train_data, select=select_data, test=test_data)
    return train_data, select_data, test_data


def lineage_steps(search_dir: Path, candidates: list[Any], index: int) -> int:
    """Training steps the candidate ``index`` received through its lineage (every ancestor's
    fine-tuning, read from the files' metadata; the base counts 0)."""
    total, at = 0, index
    while at is not None and candidates[at].parent is not None:
        meta = read_detector_file(search_dir / candidates[at].file)["metadata"]
        total += int(meta.get("steps", 0))
        at = candidates[at].parent
    return total


def train_control(
    out: Path,
    start: nn.Module,
    data: Any,
    steps: int,
    config: TrainConfig,
    *,
    arch: Arch | Student | None = None,
    progress: bool = True,
) -> nn.Module:
    """A control: ``start`` (cut to ``arch``, a backbone or a whole student, by importance when given) trained
    ``steps`` steps on
    ``config``'s schedule without a teacher, saved at ``out``; loaded when done, resumed when killed."""
    wanted = {"control_steps": steps, "control_arch": str(arch) if arch is not None else ""}
    if out.is_file():
        if wanted.items() <= read_detector_file(out)["metadata"].items():
            return load_detector(out).eval()
        out.unlink()
    model = morph_to(start, arch) if arch is not None else start
    if steps:
        finetune(model, data=data, steps=steps, config=config, out=out, metadata=wanted, progress=progress)
    return model.eval()


def score(model: nn.Module, select: Any, test: Any, *, select_ap: float | None = None) -> dict[str, float]:
    """``select_ap`` and ``test_ap`` (with AP50/AP75 on test as ``ap``/``ap50``/``ap75``: the final numbers).
    ``select_ap``: the model's select AP where it was already measured (not evaluated again)."""
    on_test = evaluate(model, test, progress=False)
    return {
        "select_ap": evaluate(model, select, progress=False).ap if select_ap is None else select_ap,
        "test_ap": on_test.ap,
        "ap": on_test.ap,
        "ap50": on_test.ap50,
        "ap75": on_test.ap75,
    }


def claim_gap(metrics: dict[str, dict[str, Any]]) -> tuple[str, float]:
    """``(rival, gap)``: the best of the base and the extra-steps control on test, and the
    student's test AP minus it, in AP points (what :func:`claim` states)."""
    rivals = {k: metrics[k] for k in ("base", "control") if k in metrics}
    best_name, best = max(rivals.items(), key=lambda kv: kv[1]["test_ap"])
    return best_name, 100 * (metrics["student"]["test_ap"] - best["test_ap"])


def claim(metrics: dict[str, dict[str, Any]]) -> str:
    """The one line a result stands on: the student's test AP against the best of the base and the
    extra-steps control, and its latency against the base's (measured when it was)."""
    student = metrics["student"]
    best_name, gap = claim_gap(metrics)
    best = metrics[best_name]
    kind = "measured" if "measured_ms" in student and "measured_ms" in metrics["base"] else "estimated"
    ratio = student[f"{kind}_ms"] / metrics["base"][f"{kind}_ms"]
    verdict = "at least as accurate as" if gap >= 0 else "LESS accurate than"
    rivals = "the best of base and control" if "control" in metrics else "the base (no control trained)"
    line = (
        f"claim: student test AP {100 * student['test_ap']:.1f} is {verdict} {rivals} "
        f"({best_name}, {100 * best['test_ap']:.1f}; {_points(gap)}) at {ratio:.2f}x the base's {kind} latency"
    )
    if max(100 * metrics[k]["test_ap"] for k in ("student", "base", "control") if k in metrics) < 0.05:
        line += " -- every test AP is 0, so the tie says nothing: train the base until it detects, then compress"
    return line


def _points(gap: float) -> str:
    """``gap`` in AP points to one decimal, or to two significant digits where that reads 0.0 but the
    gap is not 0 (a "LESS accurate" verdict beside "-0.0" reads as a contradiction)."""
    return f"{gap:+.1f}" if gap == 0 or abs(gap) >= 0.05 else f"{gap:+.2g}"


def size_hint(metrics: dict[str, dict[str, Any]]) -> str | None:
    """What to try when the claim fails with a student whose input is smaller than the base's (None
    otherwise): a smaller input caps what any student can reach. On the benchmark RetinaNet (256 px,
    select AP 74.2) the base itself, trained 1,600 more steps at 192 px, reached 69.4, the level of
    the 192 px students the search chose (an ad hoc probe: README, Measured, stop 30); with the input
    kept, the same search gave 71.6 (``benchmarks/results/epyc30/compress_synth_retina_sizes1.md``)."""
    codes = [metrics[k].get("heads") for k in ("student", "base")]
    if claim_gap(metrics)[1] >= 0 or not all(codes):
        return None
    student, base = (Heads.parse(code) for code in codes)
    if student.min_size >= base.min_size:
        return None
    return (
        f"hint: the student's input ({student.min_size} px) is smaller than the base's ({base.min_size} px), which "
        "caps the AP any student can reach; keep the base's input size with `jdnas compress --sizes 1.0` "
        "(compress(..., heads={'size': (1.0,)}))"
    )


#: Select AP points the extra-steps control may gain over the base before :func:`base_hint` calls
#: the base still improving.
STILL_IMPROVING = 1.0


def base_hint(metrics: dict[str, dict[str, Any]], *, train: TrainConfig | None = None) -> str | None:
    """What to try when the claim fails because the base was still improving (None otherwise): the
    control, the base trained as many more steps as the student, beat the base by at least
    :data:`STILL_IMPROVING` select AP. Then no student of that schedule is judged against a finished
    base: train the base first with rewound cycles as long as the student's schedule. On the benchmark
    RetinaNet, a base that three 1,600-step cycles had flattened gained 2.8-3.1 test AP from one
    4,800-step schedule (``benchmarks/results/epyc30/``, ``epyc31/``); the student matched the base.
    ``train``: the control's schedule (the default :class:`Recipe`'s), which the named command repeats."""
    control, base = metrics.get("control"), metrics["base"]
    if control is None or "select_ap" not in control or "select_ap" not in base or claim_gap(metrics)[1] >= 0:
        return None
    gain = 100 * (control["select_ap"] - base["select_ap"])
    if gain < STILL_IMPROVING:
        return None
    steps, t = metrics["student"].get("steps", 0), train or Recipe().train_config()
    schedule = f"--optimizer {t.optimizer} --lr {t.lr:g} --weight-decay {t.weight_decay:g} --warmup {t.warmup_steps}"
    return (
        f"hint: the base was still improving: the control (the base trained {steps} more steps) gained {gain:.1f} "
        "select AP over it, so the student was judged against a base trained longer than the one it started from; "
        f"train the base first until cycles of that length stop gaining (`jdnas train --model BASE --data DIR "
        f"--until-converged --steps 100 --cycle-steps {steps} {schedule} --out BASE2`: the control's schedule, "
        "the base's weights kept where training does not beat them), then compress BASE2"
    )


def hints(metrics: dict[str, dict[str, Any]], *, train: TrainConfig | None = None) -> list[str]:
    """Every hint for a failed claim (:func:`size_hint`, :func:`base_hint`); empty when it holds."""
    return [h for h in (size_hint(metrics), base_hint(metrics, train=train)) if h]
