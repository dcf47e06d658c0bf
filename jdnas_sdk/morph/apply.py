"""``morph(model, actions)``: a new student detector whose weights are inherited from ``model``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from math import lcm

import torch
from torch import nn

from .._seed import seeded, stable_seed
from ..arch import Arch
from ..detectors import build_detector, describe
from ..errors import ArchError
from ..student import Heads, Student
from .actions import (
    Action,
    AddBlock,
    MoveBoundary,
    RemoveBlock,
    SetBlockWidth,
    SetStageWidth,
    actions_to,
    apply_action,
    snap,
)
from .heads import SetHead, apply_head, morph_heads
from .importance import IMPORTANCES, Importance
from .inherit import Plan, mid_writers, select_channels, stream_writers, tied_streams, transfer

__all__ = ["morph", "morph_step", "morph_to", "inherited", "AfterStep"]

log = logging.getLogger(__name__)

#: Called after each morphism step as ``after_step(before, after, action)``; it may change
#: ``after``'s weights in place (a data-driven repair such as :func:`~jdnas_sdk.morph.refit.refit_towers`,
#: which needs the two detectors one step apart: same input size, same channels).
AfterStep = Callable[[nn.Module, nn.Module, "Action | SetHead"], None]


def _plan(parent: nn.Module, arch: Arch, action: Action, importance: Importance) -> Plan:
    plan = Plan.identity(arch)
    body = parent.backbone.body
    if isinstance(action, AddBlock):
        row = plan.blocks[action.stage - 1]
        row.insert(action.index + 1, None)
    elif isinstance(action, RemoveBlock):
        del plan.blocks[action.stage - 1][action.index]
    elif isinstance(action, MoveBoundary):
        a, b = plan.blocks[action.stage - 1], plan.blocks[action.stage]
        if action.earlier:
            b.insert(1, a.pop())
        else:
            a.append(b.pop(1))
    elif isinstance(action, SetBlockWidth):
        block = getattr(body, f"layer{action.stage}")[action.index]
        first, second = mid_writers(block)
        plan.mids[(action.stage, action.index)] = (
            select_channels(importance(first), action.mid, groups=arch.groups),
            select_channels(importance(second), action.mid, groups=arch.groups),
        )
    elif isinstance(action, SetStageWidth):
        chosen = select_channels(importance(stream_writers(body, action.stage)), action.width)
        for stream in tied_streams(body, action.stage):
            plan.streams[stream] = chosen
    return plan


@torch.no_grad()
def morph_step(
    model: nn.Module, action: Action | SetHead, *, importance: str | Importance = "bn", multiple: int = 8
) -> nn.Module:
    """One action: a new detector of the changed arch (or head setting, :class:`SetHead`), its
    weights inherited from ``model``."""
    spec, arch = describe(model)
    if isinstance(action, SetHead):
        return morph_heads(model, apply_head(Heads.of(spec), action), importance=importance)
    score = IMPORTANCES[importance] if isinstance(importance, str) else importance
    if isinstance(action, SetBlockWidth):
        action = replace(action, mid=snap(action.mid, lcm(multiple, arch.groups)))
    elif isinstance(action, SetStageWidth):
        action = replace(action, width=snap(action.width, multiple))
    new_arch = apply_action(arch, action)
    with seeded(stable_seed("morph", arch, action)):  # what is not inherited starts the same in every run
        student = build_detector(spec, new_arch)
    transfer(model, student, _plan(model, arch, action, score), arch, new_arch, spec.returned_layers)
    student.train(model.training)
    return student


def morph(
    model: nn.Module,
    actions: Sequence[Action | SetHead] | Action | SetHead,
    *,
    importance: str | Importance = "bn",
    multiple: int = 8,
    after_step: AfterStep | None = None,
) -> nn.Module:
    """Apply ``actions`` in order; returns the student (``model`` is left untouched).

    ``importance`` ranks channels for narrowing and widening: ``"bn"`` (``|gamma| + |beta|`` of
    the norms), ``"l1"`` (filter L1 norms) or any :data:`~jdnas_sdk.morph.importance.Importance`.
    Widths snap to ``multiple`` (mid widths also to the ResNeXt groups). ``after_step``: see
    :data:`AfterStep` (None: the morph is a function of the weights alone).
    """
    if isinstance(importance, str) and importance not in IMPORTANCES:
        raise ArchError(f"importance must be one of {sorted(IMPORTANCES)} or a callable, got {importance!r}")
    steps = [actions] if not isinstance(actions, Sequence) else list(actions)
    current = model
    for action in steps:
        before, current = current, morph_step(current, action, importance=importance, multiple=multiple)
        if after_step is not None:
            after_step(before, current, action)
    if current is model:  # no actions: still hand back an independent copy
        spec, arch = describe(model)
        current = build_detector(spec, arch)
        current.load_state_dict(model.state_dict())
        current.train(model.training)
    return current


def morph_to(
    model: nn.Module,
    arch: Arch | Student,
    *,
    importance: str | Importance = "bn",
    multiple: int = 8,
    after_step: AfterStep | None = None,
) -> nn.Module:
    """A student of backbone ``arch`` inheriting ``model``'s weights, reached by :func:`actions_to`;
    a whole :class:`~jdnas_sdk.student.Student` also takes its head settings (:func:`morph_heads`).
    With ``after_step``, a change of tower depth, then of tower width, is its own step (then the
    other head settings), so the hook sees each between two detectors that differ in nothing else."""
    heads = arch.heads if isinstance(arch, Student) else None
    arch = arch.arch if isinstance(arch, Student) else arch
    student = morph(
        model, actions_to(describe(model)[1], arch), importance=importance, multiple=multiple, after_step=after_step
    )
    got = describe(student)[1]
    if got != arch:
        raise ArchError(f"morphing reached {got}, not {arch} (widths snap to multiples of {multiple})")
    current = Heads.of(describe(student)[0])
    for knob in ("convs", "width") if heads is not None and after_step is not None else ():
        if getattr(heads, knob) != getattr(current, knob):  # its own step, seen by the hook
            step = SetHead(knob, getattr(heads, knob))
            before, student = student, morph_heads(student, apply_head(current, step), importance=importance)
            after_step(before, student, step)  # type: ignore[misc]
            current = Heads.of(describe(student)[0])
    if heads is not None and heads != current:
        student = morph_heads(student, heads, importance=importance)
    return student


def inherited(model: nn.Module, student: Student, *, after_step: AfterStep | None = None) -> nn.Module:
    """``student`` with ``model``'s weights (:func:`morph_to`, with ``after_step``: the search's tower refit
    makes the stand-in its candidate before training), what a student's time is measured on: a detector's
    time follows its weights (how many boxes reach NMS), so fresh random weights time another
    detector. Where morphing fails (a code it cannot reach, a width off the snap multiple, or any other
    error: a timing must not end a search hours in), the student is built with random weights drawn
    from its code (the same detector in every run), and the reason is logged."""
    try:
        return morph_to(model, student, after_step=after_step)
    except Exception as exc:  # noqa: BLE001 - a timing proxy: any failure falls back, logged with its reason
        log.warning("morphing to %s failed (%s); timing it with random weights", student, exc, exc_info=True)
        with seeded(stable_seed("inherited", student)):
            return build_detector(describe(model)[0], student)
