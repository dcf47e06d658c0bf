"""The FCOS family: one stage, anchor-free (one point per position), GroupNorm towers, P6/P7."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from ..layers import Op, conv
from .base import SpecLike
from .retinanet import OneStageFamily

__all__ = ["FCOSFamily"]


class FCOSFamily(OneStageFamily):
    """torchvision's ``FCOS``: its "anchors" are the level strides, so ``anchor_sizes`` does not apply;
    its towers' GroupNorm(32, C) needs an FPN width that is a multiple of 32."""

    name = "fcos"
    model_class = FCOS
    postprocess = (0.2, 0.6, 100)
    takes_anchor_sizes = False
    fpn_multiple = 32
    tower_group_norm = True
    kd_positives = "centre"  # its points are stride-sized squares: IoU >= 0.5 with a box finds almost none

    def check(self, spec: SpecLike) -> str | None:
        """Besides the FPN width: a tower whose GroupNorm holds one channel per group (width 32) on a
        1x1 map (its coarsest level, for an image no larger than that level's stride) normalises a
        single value, which torch refuses: such a detector cannot run one image."""
        why = super().check(spec)
        width = spec.head_width or spec.fpn_channels  # 0: the FPN's width, as the spec fills it in
        stride = self.coarsest_stride(spec)
        if why is None and width <= self.fpn_multiple and spec.min_size <= stride:
            why = (
                f"fcos towers of width {width} hold one channel per GroupNorm group, and a square image at "
                f"min_size {spec.min_size} <= {stride} (the stride of its coarsest level) makes that level 1x1: "
                f"one value per group, which torch refuses, so such an image cannot run; use head_width (or "
                f"fpn_channels) >= {2 * self.fpn_multiple}, or min_size > {stride}"
            )
        return why

    def coarsest_stride(self, spec: SpecLike) -> int:
        """The stride of the smallest pyramid level (P7: 128 for the standard FPN)."""
        return int(2 ** (max(spec.returned_layers) + 1 + self.extra_levels))

    def anchor_generator(self, spec: SpecLike, strides: Sequence[int]) -> AnchorGenerator:
        return AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * spec.num_levels)

    def head_ops(self, spec: SpecLike, levels: Sequence[tuple[int, int]], *, rois: int | None = None) -> tuple[Op, ...]:
        """Per level: both GroupNorm towers, then class, box (with ReLU) and centerness convs."""
        c, t, k, ops = spec.fpn_channels, spec.head_width, spec.num_classes, []
        for i, (h, w) in enumerate(levels):
            owns = i == 0
            tower = [conv(c, t, 3, 1, h, w, norm="gn", owns=owns)]
            tower += [conv(t, t, 3, 1, h, w, norm="gn", owns=owns)] * (spec.head_convs - 1)
            ops += tower * 2
            ops += [
                conv(t, k, 3, 1, h, w, norm="none", act="none", owns=owns),
                conv(t, 4, 3, 1, h, w, norm="none", owns=owns),
                conv(t, 1, 3, 1, h, w, norm="none", act="none", owns=owns),
            ]
        return tuple(ops)
