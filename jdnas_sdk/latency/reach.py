"""Every op a student of a search space can run: what the profiler must measure.

Each kernel depends on at most two widths (a convolution's input and output), so the set is
enumerated pair by pair per block position and stays in the low thousands even though the space
holds astronomically many architectures. It is built from the same lowering functions the
estimator uses, so an arch of the space never lowers to an op this set lacks (tested).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product

from ..arch import DetectorSpec
from ..lowering import stage_sizes
from ..space import SearchSpace
from ..student import Heads, Student
from .lower import block_ops, detector_input, fixed_key, fpn_lateral_op, fpn_ops, fpn_shared_ops, head_ops, stem_ops
from .ops import OpKey

__all__ = ["reachable_ops", "head_specs", "fixed_specs", "in_setting", "in_fixed_setting", "spread_timed"]

#: Head settings the fixed entry depends on (besides the input size): see ``Family.fixed_settings``.
_FIXED_SETTINGS = ("fpn", "size", "proposals", "mask", "topk")
#: The :class:`~jdnas_sdk.student.Heads` fields the table times as kernels (box head, one-stage
#: towers): a fixed entry holds for every value of these.
_TIMED_HEADS = ("box", "convs", "width")


def head_specs(spec: DetectorSpec, space: SearchSpace, only: tuple[str, ...] | None = None) -> list[DetectorSpec]:
    """``spec`` with every choice of the space's head settings (only those named in ``only``
    vary; the rest keep ``spec``'s value); just ``spec`` for a backbone-only space."""
    values = space.head_values()
    if not values:
        return [spec]
    own = {k: v for k, v in space.heads_of(Heads.of(spec)).items() if k in values}
    names = [k for k in values if only is None or k in only]
    out = [
        space.make_heads({**own, **dict(zip(names, choice))}).apply(spec)
        for choice in product(*(values[k] for k in names))
    ]
    return list(dict.fromkeys(out))


def fixed_specs(spec: DetectorSpec, space: SearchSpace) -> list[DetectorSpec]:
    """One spec per fixed entry a student of the space can need (FPN width, input size,
    proposals and mask-head width vary; the box head and towers are timed kernels)."""
    return head_specs(spec, space, _FIXED_SETTINGS)


def in_setting(student: Student, variant: DetectorSpec) -> Student:
    """``student`` moved into head setting ``variant``'s fixed entry: the fixed settings (FPN width,
    input size, proposals, mask head) are ``variant``'s, the kernel-timed heads (box head width, tower
    depth and width) stay the student's. The detectors a fixed entry averages over are made this way,
    so that the entry describes the students the search meets: their heads decide how many boxes the
    post-processing keeps (on one AMD EPYC, RetinaNet students with 1-3 tower convs read 6-9% slower
    than estimated from entries timed on 4-conv detectors alone, 4-conv students 4%)."""
    own = Heads.of(variant)
    if student.heads is None:
        return Student(student.arch, own)
    kept = {f: getattr(student.heads, f) for f in _TIMED_HEADS if getattr(own, f) is not None}
    return Student(student.arch, replace(own, **kept))


def spread_timed(students: list[Student], space: SearchSpace) -> list[Student]:
    """``students`` with their kernel-timed heads (box head width, tower depth and width) taking the
    values of ``space``'s grid in turn: student ``j`` gets the ``j``-th value of each (cycling), the
    rest of it kept. A fixed entry averaged over a few such students covers every value, where a
    random draw of three can miss some: on one AMD EPYC three drawn RetinaNet students held no 2- or
    3-conv tower, and the benchmark then read students with those towers 6.5% slower than estimated,
    4-conv ones 0.8%."""
    values = space.head_values()
    out = []
    for j, student in enumerate(students):
        if student.heads is None:
            out.append(student)
            continue
        choice = space.heads_of(student.heads)
        for knob in _TIMED_HEADS:
            if knob in values:
                choice[knob] = values[knob][j % len(values[knob])]
        out.append(Student(student.arch, space.make_heads(choice)))
    return out


def in_fixed_setting(spec: DetectorSpec, variant: DetectorSpec) -> bool:
    """Whether a detector of ``spec`` (of ``variant``'s family: compare their fixed keys first) times
    as head setting ``variant``'s fixed entry: everything but the kernel-timed heads (box head width,
    tower depth and width) is ``variant``'s, anchors and post-processing thresholds included."""
    own, wanted = Heads.of(spec), Heads.of(variant)
    timed = {f: getattr(wanted, f) for f in _TIMED_HEADS if getattr(own, f) is not None}
    return replace(own, **timed).apply(spec) == variant


def reachable_ops(spec: DetectorSpec, space: SearchSpace, input_size: tuple[int, int]) -> list[OpKey]:
    """Ops of every student in ``space`` under the detector head ``spec`` at ``input_size``, in the
    order a detector runs them (the ``fixed`` entry is not an op and is left out). With a head
    grid (``space.spec``), every head setting's ops at every input size of the grid."""
    if space.head_values():
        return _reachable_heads(spec, space, input_size)
    return _reachable(spec, space, input_size)


def _reachable_heads(spec: DetectorSpec, space: SearchSpace, input_size: tuple[int, int]) -> list[OpKey]:
    seen: dict[OpKey, None] = {}
    for variant in head_specs(spec, space, ("size",)):
        seen.update(dict.fromkeys(_reachable(variant, space, input_size, fpn=False)))
    for variant in head_specs(spec, space):
        _, _, ph, pw = detector_input(variant, input_size)
        seen.update(dict.fromkeys(fpn_shared_ops(variant, ph, pw)))
        for level, k in enumerate(variant.returned_layers):
            grid = space.stage_widths(k)
            seen.update(dict.fromkeys(fpn_lateral_op(variant, level, width, ph, pw) for width in grid))
        seen.update(dict.fromkeys(head_ops(variant, ph, pw)))
    return list(seen)


def _reachable(spec: DetectorSpec, space: SearchSpace, input_size: tuple[int, int], *, fpn: bool = True) -> list[OpKey]:
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
    if not fpn:
        return list(seen)
    returned = spec.returned_layers
    grids = [space.stage_widths(s) if s in returned else (base.stages[s - 1].width,) for s in range(1, 5)]
    for widths in product(*grids):
        add(fpn_ops(spec, tuple(widths), ph, pw))
    add(head_ops(spec, ph, pw))
    seen.pop(fixed_key(spec, input_size), None)
    return list(seen)
