"""Detection distillation: feature imitation on every FPN level, class-score distillation, and
(optional) box-delta distillation on positive rows.

:class:`Distiller` plugs into the training loop's ``extra_losses`` hook. It watches the student's
forward pass through hooks (the transformed images and targets, the FPN features, the class
logits and box deltas, and for R-CNNs the sampled proposals), runs the teacher on the same transformed images
without gradients, and returns the KD terms. It is an ``nn.Module`` because its 1x1 adapters
(where student and teacher FPN widths differ) are trained with the student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..detectors.inspect import spec_of
from ..errors import TrainingError
from ..families import family_of
from .positives import POSITIVE_RULES, positive_labels

__all__ = [
    "KDConfig",
    "SAME_AS_STUDENT",
    "Distiller",
    "feature_kd",
    "normalized_feature_kd",
    "channel_normalize",
    "sigmoid_kd",
    "softmax_kd",
    "box_kd",
    "foreground_masks",
    "identity_adapter",
]


#: The spec fields a teacher must share with its student (:class:`Distiller` refuses otherwise)
SAME_AS_STUDENT = ("family", "num_classes", "returned_layers")


@dataclass(frozen=True)
class KDConfig:
    """Weights and form of the distillation terms.

    ``normalize`` (default): PKD-style feature imitation, student and teacher features each
    normalised to zero mean and unit variance per channel (per image, over positions) before the
    squared error, so the student copies the teacher's pattern, not its scale; through a 1x1
    adapter initialised as the identity (it starts as "copy your own features"). False: the
    earlier relative squared error, with an adapter only where the FPN widths differ.
    ``foreground`` > 0 adds that much extra weight to positions inside ground-truth boxes.
    ``ramp``: the fraction of training over which the KD weights rise linearly from 0 to their
    value (a morphed student first recovers on its own labels, then imitates).
    ``positives_only`` (default): class scores are distilled on positive rows only, by the family's
    own assignment (:mod:`.positives`): proposals (R-CNN) or anchors (RetinaNet) whose box overlaps a
    ground-truth box by IoU >= ``positive_iou``, FCOS's centre-sampled points (``positive_iou``
    unused); background positions, the vast majority, carry little the labels do not already say.
    ``temperature`` softens class scores before they are compared.
    ``box_weight`` > 0 adds localisation distillation: the student's box deltas pulled toward the
    teacher's on the same positive rows (for an R-CNN, the deltas of each row's ground-truth class),
    a smooth L1 (:func:`box_kd`). Class-score KD alone pulls the box head's shared layers toward the
    teacher's scores only; measured here, at weight 1 it cost AP75 about four times what it cost AP50.

    The form follows PKD (Cao et al. 2022) and FGD (Yang et al. 2022); the weights are the best
    measured here (``benchmarks/results/teacher_probe*.md``: the benchmark's Faster R-CNN student,
    400 steps, a teacher 2.3-2.7 test AP above the no-KD control): features 1 + scores 0.5 cost 1.6
    and 1.5 AP against the control, scores 1 alone 2.7 and 2.5, features 0.1 + scores 0.1 tie
    (-0.1, +0.2). No weighting has yet beaten training without a teacher here.
    """

    feature_weight: float = 0.1
    head_weight: float = 0.1
    temperature: float = 2.0
    foreground: float = 1.0
    normalize: bool = True
    ramp: float = 0.3
    positives_only: bool = True
    positive_iou: float = 0.5
    box_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("feature_weight", "head_weight", "foreground", "box_weight"):
            if getattr(self, name) < 0:
                raise TrainingError(f"KD {name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise TrainingError(f"KD temperature must be > 0, got {self.temperature}")
        if not 0 <= self.ramp <= 1 or not 0 < self.positive_iou <= 1:
            raise TrainingError(
                f"KD ramp must be in [0, 1] and positive_iou in (0, 1], got {self.ramp}, {self.positive_iou}"
            )


def channel_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """``x`` (N x C x H x W) at zero mean and unit variance per image and channel, over positions."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.var(dim=(2, 3), keepdim=True, unbiased=False).add(eps).sqrt()
    return (x - mean) / std


