"""The search space around a base backbone: which widths and depths a student may take.

Widths live on a finite grid (the base's widths times a few ratios, snapped to a multiple of 8)
so that the per-op latency table can enumerate every kernel a student can run: the profiler
measures the grid, the search samples and morphs on it, and the estimator never meets a width
the table could not have seen.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import lcm

from ._args import as_arch, as_spec
from .arch import Arch, DetectorSpec, Stage
from .errors import ArchError
from .families import get_family
from .student import Heads, Student

__all__ = ["SearchSpace", "DEFAULT_WIDTH_RATIOS", "DEFAULT_HEAD_GRID"]

#: Width multipliers of the default grid, relative to the base's width at the same place.
DEFAULT_WIDTH_RATIOS: tuple[float, ...] = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)

#: The default head grid, per :class:`~jdnas_sdk.student.Heads` setting: ratios of the base's
#: value (``fpn``, ``size`` = input size, ``box``, ``mask``, ``width``), proposal counts kept at
#: test time (at most the base's), and convolutions per one-stage head tower. The input size also
#: goes up a step (1.25x): latency saved elsewhere (an R-CNN's proposals) can buy resolution. On the
#: benchmark's Faster R-CNN (256 px base, both at 300 proposals) the base's own weights at 320 px
#: scored +1.6 test AP untrained (384 px: +0.6; ``benchmarks/results/size_probe.md``). ``topk``
#: (one-stage boxes kept per level before NMS, counts, at most the base's) stays at torchvision's
#: 1000 by default: tables profiled before it hold no fixed entry for other counts; ask for it with
#: ``heads={"topk": (300, 1000)}`` (``jdnas profile --heads topk=300,1000`` profiles them).
DEFAULT_HEAD_GRID: dict[str, tuple[float, ...]] = {
    "fpn": (0.5, 0.75, 1.0),
    "size": (0.5, 0.75, 1.0, 1.25),
    "proposals": (50, 100, 300, 1000),
    "box": (0.25, 0.5, 1.0),
    "mask": (0.25, 0.5, 1.0),
    "convs": (1, 2, 3, 4),
    "width": (0.5, 0.75, 1.0),
    "topk": (1000,),
}
#: Input sizes snap to torchvision's padding multiple.
_SIZE_MULTIPLE = 32


def _snap(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


@dataclass(frozen=True)
class SearchSpace:
    """Students reachable from ``base``: per stage, a depth in ``depth`` (ratios of the base's
    depth, at least one block) and residual-stream and block (mid) widths on the grid
    ``base width x width_ratios`` snapped to ``multiple`` (mid widths also to the groups).

    Block type and groups are the base's; a stem tied to stage 1 (ResNet-18/34: no projection)
    stays tied, otherwise it keeps the base's width.

    With ``spec`` (the base detector's), the space covers the whole detector: each head setting
    of :class:`~jdnas_sdk.student.Heads` the family has takes a value on ``heads`` (see
    :data:`DEFAULT_HEAD_GRID`; :meth:`head_values` lists them) and the space holds
    :class:`~jdnas_sdk.student.Student` s. Without it, only the backbone varies (heads fixed).
    """

    base: Arch
    width_ratios: tuple[float, ...] = DEFAULT_WIDTH_RATIOS
    depth: tuple[float, float] = (0.5, 1.5)
    multiple: int = 8
    spec: DetectorSpec | None = None
    heads: tuple[tuple[str, tuple[float, ...]], ...] = tuple(DEFAULT_HEAD_GRID.items())

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", as_arch(self.base, "base"))
        if self.spec is not None:
            as_spec(self.spec)
        ratios = tuple(float(r) for r in self.width_ratios)
        if not ratios or any(not 0 < r <= 8 for r in ratios):
            raise ArchError(f"width_ratios must be positive numbers up to 8, got {self.width_ratios!r}")
        object.__setattr__(self, "width_ratios", tuple(sorted(set(ratios))))
        lo, hi = self.depth
        if not 0 < lo <= 1 <= hi:
            raise ArchError(f"depth ratios must satisfy 0 < low <= 1 <= high, got {self.depth!r}")
        if not isinstance(self.multiple, int) or self.multiple < 1:
            raise ArchError(f"multiple must be a positive integer, got {self.multiple!r}")
        grid = dict(self.heads.items() if isinstance(self.heads, dict) else self.heads)
        unknown = sorted(set(grid) - set(DEFAULT_HEAD_GRID))
        if unknown or any(not values or any(v <= 0 for v in values) for values in grid.values()):
            raise ArchError(f"heads grid: settings {sorted(DEFAULT_HEAD_GRID)} with positive values, got {grid!r}")
        object.__setattr__(
            self, "heads", tuple((k, tuple(sorted(set(grid.get(k, v))))) for k, v in DEFAULT_HEAD_GRID.items())
        )
        if self.spec is not None and not isinstance(self.spec, DetectorSpec):
            raise ArchError(f"spec must be a DetectorSpec, got {type(self.spec).__name__}")

    @property
    def tied_stem(self) -> bool:
        """Whether stage 1 adds to the stem's output with no projection (the stem follows stage 1)."""
        return self.base.stem == self.base.stages[0].width

    def _grid(self, width: int, multiple: int) -> tuple[int, ...]:
        return self._ratio_grid(width, self.width_ratios, multiple)

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
        if isinstance(arch, Student):
            return self.why_not_student(arch) is None
        return isinstance(arch, Arch) and self.why_not(arch) is None

    # -- heads ----------------------------------------------------------------------------------
    def head_values(self) -> dict[str, tuple[int, ...]]:
        """The values each head setting of the base detector's family may take (``{}`` without a
        spec). ``size`` lists ``min_size`` values; ``max_size`` goes with each (:meth:`max_size_for`)."""
        if self.spec is None:
            return {}
        spec, grid, base = self.spec, dict(self.heads), Heads.of(self.spec)
        fam = get_family(spec.family)
        out: dict[str, tuple[int, ...]] = {
            "fpn": self._ratio_grid(spec.fpn_channels, grid["fpn"], lcm(self.multiple, fam.fpn_multiple)),
            "size": self._ratio_grid(spec.min_size, grid["size"], _SIZE_MULTIPLE),
        }
        if base.proposals is not None:
            out["proposals"] = tuple(sorted({min(int(p), base.proposals) for p in grid["proposals"]}))
            out["box"] = self._ratio_grid(spec.representation_size, grid["box"], self.multiple)
        if base.mask is not None:
            out["mask"] = self._ratio_grid(spec.mask_head_width, grid["mask"], self.multiple)
        if base.convs is not None:
            out["convs"] = tuple(sorted({int(c) for c in grid["convs"]}))
            out["width"] = self._ratio_grid(spec.head_width, grid["width"], lcm(self.multiple, fam.fpn_multiple))
        if "topk_candidates" in fam.head_settings:
            out["topk"] = tuple(sorted({min(int(k), spec.topk_candidates) for k in grid["topk"]}))
        return self._runnable(out)

    def _runnable(self, values: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """``values`` less the tower widths and input sizes whose combination the family refuses
        (FCOS: a 32-wide GroupNorm tower on the 1x1 coarsest level of a small image cannot run one
        image): first the widths that fail at the smallest size (never the base's own), then the sizes
        that fail at the narrowest width left. Every student the space holds then builds and runs."""
        spec = self.spec
        if spec is None or "width" not in values:
            return values

        def runs(width: int, size: int) -> bool:
            try:
                replace(spec, head_width=width, min_size=size, max_size=max(size, spec.max_size))
            except ArchError:
                return False
            return True

        smallest = min(values["size"])
        widths = tuple(w for w in values["width"] if w == spec.head_width or runs(w, smallest))
        sizes = tuple(s for s in values["size"] if runs(min(widths), s))
        return {**values, "width": widths, "size": sizes}

    @staticmethod
    def _ratio_grid(value: int, ratios: tuple[float, ...], multiple: int) -> tuple[int, ...]:
        """The values ``value * ratio`` snapped to ``multiple``; ratio 1 is the base's own value as it
        is (a base off the multiple, e.g. 112 px, stays inside its own space)."""
        return tuple(sorted({value if r == 1 else _snap(value * r, multiple) for r in ratios}))

    def make_heads(self, values: dict[str, int]) -> Heads:
        """The :class:`Heads` of one choice per setting (``size`` = ``min_size``, its ``max_size`` by
        :meth:`max_size_for`; ``proposals`` the count after the RPN's NMS, the one before by :meth:`pre_for`)."""
        if self.spec is None:
            raise ArchError("this search space has no detector spec: its heads are fixed")
        size, p = values["size"], values.get("proposals")
        return Heads(
            fpn=values["fpn"],
            min_size=size,
            max_size=self.max_size_for(size),
            proposals=p,
            pre=self.pre_for(p),
            box=values.get("box"),
            mask=values.get("mask"),
            convs=values.get("convs"),
            width=values.get("width"),
            topk=values.get("topk"),
        )

    def max_size_for(self, size: int) -> int:
        """The ``max_size`` of this space's students of ``min_size`` ``size``: the base's own at the
        base's size (as it is), else the base's scaled with ``size``, snapped to 32, never below ``size``.
        A size move carries it (``search.moves.set_head``), so the student it leads to is the space's
        whatever path led there (scaling the parent's ``max_size`` would drift with each move)."""
        if self.spec is None:
            raise ArchError("this search space has no detector spec: its heads are fixed")
        spec = self.spec
        if size == spec.min_size:
            return spec.max_size
        return max(size, _snap(spec.max_size * size / spec.min_size, _SIZE_MULTIPLE))

    def pre_for(self, proposals: int | None) -> int | None:
        """The proposals kept before the RPN's NMS by this space's students keeping ``proposals`` after
        it: the base's own at the base's count (a base keeping 400 before and 200 after is inside its own
        space), else the same count, never more than the base's."""
        base = Heads.of(self.spec) if self.spec is not None else None
        if base is None or proposals is None or base.pre is None:
            return proposals
        return base.pre if proposals == base.proposals else min(proposals, base.pre)

    def heads_of(self, heads: Heads) -> dict[str, int]:
        """The setting -> value choice ``heads`` makes (the inverse of :meth:`make_heads`)."""
        return {knob: heads.value(knob) for knob in DEFAULT_HEAD_GRID}  # type: ignore[misc]

    def why_not_student(self, student: Student) -> str | None:
        """``None`` when ``student`` is in the space, else what puts it outside."""
        why = self.why_not(student.arch)
        if why or student.heads is None:
            return why
        values = self.head_values()
        if not values:
            return "this search space has no detector spec: its heads are fixed"
        choice = self.heads_of(student.heads)
        for name, grid in values.items():
            if choice[name] not in grid:
                return f"head setting {name}={choice[name]} is not on the grid {grid}"
        if student.heads != self.make_heads(choice):
            return (
                f"heads {student.heads} are not the space's (max_size follows min_size, "
                "pre equals proposals but at the base's count: SearchSpace.max_size_for, pre_for)"
            )
        return None

    def sample_student(self, seed: int | random.Random = 0) -> Student:
        """A random student: :meth:`sample` 's backbone, and a uniform choice per head setting."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        arch = self.sample(rng)
        values = self.head_values()
        if not values:
            return Student(arch)
        return Student(arch, self.make_heads({k: rng.choice(v) for k, v in values.items()}))

    def smallest(self) -> Student:
        """The cheapest corner of the space: every stage at its fewest blocks and narrowest widths,
        every head setting at its smallest value (the floor :func:`jdnas latency --floor` reports)."""
        stages = []
        for s in range(1, 5):
            lo, _ = self.depth_range(s)
            stages.append(Stage(width=min(self.stage_widths(s)), mids=(min(self.mid_widths(s)),) * lo))
        stem = stages[0].width if self.tied_stem else self.base.stem
        arch = Arch(block=self.base.block, stem=stem, stages=tuple(stages), groups=self.base.groups)
        values = self.head_values()
        return Student(arch, self.make_heads({k: min(v) for k, v in values.items()}) if values else None)

    def cheapest(self, latency: Callable[[Student], float]) -> Student:
        """The student of least ``latency``: :meth:`smallest`, then one setting at a time moved to
        whichever value of its grid is cheaper, until none is (a measured table is not exactly
        monotone: a smaller kernel can time slower)."""
        best = self.smallest()
        values = self.head_values()
        if best.heads is None:
            return best
        best_ms, improved = latency(best), True
        while improved:
            improved = False
            for name, grid in values.items():
                for value in grid:
                    choice = {**{k: v for k, v in self.heads_of(best.heads).items() if k in values}, name: value}
                    candidate = Student(best.arch, self.make_heads(choice))
                    ms = latency(candidate)
                    if ms < best_ms - 1e-9:
                        best, best_ms, improved = candidate, ms, True
        return best

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
