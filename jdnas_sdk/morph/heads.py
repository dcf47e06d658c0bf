"""Head morphism: a student with other head settings takes its parent's weights.

:class:`SetHead` changes one setting of :class:`~jdnas_sdk.student.Heads`; :func:`morph_heads`
builds the student and fills it through channel maps, as the backbone's morphism does
(:mod:`jdnas_sdk.morph.inherit`):

- **FPN width**: two channel spaces are cut (or widened) consistently everywhere: the top-down
  space (written by every lateral conv, read by the 3x3 output convs) and the output space
  (written by the output convs and the extra levels, read by the RPN conv, the RoI box head's
  first linear, the mask and keypoint heads' first convs and the one-stage towers; heads share
  weights over levels, so every level keeps the same channels). The RPN conv's own output space
  follows the FPN width too (torchvision ties it to the FPN's), ranked by its own importance: an
  FPN step is exact only where the RPN conv's dropped channels are zero as well.
- **Box head, mask head, tower width**: each layer's output space is ranked by the importance; a
  transposed conv (the mask predictor's ``conv5_mask``) is scored on its output channels too.
- **Tower depth**: a removed conv is the one closest to the identity among those after the first
  (they read ReLU outputs, so an identity conv there is exactly removable); an added conv is the
  identity (Dirac weights, zero bias), appended after the last one: the function is kept where
  no GroupNorm follows it (an FCOS tower conv's GroupNorm normalises the identity's output: close,
  not exact).
- **Proposals, input size, one-stage boxes kept before NMS** (``topk``): no weight changes.

Narrowing drops zero-importance channels exactly and widening repeats channels and divides their
consumers (Net2Net), keeping the function, where no GroupNorm sees the channels. FCOS's towers are
``GroupNorm(32, C)``: a narrower or wider tower regroups the channels it keeps, so their
normalisation changes whatever the dropped channels' importance. No bound holds for these, nor
for removing a tower conv that is not the identity; measured examples (the largest change over the
output's range, one image): an R-34 FCOS 0.86 narrowing 64 -> 32, 0.41 widening 64 -> 96, 0.36-0.47
adding a conv; an R-18 FCOS (an independent check, stop 45) 1.39, 0.78 and 0.49; a RetinaNet trained
30 steps, a tower cut 4 -> 3 0.41 and 4 -> 1 4.4. The search fine-tunes every candidate after its
steps (a cut tower is refit by least squares first, :mod:`jdnas_sdk.morph.refit`), approximate or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn.utils import skip_init

from ..detectors import build_detector, describe
from ..errors import ArchError
from ..student import Heads
from .importance import IMPORTANCES, Importance
from .inherit import IndexMap, _gather, select_channels

__all__ = ["SetHead", "HEAD_KNOBS", "apply_head", "morph_heads", "head_maps"]

#: Head settings a :class:`SetHead` may change (the :class:`Heads` fields; ``size`` is ``min_size``).
HEAD_KNOBS: tuple[str, ...] = ("fpn", "size", "proposals", "box", "mask", "convs", "width", "topk")


@dataclass(frozen=True)
class SetHead:
    """Set head setting ``knob`` (one of :data:`HEAD_KNOBS`) to ``value``. ``size`` sets
    ``min_size`` and ``max_size`` to ``max_size`` (``None``: the parent's scaled with it);
    ``proposals`` sets the count after the RPN's NMS and ``pre`` the one before (``None``: the same).
    A search gives both as its space spells them (:meth:`~jdnas_sdk.space.SearchSpace.max_size_for`)."""

    knob: str
    value: int
    max_size: int | None = field(default=None, repr=False)
    pre: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name, knob in (("max_size", "size"), ("pre", "proposals")):
            given = getattr(self, name)
            if given is not None and (self.knob != knob or isinstance(given, bool) or not isinstance(given, int)):
                raise ArchError(f"SetHead: {name} goes with a {knob} move as a positive integer, got {given!r}")
            if given is not None and given < 1:
                raise ArchError(f"SetHead: {name} must be positive, got {given}")

    def __repr__(self) -> str:
        """The move as a finished job's key spells it (``search.executor.CandidateJob.key``): the
        values it carries are part of it, so a move that builds another student is another job."""
        extra = f", max_size={self.max_size}" if self.max_size is not None else ""
        extra += f", pre={self.pre}" if self.pre is not None and self.pre != self.value else ""
        return f"SetHead(knob={self.knob!r}, value={self.value}{extra})"


def apply_head(heads: Heads, action: SetHead) -> Heads:
    """The head settings ``action`` leads to (pure; raises :class:`ArchError` if it does not apply)."""
    if action.knob not in HEAD_KNOBS:
        raise ArchError(f"unknown head setting {action.knob!r}; known: {HEAD_KNOBS}")
    if action.knob == "size":
        scaled = max(action.value, round(heads.max_size * action.value / heads.min_size))
        return replace(heads, min_size=action.value, max_size=action.max_size or scaled)
    if action.knob not in ("fpn", "topk") and getattr(heads, action.knob) is None:  # topk None: 1000
        raise ArchError(f"head setting {action.knob} does not apply to this detector's family")
    if action.knob == "proposals":
        return replace(heads, proposals=action.value, pre=action.pre or action.value)
    return replace(heads, **{action.knob: action.value})


class _Scored:
    """A norm-like view of a layer with no norm: per output channel, its weights' L1 norm and
    bias, so either importance (``bn``: ``|w| + |b|``, ``l1``) scores it; zero only for a
    channel that outputs exactly zero."""

    def __init__(self, layer: nn.Module) -> None:
        self.weight = layer.weight.detach().abs().flatten(1).sum(1)
        self.bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(self.weight)


def _as_conv(layer: nn.Module) -> nn.Module:
    """``layer`` laid out as importances read a writer: ``weight`` indexed by output channel first.

    A transposed conv stores its weight as (in, out / groups, k, k), so an importance reading dim 0
    (``l1``) would score its *input* channels; it is seen instead as the ``Conv2d`` holding the same
    weights as (out, in / groups, k, k) (a detached copy, built without drawing random numbers).
    Other layers already put the output channel first and are returned as they are.
    """
    if not isinstance(layer, nn.ConvTranspose2d):
        return layer
    w, g = layer.weight.detach(), layer.groups
    cin, per_out, *kernel = w.shape
    w = w.reshape(g, cin // g, per_out, *kernel).transpose(1, 2).reshape(g * per_out, cin // g, *kernel)
    has_bias = layer.bias is not None
    view = skip_init(
        nn.Conv2d, cin, g * per_out, layer.kernel_size, groups=g, bias=has_bias, device=w.device, dtype=w.dtype
    )
    view.weight = nn.Parameter(w.clone(), requires_grad=False)
    if has_bias:
        view.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    return view


def _writer(layer: nn.Module, norm: nn.Module | None = None) -> tuple[nn.Module, object]:
    """The (writer, norm) pair an importance scores ``layer``'s output channels from: the layer
    seen output-first (:func:`_as_conv`), and its norm, or a :class:`_Scored` view where it has
    none, so that every importance ranks the same channels whatever the layer's weight layout."""
    conv = _as_conv(layer)
    return conv, (norm if norm is not None else _Scored(conv))


def _convs(seq: nn.Module) -> list[nn.Conv2d]:
    return [m for m in seq.modules() if isinstance(m, nn.Conv2d)]


def morph_heads(model: nn.Module, heads: Heads, *, importance: str | Importance = "bn") -> nn.Module:
    """The student of ``model`` with head settings ``heads`` (same backbone), its weights inherited
    (see the module doc). Returned in ``model``'s train/eval mode."""
    spec, arch = describe(model)
    student = build_detector(heads.apply(spec), arch)
    maps, renames = _head_plan(model, student, heads, importance)
    source, target = model.state_dict(), student.state_dict()
    filled = {}
    for key, dst in target.items():
        src_key = renames.get(key, key)
        if src_key is None or src_key not in source:
            filled[key] = dst
            continue
        out_map, in_map = maps.get(src_key, (None, None))
        src = source[src_key]
        if key.endswith("conv5_mask.weight"):  # a transposed conv: (in, out, k, k)
            filled[key] = (
                _gather(src.transpose(0, 1), dst.transpose(0, 1), out_map, in_map).transpose(0, 1).contiguous()
            )
        else:
            filled[key] = _gather(src, dst, out_map, in_map)
    student.load_state_dict(filled)
    _identity_convs(student, renames)
    student.train(model.training)
    return student


def head_maps(
    model: nn.Module, heads: Heads, *, importance: str | Importance = "bn"
) -> dict[str, tuple[IndexMap | None, IndexMap | None]]:
    """Per parent tensor name, the ``(output, input)`` channel maps :func:`morph_heads` uses to
    reach ``heads`` (None: all channels; -1: a new channel), for repairs that must know which
    parent channels a student's channel came from (:mod:`jdnas_sdk.morph.refit`). Tower tensors
    are named as in the parent."""
    spec, arch = describe(model)
    return _head_plan(model, build_detector(heads.apply(spec), arch), heads, importance)[0]


def _head_plan(
    model: nn.Module, student: nn.Module, heads: Heads, importance: str | Importance
) -> tuple[dict[str, tuple[IndexMap | None, IndexMap | None]], dict[str, str | None]]:
    score = IMPORTANCES[importance] if isinstance(importance, str) else importance
    maps = _fpn_maps(model, describe(model)[0].fpn_channels, heads.fpn, score)
    maps.update(_roi_maps(model, heads, score, maps))
    renames = _tower_maps(model, student, heads, score, maps)
    return maps, renames


def _fpn_maps(
    model: nn.Module, old: int, new: int, score: Importance
) -> dict[str, tuple[IndexMap | None, IndexMap | None]]:
    """Maps of every FPN tensor and every first head layer reading the FPN's output space."""
    fpn = model.backbone.fpn
    inner = [b[0] for b in fpn.inner_blocks]
    outer = [b[0] for b in fpn.layer_blocks]
    extra = [m for m in (getattr(fpn.extra_blocks, "p6", None), getattr(fpn.extra_blocks, "p7", None)) if m is not None]
    if new == old:
        return {}
    top = select_channels(score([_writer(c) for c in inner]), new)
    out = select_channels(score([_writer(c) for c in outer + extra]), new)
    maps: dict[str, tuple[IndexMap | None, IndexMap | None]] = {}
    for i in range(len(inner)):
        maps[f"backbone.fpn.inner_blocks.{i}.0.weight"] = (top, None)
        maps[f"backbone.fpn.inner_blocks.{i}.0.bias"] = (top, None)
        maps[f"backbone.fpn.layer_blocks.{i}.0.weight"] = (out, top)
        maps[f"backbone.fpn.layer_blocks.{i}.0.bias"] = (out, None)
    for name in ("p6", "p7"):
        if hasattr(fpn.extra_blocks, name):
            maps[f"backbone.fpn.extra_blocks.{name}.weight"] = (out, out)
            maps[f"backbone.fpn.extra_blocks.{name}.bias"] = (out, None)
    maps["__fpn_out__"] = (out, None)
    return maps


def _roi_maps(
    model: nn.Module, heads: Heads, score: Importance, fpn: dict[str, tuple[IndexMap | None, IndexMap | None]]
) -> dict[str, tuple[IndexMap | None, IndexMap | None]]:
    """Maps of the R-CNN heads: RPN, box head, mask head and keypoint head (the last three read
    the pooled FPN output, so their first layer's inputs follow the FPN's output map)."""
    out = fpn.get("__fpn_out__", (None, None))[0]
    maps: dict[str, tuple[IndexMap | None, IndexMap | None]] = {}
    rpn = getattr(model, "rpn", None)
    if rpn is None:
        return maps
    conv = _convs(rpn.head.conv)[0]
    rpn_map = select_channels(score([_writer(conv)]), heads.fpn) if heads.fpn != conv.out_channels else None
    prefix = "rpn.head.conv.0.0"
    maps[f"{prefix}.weight"], maps[f"{prefix}.bias"] = (rpn_map, out), (rpn_map, None)
    for name in ("cls_logits", "bbox_pred"):
        maps[f"rpn.head.{name}.weight"] = (None, rpn_map)
    box = model.roi_heads.box_head
    area = box.fc6.in_features // conv.in_channels
    fc6_in = [c * area + k if c >= 0 else -1 for c in out for k in range(area)] if out is not None else None
    fc6 = select_channels(score([_writer(box.fc6)]), heads.box) if heads.box != box.fc6.out_features else None
    fc7 = select_channels(score([_writer(box.fc7)]), heads.box) if heads.box != box.fc7.out_features else None
    maps.update(
        {
            "roi_heads.box_head.fc6.weight": (fc6, fc6_in),
            "roi_heads.box_head.fc6.bias": (fc6, None),
            "roi_heads.box_head.fc7.weight": (fc7, fc6),
            "roi_heads.box_head.fc7.bias": (fc7, None),
            "roi_heads.box_predictor.cls_score.weight": (None, fc7),
            "roi_heads.box_predictor.bbox_pred.weight": (None, fc7),
        }
    )
    maps.update(_mask_maps(model, heads, score, out))
    keypoint_head = getattr(model.roi_heads, "keypoint_head", None)
    if keypoint_head is not None:  # only its first conv reads the pooled FPN output; its width is fixed
        maps[f"roi_heads.keypoint_head.{_first_conv(keypoint_head)}.weight"] = (None, out)
    return maps


def _first_conv(seq: nn.Module) -> str:
    """The name, inside ``seq``, of its first ``Conv2d`` (the one reading ``seq``'s input)."""
    return next(name for name, m in seq.named_modules() if isinstance(m, nn.Conv2d))


def _mask_maps(
    model: nn.Module, heads: Heads, score: Importance, out: IndexMap | None
) -> dict[str, tuple[IndexMap | None, IndexMap | None]]:
    """Maps of a Mask R-CNN's mask head (its first conv reading the FPN output map ``out``, each
    conv's output ranked by ``score`` when the width changes) and of the predictor after it."""
    maps: dict[str, tuple[IndexMap | None, IndexMap | None]] = {}
    mask_head = getattr(model.roi_heads, "mask_head", None)
    if mask_head is None:
        return maps
    width = heads.mask
    reads = out
    names = {id(m): n for n, m in mask_head.named_modules()}
    for layer in _convs(mask_head):
        own = select_channels(score([_writer(layer)]), width) if width not in (None, layer.out_channels) else None
        prefix = f"roi_heads.mask_head.{names[id(layer)]}"
        maps[f"{prefix}.weight"], maps[f"{prefix}.bias"] = (own, reads), (own, None)
        reads = own
    up = model.roi_heads.mask_predictor.conv5_mask
    own = select_channels(score([_writer(up)]), width) if width not in (None, up.out_channels) else None
    maps["roi_heads.mask_predictor.conv5_mask.weight"] = (own, reads)
    maps["roi_heads.mask_predictor.conv5_mask.bias"] = (own, None)
    maps["roi_heads.mask_predictor.mask_fcn_logits.weight"] = (None, own)
    return maps


def _tower_maps(
    model: nn.Module,
    student: nn.Module,
    heads: Heads,
    score: Importance,
    maps: dict[str, tuple[IndexMap | None, IndexMap | None]],
) -> dict[str, str | None]:
    """Maps of the one-stage towers (into ``maps``) and, per student tensor, the parent tensor it
    takes (``None``: an added identity conv, filled by :func:`_identity_convs`)."""
    renames: dict[str, str | None] = {}
    if heads.convs is None:
        return renames
    out = maps.get("__fpn_out__", (None, None))[0]
    for side in ("classification_head", "regression_head"):
        parent = getattr(model.head, side).conv
        child = getattr(student.head, side).conv
        p_convs, c_convs = _convs(parent), _convs(child)
        keep = _kept(p_convs, len(c_convs))
        p_names = {id(m): n for n, m in parent.named_modules()}
        c_names = {id(m): n for n, m in child.named_modules()}
        p_norms = _norms(parent)
        reads = out
        for j, conv in enumerate(c_convs):
            base = f"head.{side}.conv.{c_names[id(conv)]}"
            origin = keep[j]
            if origin is None:
                renames[f"{base}.weight"] = renames[f"{base}.bias"] = None
                continue  # an identity conv: its output space is the one it reads
            src = p_convs[origin]
            norm = p_norms.get(id(src))
            own = (
                select_channels(score([_writer(src, norm)]), conv.out_channels)
                if conv.out_channels != src.out_channels
                else None
            )
            src_base = f"head.{side}.conv.{p_names[id(src)]}"
            renames[f"{base}.weight"], renames[f"{base}.bias"] = f"{src_base}.weight", f"{src_base}.bias"
            maps[f"{src_base}.weight"], maps[f"{src_base}.bias"] = (own, reads), (own, None)
            c_norm = _norms(child).get(id(conv))
            if norm is not None and c_norm is not None:
                n_src, n_dst = p_names[id(norm)], c_names[id(c_norm)]
                for t in ("weight", "bias"):
                    renames[f"head.{side}.conv.{n_dst}.{t}"] = f"head.{side}.conv.{n_src}.{t}"
                    maps[f"head.{side}.conv.{n_src}.{t}"] = (own, None)
            reads = own
        for name in ("cls_logits", "bbox_reg", "bbox_ctrness"):
            if hasattr(getattr(model.head, side), name):
                maps[f"head.{side}.{name}.weight"] = (None, reads)
    return renames


def _norms(seq: nn.Module) -> dict[int, nn.Module]:
    """Each conv of a tower -> the GroupNorm right after it (FCOS), by the conv's id."""
    mods = list(seq.modules())
    return {id(m): n for m, n in zip(mods, mods[1:]) if isinstance(m, nn.Conv2d) and isinstance(n, nn.GroupNorm)}


def _kept(convs: list[nn.Conv2d], depth: int) -> list[int | None]:
    """Which parent conv each of ``depth`` student convs inherits; ``None``: a new identity conv.
    Removing drops, one at a time, the conv after the first closest to the identity."""
    keep: list[int] = list(range(len(convs)))
    while len(keep) > depth:
        candidates = keep[1:]
        keep.remove(min(candidates, key=lambda i: _distance_to_identity(convs[i])))
    return [*keep, *[None] * (depth - len(keep))]


def _distance_to_identity(conv: nn.Conv2d) -> float:
    w = conv.weight.detach()
    if w.shape[0] != w.shape[1]:
        return float("inf")
    eye = torch.zeros_like(w)
    nn.init.dirac_(eye)
    bias = conv.bias.detach().norm() if conv.bias is not None else 0.0
    return float((w - eye).norm() + bias)


@torch.no_grad()
def _identity_convs(student: nn.Module, renames: dict[str, str | None]) -> None:
    """Make each added tower conv the identity (Dirac weights, zero bias; its GroupNorm, if any,
    stays as built: FCOS towers keep the function only approximately)."""
    for key, src in renames.items():
        if src is None and key.endswith(".weight"):
            conv = student.get_submodule(key[: -len(".weight")])
            nn.init.dirac_(conv.weight)
            conv.bias.zero_()
