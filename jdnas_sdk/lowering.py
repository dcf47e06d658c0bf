"""The detector walked once: ``(spec, arch, image size) -> the ops it runs``, stage by stage, block by block.

This is the one walk of the ResNet (stem, strides, blocks), the FPN and the heads. The latency
stage (:mod:`jdnas_sdk.latency.lower`) turns its ops into table keys and the estimator caches
its per-block groups; :mod:`jdnas_sdk.cost` sums the same ops' parameters and MACs. The heads and
the FPN's extra levels come from the detector's family (:mod:`jdnas_sdk.families`), as plain
:class:`~jdnas_sdk.layers.Op` descriptions.

Sizes here are of the (padded) image the backbone sees; :func:`detector_input` gives that size
for an image after torchvision's resize.
"""

from __future__ import annotations

import math
from functools import lru_cache

from .arch import Arch, DetectorSpec
from .families import get_family
from .layers import Op, conv, conv_out, maxpool, upsample

__all__ = [
    "STAGES",
    "SIZE_DIVISIBLE",
    "Block",
    "detector_input",
    "stem",
    "block",
    "stage_sizes",
    "walk",
    "levels",
    "fpn",
    "fpn_lateral",
    "fpn_shared",
    "heads",
    "lower_ops",
]

#: Stage names of a breakdown, in the order the detector runs them.
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4", "fpn", "heads", "fixed")
#: torchvision pads the resized batch to a multiple of this.
SIZE_DIVISIBLE = 32

#: One residual block's place in the walk: ``(block type, groups, cin, mid, out, stride, h, w)``
#: with ``h x w`` its input map. Hashable: the estimator caches a block's time under it.
Block = tuple[str, int, int, int, int, int, int, int]


