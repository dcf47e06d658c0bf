"""Every op a student of a search space can run: what the profiler must measure.

Each kernel depends on at most two widths (a convolution's input and output), so the set is
enumerated pair by pair per block position and stays in the low thousands even though the space
holds astronomically many architectures. It is built from the same lowering functions the
estimator uses, so an arch of the space never lowers to an op this set lacks (tested).
"""

from __future__ import annotations

from itertools import product

from ..arch import DetectorSpec
from ..lowering import stage_sizes
from ..space import SearchSpace
from .lower import block_ops, detector_input, fixed_key, fpn_ops, head_ops, stem_ops
from .ops import OpKey

__all__ = ["reachable_ops"]


def reachable_ops(spec: DetectorSpec, space: SearchSpace, input_size: tuple[int, int]) -> list[OpKey]:
    """Ops of every arch in ``space`` under the detector head ``spec`` at ``input_size``, in the
    order a detector runs them (the ``fixed`` entry is not an op and is left out)."""
    _, _, ph, pw = detector_input(spec, input_size)
    base = space.base
    seen: dict[OpKey, None] = {}

    def add(ops: tuple[OpKey, ...]) -> None:
        seen.update(dict.fromkeys(ops))

    for stem in space.stem_widths():
        add(stem_ops(stem, ph, pw))
    sizes = stage_sizes(ph, pw)
    for s in range(1, 5):
        stride = 2 if s > 1 else 1
        outs, mids = space.stage_widths(s), space.mid_widths(s)
        if s > 1:
            firsts = product(space.stage_widths(s - 1), outs)
        elif space.tied_stem:
            firsts = ((out, out) for out in outs)
        else:
            firsts = product(space.stem_widths(), outs)
        h, w = sizes[s - 1]
        for (cin, out), mid in product(list(firsts), mids):
            add(block_ops(base.block, base.groups, cin, mid, out, stride, h, w))
        h, w = sizes[s]
        if space.depth_range(s)[1] > 1:
            for out, mid in product(outs, mids):
                add(block_ops(base.block, base.groups, out, mid, out, 1, h, w))
    returned = spec.returned_layers
    grids = [space.stage_widths(s) if s in returned else (base.stages[s - 1].width,) for s in range(1, 5)]
    for widths in product(*grids):
        add(fpn_ops(spec, tuple(widths), ph, pw))
    add(head_ops(spec, ph, pw))
    seen.pop(fixed_key(spec, input_size), None)
    return list(seen)
