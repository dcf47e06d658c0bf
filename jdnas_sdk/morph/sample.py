"""Random architectures around a base, reproducible by seed: for the search and latency benchmarks."""

from __future__ import annotations

import random
from math import lcm

from .._args import as_arch
from ..arch import Arch, Stage
from ..errors import ArchError
from .actions import snap

__all__ = ["sample_arch"]


def sample_arch(
    base: Arch,
    *,
    seed: int | random.Random = 0,
    depth: tuple[float, float] = (0.5, 1.5),
    width: tuple[float, float] = (0.5, 1.5),
    multiple: int = 8,
) -> Arch:
    """An arch whose stage depths and all widths are the base's scaled by factors drawn uniformly
    from ``depth`` and ``width`` (per stage, per block), snapped to ``multiple``.

    Block type and groups are the base's; a stem tied to stage 1 (no projection) stays tied.
    """
    base = as_arch(base, "base")
    for name, (lo, hi) in (("depth", depth), ("width", width)):
        if not 0 < lo <= hi:
            raise ArchError(f"{name} range must satisfy 0 < low <= high, got {(lo, hi)}")
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    mid_multiple = lcm(multiple, base.groups)
    stages = []
    for stage in base.stages:
        count = max(1, round(stage.depth * rng.uniform(*depth)))
        reference = [stage.mids[min(i * stage.depth // count, stage.depth - 1)] for i in range(count)]
        mids = tuple(snap(m * rng.uniform(*width), mid_multiple) for m in reference)
        stages.append(Stage(width=snap(stage.width * rng.uniform(*width), multiple), mids=mids))
    tied = base.stem == base.stages[0].width
    stem = stages[0].width if tied else snap(base.stem * rng.uniform(*width), multiple)
    return Arch(block=base.block, stem=stem, stages=tuple(stages), groups=base.groups)
