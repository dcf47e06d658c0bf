"""Analytical parameters, multiply-accumulates and FLOPs of a detector, from (spec, arch, input size).

For reports and for the search's quick filters: no model is built. Computed from the same
lowering the latency estimator times (:mod:`jdnas_sdk.lowering`), so cost and latency describe
one detector. Parameters are exact (tests check them against the built model); MACs count
convolutions and linear layers (norms, activations, pooling and post-processing are left out),
with RoI heads charged for ``rois`` regions of interest (torchvision keeps 1000 proposals per
image at test time); FLOPs are two per MAC.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._args import as_arch, as_input_size, as_spec
from .arch import Arch, DetectorSpec
from .lowering import lower_ops

__all__ = ["Cost", "detector_cost"]

#: Cost parts, and the lowering stages each one sums.
_PARTS: dict[str, tuple[str, ...]] = {
    "backbone": ("stem", "layer1", "layer2", "layer3", "layer4"),
    "fpn": ("fpn",),
    "heads": ("heads",),
}


@dataclass(frozen=True)
class Cost:
    """Parameter count and multiply-accumulates (MACs) of the parts of a detector."""

    params: dict[str, int]
    macs: dict[str, int]

    @property
    def flops(self) -> dict[str, int]:
        """Floating-point operations per part: two (a multiply and an add) per MAC."""
        return {part: 2 * macs for part, macs in self.macs.items()}

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs


def detector_cost(
    spec: DetectorSpec, arch: Arch, *, input_size: tuple[int, int] | None = None, rois: int | None = None
) -> Cost:
    """Parameters and MACs of the detector ``(spec, arch)`` on a ``(height, width)`` input
    (default: a square ``spec.max_size`` image), the image taken as the backbone sees it, with
    ``rois`` regions of interest per image for RoI heads (default: as many as the family keeps)."""
    spec, arch = as_spec(spec), as_arch(arch)
    h, w = as_input_size(input_size) or (spec.max_size, spec.max_size)
    stages = dict(lower_ops(spec, arch, h, w, rois=rois))
    params = {part: sum(op.params for s in names for op in stages[s]) for part, names in _PARTS.items()}
    macs = {part: sum(op.macs for s in names for op in stages[s]) for part, names in _PARTS.items()}
    return Cost(params=params, macs=macs)
