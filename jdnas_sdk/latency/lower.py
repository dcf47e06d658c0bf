"""Lowering for latency: the detector's ops (:mod:`jdnas_sdk.lowering`) as latency-table keys.

The ops follow torchvision's modules as an inference engine sees them after fusion: ResNet
convolutions carry their BatchNorm, ReLU and residual add; the FPN's lateral 1x1 convolutions
carry the top-down add (the upsample stays separate); heads are lowered conv by conv, and the
R-CNN box head as its linears. Everything the search cannot change and whose cost depends on the
detections (pre-processing, anchors, proposal selection, RoI pooling, decoding, NMS, mask and
keypoint heads: the ops the lowering marks untimed) is one ``fixed`` entry per detector head and
input size.

The walk itself lives in :mod:`jdnas_sdk.lowering`; here each op becomes its :class:`OpKey`
(no per-family knowledge: an op's kind and values are the key's). The pieces are cached: a
detector lowers in microseconds once its blocks have been seen, which is what lets the search
estimate thousands of candidates per second.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from .. import lowering
from ..arch import Arch, DetectorSpec
from ..families import get_family
from ..layers import Op
from ..lowering import STAGES, detector_input
from .ops import OpKey

__all__ = [
    "Lowered",
    "lower",
    "detector_input",
    "stem_ops",
    "block_ops",
    "fpn_ops",
    "fpn_lateral_op",
    "fpn_shared_ops",
    "head_ops",
    "fixed_key",
    "keys",
    "STAGES",
]


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


def keys(ops: tuple[Op, ...]) -> tuple[OpKey, ...]:
    """The table keys of the timed ``ops`` (the others run inside the fixed entry)."""
    return tuple(OpKey(op.kind, op.values) for op in ops if op.timed)


@lru_cache(maxsize=4096)
def stem_ops(stem: int, h: int, w: int) -> tuple[OpKey, ...]:
    """The 7x7 stride-2 convolution and the 3x3 stride-2 max-pool on an ``h x w`` padded image."""
    return keys(lowering.stem(stem, h, w))


@lru_cache(maxsize=65536)
def block_ops(block: str, groups: int, cin: int, mid: int, out: int, stride: int, h: int, w: int) -> tuple[OpKey, ...]:
    """One residual block on an ``h x w`` input; the last convolution fuses the add and ReLU."""
    return keys(lowering.block(block, groups, cin, mid, out, stride, h, w))


@lru_cache(maxsize=65536)
def fpn_ops(spec: DetectorSpec, widths: tuple[int, ...], ph: int, pw: int) -> tuple[OpKey, ...]:
    """Lateral 1x1 convs (fusing the top-down add), upsamples, 3x3 output convs and extra levels."""
    return keys(lowering.fpn(spec, widths, ph, pw))


def fpn_lateral_op(spec: DetectorSpec, level: int, width: int, ph: int, pw: int) -> OpKey:
    """The lateral conv of returned ``level`` reading a ``width``-channel stage output."""
    return keys((lowering.fpn_lateral(spec, level, width, ph, pw),))[0]


@lru_cache(maxsize=4096)
def fpn_shared_ops(spec: DetectorSpec, ph: int, pw: int) -> tuple[OpKey, ...]:
    """The FPN ops no backbone width changes (upsamples, output convs, extra levels)."""
    return keys(lowering.fpn_shared(spec, ph, pw))


@lru_cache(maxsize=4096)
def head_ops(spec: DetectorSpec, ph: int, pw: int) -> tuple[OpKey, ...]:
    """The dense heads on every level, and the R-CNN box head's linears (one row per proposal)."""
    return keys(lowering.heads(spec, ph, pw))


def fixed_key(spec: DetectorSpec, input_size: tuple[int, int]) -> OpKey:
    """The entry for what no kernel entry holds, for this detector head, its proposal counts and
    untimed heads' width (:meth:`~jdnas_sdk.families.base.Family.fixed_settings`) and image size."""
    rh, rw, _, _ = detector_input(spec, input_size)
    levels = "".join(str(k) for k in spec.returned_layers)
    pre, props, head = get_family(spec.family).fixed_settings(spec)
    return OpKey(
        "fixed",
        (
            spec.family,
            spec.num_classes,
            spec.fpn_channels,
            levels,
            pre,
            props,
            head,
            spec.detections_per_img or 0,
            input_size[0],
            input_size[1],
            rh,
            rw,
        ),
    )


def _stage_ops(ops: tuple[OpKey, ...]) -> tuple[tuple[OpKey, int], ...]:
    return tuple(Counter(ops).items())


def lower(spec: DetectorSpec, arch: Arch, input_size: tuple[int, int]) -> Lowered:
    """The ops of detector ``(spec, arch)`` on one image of ``input_size`` = (height, width)."""
    _, _, ph, pw = detector_input(spec, input_size)
    stages = [(name, _stage_ops(keys(ops))) for name, ops in lowering.lower_ops(spec, arch, ph, pw)]
    return Lowered(stages=tuple(stages), fixed=fixed_key(spec, input_size))
