"""The search's moves: single morphism steps from a student that stay in the search space, and
proposals that chain them into a student the latency table puts within a bound.

A move changes one thing one step along the space's grid: a block added or removed, a stage or
block width one grid step wider or narrower, a stage boundary moved, or (for a whole student of a
space with a head grid) one head setting one step along its grid. :func:`propose` draws 1 to
``max_actions`` of them and then shrinking ones while the table says the result is still over the
bound, and rejects a proposal by the table before anything trains. Both the joint search and the
pipeline's search stage propose through here; neither trains nor touches files here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..arch import Arch
from ..errors import SearchError
from ..latency import ConfirmedLatency, Estimator
from ..morph import (
    Action,
    AddBlock,
    MoveBoundary,
    RemoveBlock,
    SetBlockWidth,
    SetHead,
    SetStageWidth,
    apply_action,
    apply_head,
)
from ..space import SearchSpace
from ..student import Student

__all__ = [
    "moves",
    "apply_move",
    "set_head",
    "propose",
    "as_searched",
    "search_latency",
    "PINNED_TABLE",
]


def _grid_step(grid: tuple[int, ...], value: int, step: int) -> int | None:
    if value not in grid:
        return None
    index = grid.index(value) + step
    return grid[index] if 0 <= index < len(grid) else None


def moves(arch: Arch | Student, space: SearchSpace) -> list[Action | SetHead]:
    """Single actions from ``arch`` (a backbone, or a whole student) that stay in ``space``, widths
    moving one grid step; for a student of a space with a head grid, also every head setting one
    step along its grid (:class:`~jdnas_sdk.morph.SetHead`)."""
    if isinstance(arch, Student):
        out: list[Action | SetHead] = list(moves(arch.arch, space))
        values = space.head_values()
        if arch.heads is None or not values:
            return out
        choice = space.heads_of(arch.heads)
        for knob, grid in values.items():
            for step in (-1, 1):
                new = _grid_step(grid, choice[knob], step)
                if new is not None:
                    out.append(set_head(space, knob, new))
        return out
    out = []
    for s, stage in enumerate(arch.stages, start=1):
        lo, hi = space.depth_range(s)
        if stage.depth < hi:
            out.append(AddBlock(s, stage.depth - 1))
        if stage.depth > lo:
            out += [RemoveBlock(s, j) for j in range(1, stage.depth)]
        for step in (-1, 1):
            width = _grid_step(space.stage_widths(s), stage.width, step)
            if width is not None:
                out.append(SetStageWidth(s, width))
            for j, mid in enumerate(stage.mids):
                new = _grid_step(space.mid_widths(s), mid, step)
                if new is not None:
                    out.append(SetBlockWidth(s, j, new))
        if s < 4:
            out += [MoveBoundary(s, earlier=True), MoveBoundary(s, earlier=False)]
    valid = []
    for action in out:
        try:
            if space.why_not(apply_action(arch, action)) is None:
                valid.append(action)
        except Exception:  # noqa: BLE001 - an action that does not apply is simply not a move
            continue
    return valid


def set_head(space: SearchSpace, knob: str, value: int) -> SetHead:
    """The move setting head setting ``knob`` to ``value`` as ``space`` spells it: a size move carries
    the ``max_size`` the space gives that size, a proposals move the count before the RPN's NMS, so the
    student a lineage of moves reaches is the space's (and the morph that builds it agrees)."""
    if knob == "size":
        return SetHead(knob, value, max_size=space.max_size_for(value))
    if knob == "proposals":
        return SetHead(knob, value, pre=space.pre_for(value))
    return SetHead(knob, value)


def apply_move(arch: Arch | Student, action: Action | SetHead) -> Arch | Student:
    """The backbone or student a move leads to (a backbone action on a student changes its backbone)."""
    if isinstance(arch, Student):
        if isinstance(action, SetHead):
            return Student(arch.arch, apply_head(arch.heads, action))
        return Student(apply_action(arch.arch, action), arch.heads)
    return apply_action(arch, action)