def normalized_feature_kd(
    student: list[Tensor], teacher: list[Tensor], *, masks: list[Tensor] | None = None, foreground: float = 0.0
) -> Tensor:
    """PKD's feature imitation: the squared error of per-channel normalised features (see
    :func:`channel_normalize`), averaged over channels and positions, then levels; zero for
    identical features and unchanged by a per-channel scale (> 0) and shift of either side.
    ``masks`` (N x H x W, 1 inside boxes) add ``foreground`` extra weight where they are set."""
    terms = []
    for index, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise TrainingError(f"FPN level {index}: student {tuple(s.shape)} vs teacher {tuple(t.shape)} features")
        error = (channel_normalize(s) - channel_normalize(t)).pow(2).mean(dim=1) / 2
        if masks is not None and foreground > 0:
            weight = 1.0 + foreground * masks[index]
            terms.append((error * weight).sum() / weight.sum())
        else:
            terms.append(error.mean())
    return torch.stack(terms).mean()


def identity_adapter(cin: int, cout: int) -> nn.Conv2d:
    """A 1x1 convolution from ``cin`` to ``cout`` channels that starts as the identity on the first
    ``min(cin, cout)`` channels (zeros elsewhere, no bias)."""
    conv = nn.Conv2d(cin, cout, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(min(cin, cout)):
            conv.weight[c, c, 0, 0] = 1.0
    return conv


def feature_kd(
    student: list[Tensor], teacher: list[Tensor], *, masks: list[Tensor] | None = None, foreground: float = 0.0
) -> Tensor:
    """Squared difference per level relative to the teacher's mean square, averaged over levels;
    zero for identical features. Relative, so the loss is about 1 for unrelated features whatever
    the scale of the FPN's activations (which the KD weights would otherwise have to undo).

    ``masks`` (N x H x W, 1 inside boxes) add ``foreground`` extra weight where they are set.
    """
    terms = []
    for index, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise TrainingError(f"FPN level {index}: student {tuple(s.shape)} vs teacher {tuple(t.shape)} features")
        error = (s - t).pow(2).mean(dim=1) / t.pow(2).mean().clamp_min(1e-12)
        if masks is not None and foreground > 0:
            weight = 1.0 + foreground * masks[index]
            terms.append((error * weight).sum() / weight.sum())
        else:
            terms.append(error.mean())
    return torch.stack(terms).mean()


def sigmoid_kd(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Binary cross-entropy to the teacher's softened per-class probabilities, minus its entropy
    (so identical logits give exactly zero), times T² (RetinaNet, FCOS)."""
    t = torch.sigmoid(teacher / temperature)
    s = student / temperature
    loss = F.binary_cross_entropy_with_logits(s, t, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher / temperature, t, reduction="none")
    return (loss - entropy).mean() * temperature**2


def softmax_kd(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of softened class distributions, times T² (R-CNN box head)."""
    return (
        F.kl_div(
            F.log_softmax(student / temperature, dim=-1),
            F.log_softmax(teacher / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )


def box_kd(student: Tensor, teacher: Tensor, *, beta: float = 1 / 9) -> Tensor:
    """Localisation distillation: the smooth L1 (``beta`` as torchvision's R-CNN box loss) between
    the student's and the teacher's box deltas (R x 4, the same rows), summed over the four
    deltas and averaged over rows; zero for identical deltas. Averaged over the (positive) rows
    it is given, where torchvision's R-CNN box loss divides by every sampled row (at most a
    quarter positive): per unit of weight this term is at least four times as strong."""
    if not len(student):
        return student.sum() * 0.0
    return F.smooth_l1_loss(student, teacher, beta=beta, reduction="sum") / len(student)


def foreground_masks(
    targets: list[dict[str, Tensor]], shapes: list[tuple[int, int]], image_size: tuple[int, int]
) -> list[Tensor]:
    """Per FPN level, an N x H x W mask set inside the (transformed) ground-truth boxes."""
    out = []
    for h, w in shapes:
        mask = torch.zeros(len(targets), h, w)
        sy, sx = h / image_size[0], w / image_size[1]
        for i, target in enumerate(targets):
            for x0, y0, x1, y1 in target["boxes"].tolist():
                mask[
                    i,
                    int(y0 * sy) : max(int(y1 * sy), int(y0 * sy) + 1),
                    int(x0 * sx) : max(int(x1 * sx), int(x0 * sx) + 1),
                ] = 1
        out.append(mask)
    return out


class _Tap:
    """Records what a module saw or produced during the latest forward pass."""

    def __init__(self) -> None:
        self.value: Any = None

    def output(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        self.value = output

    def inputs(self, _module: nn.Module, inputs: Any) -> None:
        self.value = inputs


class Distiller(nn.Module):
    """KD from ``teacher`` into ``student`` (same family, classes and FPN levels), for ``train``'s
    ``extra_losses``. The teacher is frozen (eval mode, no gradients) while it is attached. It runs
    on the student's resized batch (never through its own transform), so a student with another
    input size (the detector-level space) learns from the teacher on the very images it sees.
    ``steps``: the length of the training it serves, for ``config.ramp`` (None: no ramp). Its
    call count is a buffer, so a resumed training continues the ramp where it was."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module, config: KDConfig | None = None, *, steps: int | None = None
    ) -> None:
        super().__init__()
        self.config = config or KDConfig()
        self.steps = steps
        s_spec, t_spec = spec_of(student), spec_of(teacher)
        for name in SAME_AS_STUDENT:
            if getattr(s_spec, name) != getattr(t_spec, name):
                raise TrainingError(
                    f"teacher and student differ in {name} ({getattr(t_spec, name)} vs {getattr(s_spec, name)}); "
                    "a teacher must see the same images and predict the same classes"
                )
        self.family = family_of(s_spec)
        self._radius = float(getattr(student, "center_sampling_radius", 1.5))  # FCOS's centre rule
        if self.config.box_weight > 0 and not self.family.is_two_stage and s_spec.anchor_sizes != t_spec.anchor_sizes:
            raise TrainingError(
                f"teacher and student differ in anchor_sizes ({t_spec.anchor_sizes} vs {s_spec.anchor_sizes}): a "
                "one-stage detector's box deltas are relative to its anchors, so box distillation needs the same "
                "anchors; use a teacher with the student's anchors, or box_weight=0"
            )
        self.adapters = nn.ModuleList()
        if self.config.normalize:
            self.adapters.append(identity_adapter(s_spec.fpn_channels, t_spec.fpn_channels))
        elif s_spec.fpn_channels != t_spec.fpn_channels:
            self.adapters.append(nn.Conv2d(s_spec.fpn_channels, t_spec.fpn_channels, 1))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.teacher = [teacher.eval()]  # a list: not a submodule (not trained, not saved with us)
        for p in teacher.parameters():
            p.requires_grad_(False)
        points = {
            "transform": (student.transform, "output"),
            "features": (student.backbone, "output"),
            **self.family.kd_taps(student),
        }  # the family names where its class scores are read
        self._taps = {name: _Tap() for name in points}
        self._shared: dict[str, Any] | None = None
        self._handles = [
            module.register_forward_pre_hook(self._taps[name].inputs)
            if what == "inputs"
            else module.register_forward_hook(self._taps[name].output)
            for name, (module, what) in points.items()
        ]

    def detach(self) -> None:
        """Remove the hooks from the student (the student is then a plain detector again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _step_taps(self) -> dict[str, Any]:
        """What the taps recorded in this step's forward pass, plus what the family computed from
        them for one KD term and another reuses (the teacher's box head outputs)."""
        if self._shared is None:
            self._shared = {name: tap.value for name, tap in self._taps.items()}
        return self._shared

    def _positives(self, taps: dict[str, Any], targets: list[dict[str, Tensor]]) -> Tensor:
        """This step's positive rows by the family's rule (:mod:`.positives`), computed once for the
        score and box terms."""
        if "positives" not in taps:
            levels = [x.shape[-2] * x.shape[-1] for x in taps["features"].values()]
            rule = POSITIVE_RULES[self.family.kd_positives]
            taps["positives"] = rule(
                self.family.kd_boxes(taps), targets, self.config.positive_iou, levels=levels, radius=self._radius
            )
        return taps["positives"]

    def ramp_factor(self) -> float:
        """The share of the KD weights in force at this call: rising linearly over the first
        ``config.ramp`` of ``steps`` calls (1 without a ramp)."""
        if not self.steps or not self.config.ramp:
            return 1.0
        return min(1.0, (int(self.calls) + 1) / max(1.0, self.config.ramp * self.steps))

    def forward(
        self, model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]], losses: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        self._shared = None  # a new step: the family's shared computations are recomputed
        image_list, resized = self._taps["transform"].value
        s_feats = self._taps["features"].value
        teacher = self.teacher[0]
        factor = self.ramp_factor()
        self.calls += 1
        with torch.no_grad():
            t_feats = teacher.backbone(image_list.tensors)
        keys = list(s_feats)
        student_levels = [s_feats[k] for k in keys]
        if self.adapters:
            student_levels = [self.adapters[0](x) for x in student_levels]
        out: dict[str, Tensor] = {}
        cfg = self.config
        if cfg.feature_weight > 0:
            masks = None
            if cfg.foreground > 0 and resized is not None:
                masks = foreground_masks(
                    resized, [tuple(x.shape[-2:]) for x in student_levels], tuple(image_list.tensors.shape[-2:])
                )
            loss = normalized_feature_kd if cfg.normalize else feature_kd
            out["kd_feature"] = (
                factor
                * cfg.feature_weight
                * loss(student_levels, [t_feats[k] for k in keys], masks=masks, foreground=cfg.foreground)
            )
        if cfg.head_weight > 0:
            out["kd_head"] = factor * cfg.head_weight * self._head_kd(teacher, t_feats, image_list, resized)
        if cfg.box_weight > 0:
            out["kd_box"] = factor * cfg.box_weight * self._box_kd(teacher, t_feats, resized)
        return out

    def _box_kd(
        self, teacher: nn.Module, t_feats: dict[str, Tensor], targets: list[dict[str, Tensor]] | None
    ) -> Tensor:
        """:func:`box_kd` on the positive rows whatever ``positives_only`` says (a background row's
        deltas are never trained), an R-CNN's per-class deltas at each row's ground-truth class.
        Zero without targets or positives."""
        taps = self._step_taps()
        student, teacher_deltas = self.family.kd_deltas(taps, teacher, t_feats)
        width = student.shape[-1]
        student, teacher_deltas = student.reshape(-1, width), teacher_deltas.reshape(-1, width)
        if targets is None:
            return student.sum() * 0.0
        keep = self._positives(taps, targets).to(student.device)
        if width > 4:  # per class (R-CNN): the deltas of each row's ground-truth class
            labels = positive_labels(self.family.kd_boxes(taps), targets).to(student.device)
            columns = labels[:, None] * 4 + torch.arange(4, device=student.device)
            student, teacher_deltas = student.gather(1, columns), teacher_deltas.gather(1, columns)
        return box_kd(student[keep], teacher_deltas[keep])

    def _head_kd(
        self, teacher: nn.Module, t_feats: dict[str, Tensor], image_list: Any, targets: list[dict[str, Tensor]] | None
    ) -> Tensor:
        taps = self._step_taps()
        student_logits, teacher_logits = self.family.kd_logits(taps, teacher, t_feats)
        if self.config.positives_only and targets is not None:
            classes = student_logits.shape[-1]
            student_logits, teacher_logits = student_logits.reshape(-1, classes), teacher_logits.reshape(-1, classes)
            keep = self._positives(taps, targets)
            if not bool(keep.any()):
                return student_logits.sum() * 0.0  # no positive here: nothing to distil, gradients stay defined
            student_logits, teacher_logits = student_logits[keep], teacher_logits[keep]
        return _SCORE_KD[self.family.kd_scores](student_logits, teacher_logits, self.config.temperature)


#: Class-score distillation by a family's ``kd_scores``.
_SCORE_KD = {"softmax": softmax_kd, "sigmoid": sigmoid_kd}
