"""The search space around a base backbone: which widths and depths a student may take.

Widths live on a finite grid (the base's widths times a few ratios, snapped to a multiple of 8)
so that the per-op latency table can enumerate every kernel a student can run: the profiler
measures the grid, the search samples and morphs on it, and the estimator never meets a width
the table could not have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from math import lcm

from .arch import Arch, Stage
from .errors import ArchError

__all__ = ["SearchSpace", "DEFAULT_WIDTH_RATIOS"]

#: Width multipliers of the default grid, relative to the base's width at the same place.
DEFAULT_WIDTH_RATIOS: tuple[float, ...] = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)


def _snap(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


@dataclass(frozen=True)
class SearchSpace:
    """Students reachable from ``base``: per stage, a depth in ``depth`` (ratios of the base's
    depth, at least one block) and residual-stream and block (mid) widths on the grid
    ``base width x width_ratios`` snapped to ``multiple`` (mid widths also to the groups).

    Block type and groups are the base's; a stem tied to stage 1 (ResNet-18/34: no projection)
    stays tied, otherwise it keeps the base's width.
    """

    base: Arch
    width_ratios: tuple[float, ...] = DEFAULT_WIDTH_RATIOS
    depth: tuple[float, float] = (0.5, 1.5)
    multiple: int = 8

    def __post_init__(self) -> None:
        ratios = tuple(float(r) for r in self.width_ratios)
        if not ratios or any(not 0 < r <= 8 for r in ratios):
            raise ArchError(f"width_ratios must be positive numbers up to 8, got {self.width_ratios!r}")
        object.__setattr__(self, "width_ratios", tuple(sorted(set(ratios))))
        lo, hi = self.depth
        if not 0 < lo <= 1 <= hi:
            raise ArchError(f"depth ratios must satisfy 0 < low <= 1 <= high, got {self.depth!r}")
        if not isinstance(self.multiple, int) or self.multiple < 1:
            raise ArchError(f"multiple must be a positive integer, got {self.multiple!r}")

    @property
    def tied_stem(self) -> bool:
        """Whether stage 1 adds to the stem's output with no projection (the stem follows stage 1)."""
        return self.base.stem == self.base.stages[0].width

    def _grid(self, width: int, multiple: int) -> tuple[int, ...]:
        return tuple(sorted({_snap(width * r, multiple) for r in self.width_ratios}))

    def stem_widths(self) -> tuple[int, ...]:
        """The stem follows stage 1 where tied to it; otherwise it keeps the base's width (no
        morphism action changes an untied stem)."""
        return self.stage_widths(1) if self.tied_stem else (self.base.stem,)

    def stage_widths(self, stage: int) -> tuple[int, ...]:
        """Residual-stream widths stage ``stage`` (1-based) may take."""
        return self._grid(self.base.stages[stage - 1].width, self.multiple)

    def mid_widths(self, stage: int) -> tuple[int, ...]:
        """Block (mid) widths of stage ``stage``; the grid is built on the stage's widest base block."""
        return self._grid(max(self.base.stages[stage - 1].mids), lcm(self.multiple, self.base.groups))

    def depth_range(self, stage: int) -> tuple[int, int]:
        base = self.base.stages[stage - 1].depth
        return max(1, round(base * self.depth[0])), max(1, round(base * self.depth[1]))

    def why_not(self, arch: Arch) -> str | None:
        """``None`` when ``arch`` is in the space, else what puts it outside (for error messages)."""
        if (arch.block, arch.groups) != (self.base.block, self.base.groups):
            return f"block {arch.block}/g{arch.groups} differs from the base's {self.base.block}/g{self.base.groups}"
        if self.tied_stem and arch.stem != arch.stages[0].width:
            return f"the stem ({arch.stem}) must equal stage 1's width ({arch.stages[0].width}) for this base"
        if arch.stem not in self.stem_widths():
            return f"stem width {arch.stem} is not on the grid {self.stem_widths()}"
        for s, stage in enumerate(arch.stages, start=1):
            lo, hi = self.depth_range(s)
            if not lo <= stage.depth <= hi:
                return f"stage {s} has {stage.depth} blocks, outside {lo}..{hi}"
            if stage.width not in self.stage_widths(s):
                return f"stage {s} width {stage.width} is not on the grid {self.stage_widths(s)}"
            bad = sorted(set(stage.mids) - set(self.mid_widths(s)))
            if bad:
                return f"stage {s} mid widths {bad} are not on the grid {self.mid_widths(s)}"
        return None

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, Arch) and self.why_not(arch) is None

    def sample(self, seed: int | random.Random = 0) -> Arch:
        """A random arch of the space (uniform per stage depth, stream width and block width)."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        stages = []
        for s in range(1, 5):
            lo, hi = self.depth_range(s)
            mids = tuple(rng.choice(self.mid_widths(s)) for _ in range(rng.randint(lo, hi)))
            stages.append(Stage(width=rng.choice(self.stage_widths(s)), mids=mids))
        stem = stages[0].width if self.tied_stem else self.base.stem
        return Arch(block=self.base.block, stem=stem, stages=tuple(stages), groups=self.base.groups)
