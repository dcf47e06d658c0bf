"""Morphism actions on an :class:`Arch`: what changes, as small frozen values.

An action is pure data; :func:`apply_action` gives the arch it leads to and
:func:`available_actions` lists what can be done from an arch. How weights follow an action is
the business of :mod:`jdnas_sdk.morph.inherit`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import lcm

from .._args import as_arch
from ..arch import Arch, Stage
from ..errors import ArchError

__all__ = [
    "AddBlock",
    "RemoveBlock",
    "MoveBoundary",
    "SetBlockWidth",
    "SetStageWidth",
    "Action",
    "apply_action",
    "available_actions",
    "snap",
    "actions_to",
]


@dataclass(frozen=True)
class AddBlock:
    """Insert a block after block ``index`` of ``stage`` (1-based stage); it starts as the identity."""

    stage: int
    index: int


@dataclass(frozen=True)
class RemoveBlock:
    """Remove block ``index`` (>= 1: the stage's first block does the striding) of ``stage``."""

    stage: int
    index: int


@dataclass(frozen=True)
class MoveBoundary:
    """Move the boundary between ``stage`` and ``stage + 1`` by one block.

    ``earlier=True`` moves the last block of ``stage`` into ``stage + 1`` (the channel doubling
    and down-sampling happen one block earlier); ``False`` moves the first non-striding block of
    ``stage + 1`` into ``stage``.
    """

    stage: int
    earlier: bool


@dataclass(frozen=True)
class SetBlockWidth:
    """Set the mid width of block ``index`` of ``stage``: narrowing prunes, widening preserves function."""

    stage: int
    index: int
    mid: int


@dataclass(frozen=True)
class SetStageWidth:
    """Set the residual-stream width of ``stage`` (every block's output, the next stage's input, the FPN lateral).

    Where stage 1 adds to the stem's channels with no projection (ResNet-18/34), the stem follows.
    """

    stage: int
    width: int


Action = AddBlock | RemoveBlock | MoveBoundary | SetBlockWidth | SetStageWidth


def snap(value: float, multiple: int) -> int:
    """``value`` rounded to the nearest positive multiple of ``multiple``."""
    return max(multiple, int(round(value / multiple)) * multiple)


def _stage(arch: Arch, stage: int) -> Stage:
    if not isinstance(stage, int) or not 1 <= stage <= len(arch.stages):
        raise ArchError(f"stage must be 1..{len(arch.stages)}, got {stage!r}")
    return arch.stages[stage - 1]


def _with_stage(arch: Arch, stage: int, new: Stage) -> Arch:
    stages = list(arch.stages)
    stages[stage - 1] = new
    return replace(arch, stages=tuple(stages))


def apply_action(arch: Arch, action: Action) -> Arch:
    """The arch ``action`` leads to; raises :class:`ArchError` when it does not apply to ``arch``."""
    if isinstance(action, AddBlock):
        st = _stage(arch, action.stage)
        if not 0 <= action.index < st.depth:
            raise ArchError(f"AddBlock index must be 0..{st.depth - 1} for stage {action.stage}, got {action.index}")
        mids = st.mids[: action.index + 1] + (st.mids[action.index],) + st.mids[action.index + 1 :]
        return _with_stage(arch, action.stage, Stage(st.width, mids))
    if isinstance(action, RemoveBlock):
        st = _stage(arch, action.stage)
        if not 1 <= action.index < st.depth:
            raise ArchError(
                f"RemoveBlock index must be 1..{st.depth - 1} for stage {action.stage} (block 0 does the "
                f"striding; a stage keeps at least one block), got {action.index}"
            )
        return _with_stage(arch, action.stage, Stage(st.width, st.mids[: action.index] + st.mids[action.index + 1 :]))
    if isinstance(action, MoveBoundary):
        if not 1 <= action.stage < len(arch.stages):
            raise ArchError(f"MoveBoundary stage must be 1..{len(arch.stages) - 1}, got {action.stage}")
        a, b = arch.stages[action.stage - 1], arch.stages[action.stage]
        if action.earlier:
            if a.depth < 2:
                raise ArchError(f"stage {action.stage} has one block; it cannot give one to stage {action.stage + 1}")
            a2, b2 = Stage(a.width, a.mids[:-1]), Stage(b.width, (b.mids[0], a.mids[-1]) + b.mids[1:])
        else:
            if b.depth < 2:
                raise ArchError(f"stage {action.stage + 1} has one block; it cannot give one to stage {action.stage}")
            a2, b2 = Stage(a.width, a.mids + (b.mids[1],)), Stage(b.width, (b.mids[0],) + b.mids[2:])
        return _with_stage(_with_stage(arch, action.stage, a2), action.stage + 1, b2)
    if isinstance(action, SetBlockWidth):
        st = _stage(arch, action.stage)
        if not 0 <= action.index < st.depth:
            raise ArchError(f"block index must be 0..{st.depth - 1} for stage {action.stage}, got {action.index}")
        mids = st.mids[: action.index] + (action.mid,) + st.mids[action.index + 1 :]
        return _with_stage(arch, action.stage, Stage(st.width, mids))
    if isinstance(action, SetStageWidth):
        st = _stage(arch, action.stage)
        widened = _with_stage(arch, action.stage, Stage(action.width, st.mids))
        if action.stage == 1 and arch.stem == st.width:  # no projection: stem and stage 1 share channels
            widened = replace(widened, stem=action.width)
        return widened
    raise ArchError(f"unknown morphism action {action!r}")


def available_actions(
    arch: Arch, *, multiple: int = 8, ratios: tuple[float, ...] = (0.75, 0.5, 1.25), max_depth: int = 64
) -> list[Action]:
    """Every action applicable to ``arch``: add/remove a block, move a boundary, and width changes
    by ``ratios`` snapped to ``multiple`` (and to the groups of a ResNeXt for mid widths)."""
    arch, out = as_arch(arch), list[Action]()
    mid_multiple = lcm(multiple, arch.groups)
    for s, st in enumerate(arch.stages, start=1):
        if st.depth < max_depth:
            out.extend(AddBlock(s, j) for j in range(st.depth))
        out.extend(RemoveBlock(s, j) for j in range(1, st.depth))
        if s < len(arch.stages):
            if st.depth > 1:
                out.append(MoveBoundary(s, earlier=True))
            if arch.stages[s].depth > 1:
                out.append(MoveBoundary(s, earlier=False))
        widths = {snap(st.width * r, multiple) for r in ratios} - {st.width}
        out.extend(SetStageWidth(s, w) for w in sorted(widths))
        for j, mid in enumerate(st.mids):
            mids = {snap(mid * r, mid_multiple) for r in ratios} - {mid}
            out.extend(SetBlockWidth(s, j, m) for m in sorted(mids))
    return [a for a in out if _valid(arch, a)]


def _valid(arch: Arch, action: Action) -> bool:
    try:
        apply_action(arch, action)
    except ArchError:
        return False
    return True


def actions_to(source: Arch, target: Arch) -> list[Action]:
    """Actions that turn ``source`` into ``target``: per stage, blocks added (copies of the last)
    or removed from the end, then stage widths, then block widths.

    Block type and groups must match, and an untied stem must keep its width (no action changes it).
    """
    if (source.block, source.groups) != (target.block, target.groups):
        raise ArchError(f"cannot morph {source.block}/g{source.groups} into {target.block}/g{target.groups}")
    tied = source.stem == source.stages[0].width
    if not tied and source.stem != target.stem:
        raise ArchError(f"no action changes an untied stem ({source.stem} -> {target.stem})")
    if tied and target.stem != target.stages[0].width:
        raise ArchError(f"the stem is tied to stage 1 in {source}; the target must keep it tied")
    actions: list[Action] = []
    for s, (a, b) in enumerate(zip(source.stages, target.stages), start=1):
        actions += [AddBlock(s, a.depth - 1)] * max(0, b.depth - a.depth)
        actions += [RemoveBlock(s, j) for j in range(a.depth - 1, b.depth - 1, -1)]
    for s, (a, b) in enumerate(zip(source.stages, target.stages), start=1):
        if a.width != b.width:
            actions.append(SetStageWidth(s, b.width))
    for s, stage in enumerate(target.stages, start=1):
        depth = min(source.stages[s - 1].depth, stage.depth)
        current = source.stages[s - 1].mids[:depth] + (source.stages[s - 1].mids[-1],) * (stage.depth - depth)
        actions += [SetBlockWidth(s, j, mid) for j, (old, mid) in enumerate(zip(current, stage.mids)) if old != mid]
    return actions
