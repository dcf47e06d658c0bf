"""Analytical parameters and multiply-accumulates of a detector, from (spec, arch, input size).

For reports and for the search's quick filters: no model is built. Parameters are exact (tests
check them against the built model); MACs count convolutions and linear layers (norms,
activations, pooling and post-processing are left out), with the R-CNN heads charged for
``rois`` regions of interest (torchvision keeps 1000 proposals per image at test time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .arch import Arch, DetectorSpec

__all__ = ["Cost", "detector_cost"]

_RCNN = ("fasterrcnn", "maskrcnn", "keypointrcnn")


@dataclass(frozen=True)
class Cost:
    """Parameter count and multiply-accumulates (MACs) of the parts of a detector."""

    params: dict[str, int]
    macs: dict[str, int]

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())


class _Tally:
    def __init__(self) -> None:
        self.params = 0
        self.macs = 0

    def conv(self, cin: int, cout: int, k: int, *, hw: int = 0, groups: int = 1, bias: bool = False, norm: bool = False) -> None:
        weights = cout * (cin // groups) * k * k
        self.params += weights + (cout if bias else 0) + (2 * cout if norm else 0)
        self.macs += weights * hw

    def linear(self, fin: int, fout: int, *, rows: int = 0) -> None:
        self.params += fin * fout + fout
        self.macs += fin * fout * rows


def _size(size: int, stride: int) -> int:
    return math.ceil(size / stride)


def _body(arch: Arch, h: int, w: int) -> tuple[_Tally, list[int]]:
    t = _Tally()
    hw = _size(h, 2) * _size(w, 2)
    t.conv(3, arch.stem, 7, hw=hw, norm=True)
    cin, stride, sizes = arch.stem, 4, []
    for index, stage in enumerate(arch.stages, start=1):
        for j, mid in enumerate(stage.mids):
            in_hw = _size(h, stride) * _size(w, stride)
            if j == 0 and index > 1:
                stride *= 2
            hw = _size(h, stride) * _size(w, stride)
            if arch.block == "basic":
                t.conv(cin, mid, 3, hw=hw, norm=True)
                t.conv(mid, stage.width, 3, hw=hw, norm=True)
            else:
                t.conv(cin, mid, 1, hw=in_hw, norm=True)  # torchvision strides in conv2 (ResNet v1.5)
                t.conv(mid, mid, 3, hw=hw, groups=arch.groups, norm=True)
                t.conv(mid, stage.width, 1, hw=hw, norm=True)
            if j == 0 and (cin != stage.width or index > 1):
                t.conv(cin, stage.width, 1, hw=hw, norm=True)
            cin = stage.width
        sizes.append(stride)
    return t, sizes


def detector_cost(spec: DetectorSpec, arch: Arch, *, input_size: tuple[int, int] | None = None, rois: int = 1000) -> Cost:
    """Parameters and MACs of the detector ``(spec, arch)`` on a ``(height, width)`` input
    (default: a square ``spec.max_size`` image)."""
    h, w = input_size or (spec.max_size, spec.max_size)
    body, strides = _body(arch, h, w)
    c = spec.fpn_channels
    fpn = _Tally()
    level_strides = []
    for k in spec.returned_layers:
        hw = _size(h, strides[k - 1]) * _size(w, strides[k - 1])
        fpn.conv(arch.widths[k - 1], c, 1, hw=hw, bias=True)
        fpn.conv(c, c, 3, hw=hw, bias=True)
        level_strides.append(strides[k - 1])
    while len(level_strides) < spec.num_levels:
        level_strides.append(level_strides[-1] * 2)
        if spec.family not in _RCNN:
            fpn.conv(c, c, 3, hw=_size(h, level_strides[-1]) * _size(w, level_strides[-1]), bias=True)
    pixels = sum(_size(h, s) * _size(w, s) for s in level_strides)
    heads = _Tally()
    k = spec.num_classes
    if spec.family == "retinanet":
        anchors = 9
        for _ in range(8):
            heads.conv(c, c, 3, hw=pixels, bias=True)
        heads.conv(c, anchors * k, 3, hw=pixels, bias=True)
        heads.conv(c, anchors * 4, 3, hw=pixels, bias=True)
    elif spec.family == "fcos":
        for _ in range(8):
            heads.conv(c, c, 3, hw=pixels, bias=True, norm=True)
        heads.conv(c, k, 3, hw=pixels, bias=True)
        heads.conv(c, 4, 3, hw=pixels, bias=True)
        heads.conv(c, 1, 3, hw=pixels, bias=True)
    else:
        anchors = 3
        heads.conv(c, c, 3, hw=pixels, bias=True)
        heads.conv(c, anchors, 1, hw=pixels, bias=True)
        heads.conv(c, anchors * 4, 1, hw=pixels, bias=True)
        r = spec.representation_size
        heads.linear(c * 49, r, rows=rois)
        heads.linear(r, r, rows=rois)
        heads.linear(r, k, rows=rois)
        heads.linear(r, 4 * k, rows=rois)
        if spec.family == "maskrcnn":
            cin = c
            for _ in range(4):
                heads.conv(cin, 256, 3, hw=14 * 14 * rois, bias=True)
                cin = 256
            heads.conv(256, 256, 2, hw=14 * 14 * rois, bias=True)  # transposed conv, same count
            heads.conv(256, k, 1, hw=28 * 28 * rois, bias=True)
        elif spec.family == "keypointrcnn":
            cin = c
            for _ in range(8):
                heads.conv(cin, 512, 3, hw=14 * 14 * rois, bias=True)
                cin = 512
            heads.conv(512, spec.num_keypoints, 4, hw=14 * 14 * rois, bias=True)
    return Cost(params={"backbone": body.params, "fpn": fpn.params, "heads": heads.params},
                macs={"backbone": body.macs, "fpn": fpn.macs, "heads": heads.macs})
