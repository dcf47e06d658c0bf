"""Lowering: ``(spec, arch, input size) -> the fused kernels the detector runs``, stage by stage.

The ops follow torchvision's modules as an inference engine sees them after fusion: ResNet
convolutions carry their BatchNorm, ReLU and residual add; the FPN's lateral 1x1 convolutions
carry the top-down add (the upsample stays separate); heads are lowered conv by conv, and the
R-CNN box head as its linears. Everything the search cannot change and whose cost depends on the
detections (pre-processing, anchors, proposal selection, RoI pooling, decoding, NMS, mask and
keypoint heads) is one ``fixed`` entry per detector head and input size.

The pieces are cached: a detector lowers in microseconds once its blocks have been seen, which
is what lets the search estimate thousands of candidates per second.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from ..arch import Arch, DetectorSpec
from .ops import OpKey, conv_out

__all__ = [
    "Lowered", "lower", "detector_input", "stem_ops", "block_ops", "fpn_ops", "head_ops", "fixed_key",
    "RCNN", "STAGES",
]

RCNN = ("fasterrcnn", "maskrcnn", "keypointrcnn")
#: Stage names of a breakdown, in the order the detector runs them.
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4", "fpn", "heads", "fixed")
#: torchvision pads the resized batch to a multiple of this.
SIZE_DIVISIBLE = 32
#: Proposals the R-CNN box head sees per image at test time (torchvision's rpn_post_nms_top_n_test).
RCNN_PROPOSALS = 1000


@dataclass(frozen=True)
class Lowered:
    """A detector as ops: ``stages`` pairs a stage name with its ``(op, count)`` list; ``fixed``
    is the entry for the rest."""

    stages: tuple[tuple[str, tuple[tuple[OpKey, int], ...]], ...]
    fixed: OpKey

    def counts(self) -> Counter[OpKey]:
        out: Counter[OpKey] = Counter()
        for _, ops in self.stages:
            for key, count in ops:
                out[key] += count
        out[self.fixed] += 1
        return out


def detector_input(spec: DetectorSpec, input_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(resized h, resized w, padded h, padded w)`` of an image of ``input_size`` after
    torchvision's transform (shorter side to ``min_size``, longer capped at ``max_size``)."""
    h, w = input_size
    scale = min(spec.min_size / min(h, w), spec.max_size / max(h, w))
    rh, rw = int(math.floor(h * scale)), int(math.floor(w * scale))
    pad = SIZE_DIVISIBLE
    return rh, rw, -(-rh // pad) * pad, -(-rw // pad) * pad


def _conv(cin: int, cout: int, k: int, s: int, h: int, w: int, *, g: int = 1, norm: str = "bn",
          act: str = "relu", add: int = 0, n: int = 1) -> OpKey:
    return OpKey("conv", (n, cin, cout, k, s, g, h, w, norm, act, add))


@lru_cache(maxsize=4096)
def stem_ops(stem: int, h: int, w: int) -> tuple[OpKey, ...]:
    """The 7x7 stride-2 convolution and the 3x3 stride-2 max-pool on an ``h x w`` padded image."""
    h2, w2 = conv_out(h, 7, 2), conv_out(w, 7, 2)
    return (_conv(3, stem, 7, 2, h, w), OpKey("maxpool", (stem, 3, 2, 1, h2, w2)))


@lru_cache(maxsize=65536)
def block_ops(block: str, groups: int, cin: int, mid: int, out: int, stride: int, h: int, w: int) -> tuple[OpKey, ...]:
    """One residual block on an ``h x w`` input; the last convolution fuses the add and ReLU."""
    ho, wo = conv_out(h, 3, stride), conv_out(w, 3, stride)
    ops = []
    if block == "basic":
        ops.append(_conv(cin, mid, 3, stride, h, w))
        last = _conv(mid, out, 3, 1, ho, wo, add=1)
    else:
        ops.append(_conv(cin, mid, 1, 1, h, w))  # torchvision strides in the 3x3 (ResNet v1.5)
        ops.append(_conv(mid, mid, 3, stride, h, w, g=groups))
        last = _conv(mid, out, 1, 1, ho, wo, add=1)
    if stride != 1 or cin != out:
        ops.append(_conv(cin, out, 1, stride, h, w, act="none"))
    ops.append(last)
    return tuple(ops)


def _levels(spec: DetectorSpec, strides: tuple[int, ...], ph: int, pw: int) -> tuple[tuple[int, int], ...]:
    """Feature-map sizes of every pyramid level the heads see."""
    sizes = []
    for k in spec.returned_layers:
        size = (ph, pw)
        for _ in range(int(math.log2(strides[k - 1]))):
            size = (conv_out(size[0], 3, 2), conv_out(size[1], 3, 2))
        sizes.append(size)
    while len(sizes) < spec.num_levels:
        sizes.append((conv_out(sizes[-1][0], 3, 2), conv_out(sizes[-1][1], 3, 2)))
    return tuple(sizes)


@lru_cache(maxsize=65536)
def fpn_ops(spec: DetectorSpec, widths: tuple[int, ...], ph: int, pw: int) -> tuple[OpKey, ...]:
    """Lateral 1x1 convs (fusing the top-down add), upsamples, 3x3 output convs and extra levels.

    ``widths`` are the backbone's four stage widths; only the returned layers' matter.
    """
    c = spec.fpn_channels
    levels = _levels(spec, (4, 8, 16, 32), ph, pw)
    returned = spec.returned_layers
    ops = []
    top = len(returned) - 1
    h, w = levels[top]
    ops.append(_conv(widths[returned[top] - 1], c, 1, 1, h, w, norm="none", act="none"))
    for i in range(top - 1, -1, -1):
        (hs, ws), (h, w) = levels[i + 1], levels[i]
        ops.append(OpKey("upsample", (c, hs, ws, h, w)))
        ops.append(_conv(widths[returned[i] - 1], c, 1, 1, h, w, norm="none", act="none", add=1))
    for h, w in levels[: len(returned)]:
        ops.append(_conv(c, c, 3, 1, h, w, norm="none", act="none"))
    h, w = levels[top]
    if spec.family in RCNN:
        ops.append(OpKey("maxpool", (c, 1, 2, 0, h, w)))
    else:
        h6, w6 = levels[top + 1]
        ops.append(_conv(c, c, 3, 2, h, w, norm="none", act="none"))
        ops.append(OpKey("relu", (c, h6, w6)))
        ops.append(_conv(c, c, 3, 2, h6, w6, norm="none", act="none"))
    return tuple(ops)


@lru_cache(maxsize=4096)
def head_ops(spec: DetectorSpec, ph: int, pw: int) -> tuple[OpKey, ...]:
    """The dense heads on every level, and the R-CNN box head's linears (one row per proposal)."""
    c, k = spec.fpn_channels, spec.num_classes
    levels = _levels(spec, (4, 8, 16, 32), ph, pw)
    ops = []
    for h, w in levels:
        if spec.family in RCNN:
            ops += [_conv(c, c, 3, 1, h, w, norm="none"),
                    _conv(c, 3, 1, 1, h, w, norm="none", act="none"),
                    _conv(c, 12, 1, 1, h, w, norm="none", act="none")]
        elif spec.family == "retinanet":
            tower = _conv(c, c, 3, 1, h, w, norm="none")
            ops += [tower] * 8
            ops += [_conv(c, 9 * k, 3, 1, h, w, norm="none", act="none"),
                    _conv(c, 36, 3, 1, h, w, norm="none", act="none")]
        else:
            tower = _conv(c, c, 3, 1, h, w, norm="gn")
            ops += [tower] * 8
            ops += [_conv(c, k, 3, 1, h, w, norm="none", act="none"),
                    _conv(c, 4, 3, 1, h, w, norm="none"),
                    _conv(c, 1, 3, 1, h, w, norm="none", act="none")]
    if spec.family in RCNN:
        r, rows = spec.representation_size, RCNN_PROPOSALS
        ops += [OpKey("linear", (rows, c * 49, r, "relu")), OpKey("linear", (rows, r, r, "relu")),
                OpKey("linear", (rows, r, k, "none")), OpKey("linear", (rows, r, 4 * k, "none"))]
    return tuple(ops)


def fixed_key(spec: DetectorSpec, input_size: tuple[int, int]) -> OpKey:
    """The entry for what the search cannot change, for this detector head and image size."""
    rh, rw, _, _ = detector_input(spec, input_size)
    levels = "".join(str(k) for k in spec.returned_layers)
    return OpKey("fixed", (spec.family, spec.num_classes, spec.fpn_channels, levels, spec.representation_size,
                           spec.detections_per_img or 0, input_size[0], input_size[1], rh, rw))


def _stage_ops(ops: tuple[OpKey, ...]) -> tuple[tuple[OpKey, int], ...]:
    return tuple(Counter(ops).items())


def lower(spec: DetectorSpec, arch: Arch, input_size: tuple[int, int]) -> Lowered:
    """The ops of detector ``(spec, arch)`` on one image of ``input_size`` = (height, width)."""
    _, _, ph, pw = detector_input(spec, input_size)
    stages = [("stem", _stage_ops(stem_ops(arch.stem, ph, pw)))]
    h, w = conv_out(conv_out(ph, 7, 2), 3, 2), conv_out(conv_out(pw, 7, 2), 3, 2)
    cin = arch.stem
    for index, stage in enumerate(arch.stages, start=1):
        ops: list[OpKey] = []
        for j, mid in enumerate(stage.mids):
            stride = 2 if j == 0 and index > 1 else 1
            ops += block_ops(arch.block, arch.groups, cin, mid, stage.width, stride, h, w)
            h, w, cin = conv_out(h, 3, stride), conv_out(w, 3, stride), stage.width
        stages.append((f"layer{index}", _stage_ops(tuple(ops))))
    stages.append(("fpn", _stage_ops(fpn_ops(spec, arch.widths, ph, pw))))
    stages.append(("heads", _stage_ops(head_ops(spec, ph, pw))))
    return Lowered(stages=tuple(stages), fixed=fixed_key(spec, input_size))
