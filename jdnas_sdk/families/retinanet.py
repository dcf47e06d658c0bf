"""The RetinaNet family: one stage, 9 anchors per position, 4-conv towers, P6/P7 extra levels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelP6P7

from ..layers import Op, conv, relu
from .base import (
    Family,
    KDTap,
    SpecLike,
    base_anchor_sizes,
    dense_kd_deltas,
    dense_kd_logits,
    dense_postprocess,
    read_towers,
    set_towers,
    tower_check,
)

__all__ = ["OneStageFamily", "RetinaNetFamily", "p6p7_ops"]

#: Anchors per position: three sizes (octave thirds) times three aspect ratios.
_ANCHORS = 9
#: Convolutions in each of the classification and regression towers (torchvision builds 4).
TOWER = 4
#: Boxes torchvision keeps per level before NMS at test time (``topk_candidates``).
TOPK = 1000


def p6p7_ops(channels: int, top: tuple[int, int], extra: Sequence[tuple[int, int]]) -> tuple[Op, ...]:
    """``LastLevelP6P7(C, C)`` on the top FPN output: a stride-2 conv to P6, ReLU, a stride-2 conv to P7."""
    c, (h6, w6) = channels, extra[0]
    return (
        conv(c, c, 3, 2, *top, norm="none", act="none"),
        relu(c, h6, w6),
        conv(c, c, 3, 2, h6, w6, norm="none", act="none"),
    )


class OneStageFamily(Family):
    """What torchvision's one-stage detectors (RetinaNet, FCOS) share: P6/P7 from the top FPN
    output, and head towers whose depth and width the search may change. ``tower_group_norm``:
    whether the towers normalise with GroupNorm (FCOS) or not (RetinaNet). ``topk_candidates``
    (boxes kept per level before NMS) changes no weight: like R-CNN proposals it only moves the
    fixed entry, whose ``pre`` field holds it where it differs from torchvision's 1000 (0 there, so
    that tables profiled before it keep their entries)."""

    head_settings = ("head_convs", "head_width", "topk_candidates")
    tower_group_norm: bool = False

    def build(self, spec: SpecLike, backbone: nn.Module, anchors: AnchorGenerator) -> nn.Module:
        model = self.model_class(
            backbone,
            spec.num_classes,
            anchor_generator=anchors,
            min_size=spec.min_size,
            max_size=spec.max_size,
            score_thresh=spec.score_thresh,
            nms_thresh=spec.nms_thresh,
            detections_per_img=spec.detections_per_img,
            topk_candidates=spec.topk_candidates,
        )
        set_towers(model.head, spec.fpn_channels, spec.head_convs, spec.head_width, gn=self.tower_group_norm)
        return model

    def read(self, model: nn.Module) -> dict[str, Any]:
        sizes = tuple(int(level[0]) for level in self.anchors_of(model).sizes) if self.takes_anchor_sizes else None
        return dict(
            num_classes=int(model.head.classification_head.num_classes),
            anchor_sizes=sizes,
            **dict(zip(("head_convs", "head_width"), read_towers(model.head))),
            **dense_postprocess(model),
            topk_candidates=int(model.topk_candidates),
        )

    def fixed_settings(self, spec: SpecLike) -> tuple[int, int, int]:
        return (0 if spec.topk_candidates == TOPK else spec.topk_candidates), 0, 0

    def check(self, spec: SpecLike) -> str | None:
        return super().check(spec) or tower_check(spec, self.name, self.fpn_multiple)

    def fpn_extra_block(self, channels: int) -> ExtraFPNBlock:
        return LastLevelP6P7(channels, channels)

    def fpn_extra_ops(self, channels: int, top: tuple[int, int], extra: Sequence[tuple[int, int]]) -> tuple[Op, ...]:
        return p6p7_ops(channels, top, extra)

    # -- distillation: the class and regression heads, per anchor (both one-stage families) --------
    def kd_taps(self, student: nn.Module) -> dict[str, KDTap]:
        head = student.head
        return {
            "logits": (head.classification_head, "output"),
            "deltas": (head.regression_head, "output"),
            "anchors": (student.anchor_generator, "output"),
        }

    def kd_logits(self, taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return dense_kd_logits(taps, teacher, features)

    def kd_deltas(self, taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return dense_kd_deltas(taps, teacher, features)


class RetinaNetFamily(OneStageFamily):
    """torchvision's ``RetinaNet`` on the spec's FPN (levels P3-P7 by default)."""

    name = "retinanet"
    model_class = RetinaNet
    postprocess = (0.05, 0.5, 300)

    def anchor_generator(self, spec: SpecLike, strides: Sequence[int]) -> AnchorGenerator:
        sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in base_anchor_sizes(spec))
        return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))

    def head_ops(self, spec: SpecLike, levels: Sequence[tuple[int, int]], *, rois: int | None = None) -> tuple[Op, ...]:
        """Per level: both towers' convs (``head_convs`` of ``head_width``), then the class and box
        convs (weights shared over levels)."""
        c, t, k, ops = spec.fpn_channels, spec.head_width, spec.num_classes, []
        for i, (h, w) in enumerate(levels):
            owns = i == 0
            tower = [conv(c, t, 3, 1, h, w, norm="none", owns=owns)]
            tower += [conv(t, t, 3, 1, h, w, norm="none", owns=owns)] * (spec.head_convs - 1)
            ops += tower * 2
            ops += [
                conv(t, _ANCHORS * k, 3, 1, h, w, norm="none", act="none", owns=owns),
                conv(t, 4 * _ANCHORS, 3, 1, h, w, norm="none", act="none", owns=owns),
            ]
        return tuple(ops)
