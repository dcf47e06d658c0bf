"""Detection distillation: feature imitation on every FPN level, and class-score distillation.

:class:`Distiller` plugs into the training loop's ``extra_losses`` hook. It watches the student's
forward pass through hooks (the transformed images and targets, the FPN features, the class
logits, and for R-CNNs the sampled proposals), runs the teacher on the same transformed images
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

__all__ = ["KDConfig", "Distiller", "feature_kd", "sigmoid_kd", "softmax_kd", "foreground_masks"]


@dataclass(frozen=True)
class KDConfig:
    """Weights of the distillation terms. ``foreground`` > 0 adds that much extra weight to FPN
    positions inside ground-truth boxes (0: every position counts the same); ``temperature``
    softens class scores before they are compared.

    The default weights, 0.1 each, are measured (``benchmarks/kd_probe.py``): on a half-width
    student fine-tuned 60 and 200 steps they scored 2.2 and 0.6 AP above weights of 1.0.
    """

    feature_weight: float = 0.1
    head_weight: float = 0.1
    temperature: float = 2.0
    foreground: float = 0.0

    def __post_init__(self) -> None:
        for name in ("feature_weight", "head_weight", "foreground"):
            if getattr(self, name) < 0:
                raise TrainingError(f"KD {name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise TrainingError(f"KD temperature must be > 0, got {self.temperature}")


def feature_kd(student: list[Tensor], teacher: list[Tensor], *, masks: list[Tensor] | None = None,
               foreground: float = 0.0) -> Tensor:
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
    return F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                    log_target=True, reduction="batchmean") * temperature**2


def foreground_masks(targets: list[dict[str, Tensor]], shapes: list[tuple[int, int]], image_size: tuple[int, int]) -> list[Tensor]:
    """Per FPN level, an N x H x W mask set inside the (transformed) ground-truth boxes."""
    out = []
    for h, w in shapes:
        mask = torch.zeros(len(targets), h, w)
        sy, sx = h / image_size[0], w / image_size[1]
        for i, target in enumerate(targets):
            for x0, y0, x1, y1 in target["boxes"].tolist():
                mask[i, int(y0 * sy): max(int(y1 * sy), int(y0 * sy) + 1), int(x0 * sx): max(int(x1 * sx), int(x0 * sx) + 1)] = 1
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
    on the student's resized batch (never through its own transform), so a student with a smaller
    input size (the detector-level space) learns from the teacher on the very images it sees."""

    def __init__(self, student: nn.Module, teacher: nn.Module, config: KDConfig | None = None) -> None:
        super().__init__()
        self.config = config or KDConfig()
        s_spec, t_spec = spec_of(student), spec_of(teacher)
        for name in ("family", "num_classes", "returned_layers"):
            if getattr(s_spec, name) != getattr(t_spec, name):
                raise TrainingError(
                    f"teacher and student differ in {name} ({getattr(t_spec, name)} vs {getattr(s_spec, name)}); "
                    "a teacher must see the same images and predict the same classes"
                )
        self.family = family_of(s_spec)
        self.adapters = nn.ModuleList()
        if s_spec.fpn_channels != t_spec.fpn_channels:
            self.adapters.append(nn.Conv2d(s_spec.fpn_channels, t_spec.fpn_channels, 1))
        self.teacher = [teacher.eval()]  # a list: not a submodule (not trained, not saved with us)
        for p in teacher.parameters():
            p.requires_grad_(False)
        points = {"transform": (student.transform, "output"), "features": (student.backbone, "output"),
                  **self.family.kd_taps(student)}  # the family names where its class scores are read
        self._taps = {name: _Tap() for name in points}
        self._handles = [
            module.register_forward_pre_hook(self._taps[name].inputs) if what == "inputs"
            else module.register_forward_hook(self._taps[name].output)
            for name, (module, what) in points.items()
        ]

    def detach(self) -> None:
        """Remove the hooks from the student (the student is then a plain detector again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def forward(self, model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]],
                losses: dict[str, Tensor]) -> dict[str, Tensor]:
        image_list, resized = self._taps["transform"].value
        s_feats = self._taps["features"].value
        teacher = self.teacher[0]
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
                masks = foreground_masks(resized, [tuple(x.shape[-2:]) for x in student_levels],
                                         tuple(image_list.tensors.shape[-2:]))
            out["kd_feature"] = cfg.feature_weight * feature_kd(student_levels, [t_feats[k] for k in keys],
                                                               masks=masks, foreground=cfg.foreground)
        if cfg.head_weight > 0:
            out["kd_head"] = cfg.head_weight * self._head_kd(teacher, t_feats, image_list)
        return out

    def _head_kd(self, teacher: nn.Module, t_feats: dict[str, Tensor], image_list: Any) -> Tensor:
        taps = {name: tap.value for name, tap in self._taps.items()}
        student_logits, teacher_logits = self.family.kd_logits(taps, teacher, t_feats)
        return _SCORE_KD[self.family.kd_scores](student_logits, teacher_logits, self.config.temperature)


#: Class-score distillation by a family's ``kd_scores``.
_SCORE_KD = {"softmax": softmax_kd, "sigmoid": sigmoid_kd}