def _shrinks(action: Action | SetHead, arch: Arch | Student) -> bool:
    if isinstance(action, SetHead):
        return isinstance(arch, Student) and arch.heads is not None and action.value < arch.heads.value(action.knob)
    if isinstance(arch, Student):
        arch = arch.arch
    if isinstance(action, RemoveBlock):
        return True
    if isinstance(action, SetStageWidth):
        return action.width < arch.stages[action.stage - 1].width
    if isinstance(action, SetBlockWidth):
        return action.mid < arch.stages[action.stage - 1].mids[action.index]
    return False


#: The table a search on a measured table guesses from, pinned in the search's folder at its start
#: (:meth:`~jdnas_sdk.latency.ConfirmedLatency.pin`): a resumed search proposes as the killed one did.
PINNED_TABLE = "latency_at_start.json"


def search_latency(
    estimator: Estimator, confirmed: ConfirmedLatency | None
) -> tuple[Callable[[Any], float], Callable[[Any], float] | None]:
    """``(guess, confirm)`` for :func:`propose`: the estimator alone (nothing to confirm), or on a
    table this machine measures, ``confirmed``'s guess and confirmation."""
    if confirmed is None:
        return estimator.total_ms, None
    return confirmed.guess, confirmed.confirm


def propose(
    parent: Arch | Student,
    space: SearchSpace,
    latency: Callable[[Any], float],
    bound_ms: float,
    rng: random.Random,
    *,
    max_actions: int = 3,
    tries: int = 200,
    min_ms: float = 0.0,
    confirm: Callable[[Any], float] | None = None,
    max_confirms: int = 12,
) -> tuple[list[Any], Any, float, int]:
    """Moves from ``parent`` (1 to ``max_actions`` of them, then up to 40 more shrinking ones while
    still over the bound) whose result the table puts within ``bound_ms`` and, for gradual
    morphism, at or above ``min_ms``. With ``confirm`` (e.g.
    :meth:`~jdnas_sdk.latency.ConfirmedLatency.confirm`), ``latency`` is a guess and a proposal
    it admits must also be within the window by ``confirm``, whose time is returned; after a
    confirmation misses, guesses are scaled by its confirmed/guessed ratio, and after
    ``max_confirms`` misses the search stops with :class:`SearchError` (each costs measurements).

    Returns (actions, arch, estimated latency, rejected proposals). Over the bound, shrinking moves
    are drawn more often. Raises :class:`SearchError` when ``tries`` proposals all miss the bound.
    """
    rejected, missed, scale = 0, 0, 1.0

    def guess(arch: Any) -> float:
        return latency(arch) * scale

    for _ in range(tries):
        arch, actions = parent, []
        wanted = rng.randint(1, max_actions)
        while len(actions) < wanted or (guess(arch) > bound_ms and len(actions) < max_actions + 40):
            options = moves(arch, space)
            over = guess(arch) > bound_ms
            shrinking = [a for a in options if _shrinks(a, arch)]
            choices = shrinking if over and shrinking and (len(actions) >= wanted or rng.random() < 0.8) else options
            if not choices:
                break
            action = rng.choice(choices)
            arch = apply_move(arch, action)
            actions.append(action)
        if actions and arch != parent:
            ms = guess(arch)
            if min_ms <= ms <= bound_ms and confirm is not None:
                guessed, ms = latency(arch), confirm(arch)
                if not min_ms <= ms <= bound_ms:
                    missed += 1
                    scale = ms / guessed if guessed > 0 else scale
                    if missed >= max_confirms:
                        raise SearchError(
                            f"{missed} proposals from {parent} that the table's guesses put within {bound_ms:.2f} ms "
                            "were outside it when measured; profile the search space on this machine first "
                            "(`jdnas profile`), so that guesses are measurements"
                        )
            if min_ms <= ms <= bound_ms:
                return actions, arch, ms, rejected
        rejected += 1
    window = f"{min_ms:.2f}..{bound_ms:.2f} ms window" if min_ms else f"latency bound {bound_ms:.2f} ms"
    raise SearchError(f"no proposal from {parent} met the {window} in {tries} tries")


def as_searched(code: str, space: SearchSpace) -> Arch | Student:
    """A candidate's code as the search moves it: a whole student where the space has a head grid
    (a backbone-only code takes the space's base heads), else the backbone."""
    student = Student.parse(code)
    if not space.head_values():
        return student.arch
    return student if student.heads is not None else Student.of(space.spec, student.arch)