def detector_input(spec: DetectorSpec, input_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(resized h, resized w, padded h, padded w)`` of an image of ``input_size`` after
    torchvision's transform (shorter side to ``min_size``, longer capped at ``max_size``)."""
    h, w = input_size
    scale = min(spec.min_size / min(h, w), spec.max_size / max(h, w))
    rh, rw = int(math.floor(h * scale)), int(math.floor(w * scale))
    pad = SIZE_DIVISIBLE
    return rh, rw, -(-rh // pad) * pad, -(-rw // pad) * pad


@lru_cache(maxsize=4096)
def stem(width: int, h: int, w: int) -> tuple[Op, ...]:
    """The 7x7 stride-2 convolution and the 3x3 stride-2 max-pool on an ``h x w`` image."""
    return (conv(3, width, 7, 2, h, w), maxpool(width, 3, 2, 1, conv_out(h, 7, 2), conv_out(w, 7, 2)))


def block(kind: str, groups: int, cin: int, mid: int, out: int, stride: int, h: int, w: int) -> tuple[Op, ...]:
    """One residual block on an ``h x w`` input; the last convolution fuses the add and ReLU."""
    ho, wo = conv_out(h, 3, stride), conv_out(w, 3, stride)
    ops = []
    if kind == "basic":
        ops.append(conv(cin, mid, 3, stride, h, w))
        last = conv(mid, out, 3, 1, ho, wo, add=1)
    else:
        ops.append(conv(cin, mid, 1, 1, h, w))  # torchvision strides in the 3x3 (ResNet v1.5)
        ops.append(conv(mid, mid, 3, stride, h, w, g=groups))
        last = conv(mid, out, 1, 1, ho, wo, add=1)
    if stride != 1 or cin != out:
        ops.append(conv(cin, out, 1, stride, h, w, act="none"))
    ops.append(last)
    return tuple(ops)


@lru_cache(maxsize=4096)
def stage_sizes(h: int, w: int) -> tuple[tuple[int, int], ...]:
    """The map size entering each of the four stages on an ``h x w`` image, then the size leaving
    the last: the stem divides by 4, the first block of stages 2-4 by 2 (ResNet's strides)."""
    sizes = [(conv_out(conv_out(h, 7, 2), 3, 2), conv_out(conv_out(w, 7, 2), 3, 2))]
    sizes.append(sizes[0])  # stage 1 keeps the stem's size
    for _ in range(3):
        sizes.append((conv_out(sizes[-1][0], 3, 2), conv_out(sizes[-1][1], 3, 2)))
    return tuple(sizes)


def walk(arch: Arch, h: int, w: int) -> list[Block]:
    """Every residual block of ``arch`` on an ``h x w`` image, in order (``arch.depths[s]`` of
    them for stage ``s + 1``). The first block of stages 2-4 has stride 2; the stem
    (:func:`stem`) comes before them all. The search's hot path: the estimator walks every candidate.
    """
    sizes = stage_sizes(h, w)
    cin, kind, groups, out = arch.stem, arch.block, arch.groups, []
    append = out.append
    for index, stage in enumerate(arch.stages):
        width, mids = stage.width, stage.mids
        (hi, wi), (ho, wo) = sizes[index], sizes[index + 1]
        append((kind, groups, cin, mids[0], width, 2 if index else 1, hi, wi))
        for mid in mids[1:]:
            append((kind, groups, width, mid, width, 1, ho, wo))
        cin = width
    return out


@lru_cache(maxsize=4096)
def levels(spec: DetectorSpec, h: int, w: int) -> tuple[tuple[int, int], ...]:
    """Feature-map sizes of every pyramid level the heads see, on an ``h x w`` image."""
    sizes = []
    for k in spec.returned_layers:
        size = (h, w)
        for _ in range(k + 1):  # stage k has stride 2 ** (k + 1)
            size = (conv_out(size[0], 3, 2), conv_out(size[1], 3, 2))
        sizes.append(size)
    while len(sizes) < spec.num_levels:
        sizes.append((conv_out(sizes[-1][0], 3, 2), conv_out(sizes[-1][1], 3, 2)))
    return tuple(sizes)


def fpn_lateral(spec: DetectorSpec, level: int, width: int, h: int, w: int) -> Op:
    """The lateral 1x1 conv of returned ``level`` (0: the finest) reading a ``width``-channel stage
    output; all but the top one fuse the top-down add. The only FPN op a backbone width changes."""
    top = len(spec.returned_layers) - 1
    return conv(
        width,
        spec.fpn_channels,
        1,
        1,
        *levels(spec, h, w)[level],
        norm="none",
        act="none",
        add=0 if level == top else 1,
    )


@lru_cache(maxsize=4096)
def fpn_shared(spec: DetectorSpec, h: int, w: int) -> tuple[Op, ...]:
    """The FPN ops no backbone width changes: the top-down upsamples (top first), the 3x3 output
    convs and the family's extra levels."""
    c = spec.fpn_channels
    sizes = levels(spec, h, w)
    top = len(spec.returned_layers) - 1
    ops = [upsample(c, *sizes[i + 1], *sizes[i]) for i in range(top - 1, -1, -1)]
    ops += [conv(c, c, 3, 1, hi, wi, norm="none", act="none") for hi, wi in sizes[: top + 1]]
    ops += get_family(spec.family).fpn_extra_ops(c, sizes[top], sizes[top + 1 :])
    return tuple(ops)


def fpn(spec: DetectorSpec, widths: tuple[int, ...], h: int, w: int) -> tuple[Op, ...]:
    """The FPN in the order it runs: the top lateral conv, then per finer level its upsample and
    lateral conv (fusing the top-down add), the 3x3 output convs and the extra levels.
    ``widths`` are the backbone's four stage widths; only the returned layers' matter."""
    returned = spec.returned_layers
    top = len(returned) - 1
    shared = fpn_shared(spec, h, w)
    ops = [fpn_lateral(spec, top, widths[returned[top] - 1], h, w)]
    for n, i in enumerate(range(top - 1, -1, -1)):
        ops += [shared[n], fpn_lateral(spec, i, widths[returned[i] - 1], h, w)]
    return tuple(ops) + shared[top:]


def heads(spec: DetectorSpec, h: int, w: int, rois: int | None = None) -> tuple[Op, ...]:
    """The family's heads on every level (and on ``rois`` proposals per image for RoI heads;
    ``None``: as many as the family keeps at test time)."""
    return get_family(spec.family).head_ops(spec, levels(spec, h, w), rois=rois)


def lower_ops(
    spec: DetectorSpec, arch: Arch, h: int, w: int, *, rois: int | None = None
) -> list[tuple[str, tuple[Op, ...]]]:
    """Every op of detector ``(spec, arch)`` on an ``h x w`` image, per stage (the names of
    :data:`STAGES` but ``fixed``), untimed ops included."""
    out = [("stem", stem(arch.stem, h, w))]
    blocks = iter(walk(arch, h, w))
    for index, depth in enumerate(arch.depths, start=1):
        out.append((f"layer{index}", tuple(op for _ in range(depth) for op in block(*next(blocks)))))
    return out + [("fpn", fpn(spec, arch.widths, h, w)), ("heads", heads(spec, h, w, rois))]
