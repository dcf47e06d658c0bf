"""Weight inheritance: a student built for a new arch takes its parent's weights through channel maps.

Every channel space of the student (the stem, each stage's residual stream, each block's mid
channels) has a map to the parent's matching space: an index per student channel, ``-1`` for a
channel with no source. Narrowing keeps the most important channels; widening duplicates channels
and divides the consumers' weights by the number of copies (Net2Net), so the function is kept; a
new block starts with its last norm at zero, so its residual branch adds nothing. Tensors whose
spaces do not correspond (a block moved across a stage boundary) inherit the overlapping slice.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from ..arch import Arch
from .importance import Writer

__all__ = ["IndexMap", "Plan", "select_channels", "tied_streams", "stream_writers", "mid_writers", "transfer"]

#: Student channel -> parent channel (``-1``: no source, keep the student's initialisation).
IndexMap = list[int]

_BODY = re.compile(r"^backbone\.body\.layer(\d)\.(\d+)\.(.+)$")
_LATERAL = re.compile(r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.weight$")


@dataclass
class Plan:
    """How a student's spaces and blocks map onto its parent's.

    ``blocks[s - 1][j]`` is the parent block ``(stage, index)`` student block ``(s, j)`` inherits
    from, or ``None`` for a new (identity) block. ``streams[k]`` maps the student's stream ``k``
    (0: stem) to the parent's stream ``k``; ``mids[(s, j)]`` holds the block's (conv1, conv2) mid
    maps. A missing map means "take the overlapping slice".
    """

    blocks: list[list[tuple[int, int] | None]]
    streams: dict[int, IndexMap] = field(default_factory=dict)
    mids: dict[tuple[int, int], tuple[IndexMap, IndexMap]] = field(default_factory=dict)

    @classmethod
    def identity(cls, arch: Arch) -> Plan:
        return cls(blocks=[[(s, j) for j in range(st.depth)] for s, st in enumerate(arch.stages, start=1)])


def select_channels(scores: torch.Tensor, size: int, *, groups: int = 1) -> IndexMap:
    """Map ``size`` new channels onto ``len(scores)`` old ones.

    Narrowing keeps the ``size`` highest scores (in their original order); widening keeps all and
    repeats the most important ones. With ``groups`` > 1 the same choice is made in every group
    (scores summed over groups), so grouped convolutions stay grouped.
    """
    old = scores.numel()
    per_old, per_new = old // groups, size // groups
    local_scores = scores.reshape(groups, per_old).sum(0)
    ranked = torch.argsort(local_scores, descending=True, stable=True).tolist()
    if per_new <= per_old:
        local = sorted(ranked[:per_new])
    else:
        local = list(range(per_old)) + [ranked[k % per_old] for k in range(per_new - per_old)]
    return [g * per_old + i for g in range(groups) for i in local]


def _last(block: nn.Module) -> Writer:
    return (block.conv3, block.bn3) if hasattr(block, "conv3") else (block.conv2, block.bn2)


def tied_streams(body: nn.Module, stream: int) -> list[int]:
    """The streams that share channels with ``stream``: a stage whose first block has no projection
    (ResNet-18/34's stage 1 after the stem) adds to the previous stream's channels in place."""
    streams = [stream]
    while streams[-1] > 0 and getattr(body, f"layer{streams[-1]}")[0].downsample is None:
        streams.append(streams[-1] - 1)
    return streams


def stream_writers(body: nn.Module, stream: int) -> list[Writer]:
    """The (conv, norm) pairs that write stream ``stream`` (0: the stem) and the streams tied to it."""
    writers: list[Writer] = []
    for k in tied_streams(body, stream):
        if k == 0:
            writers.append((body.conv1, body.bn1))
            continue
        layer = getattr(body, f"layer{k}")
        writers.extend(_last(block) for block in layer)
        if layer[0].downsample is not None:
            writers.append((layer[0].downsample[0], layer[0].downsample[1]))
    return writers


def mid_writers(block: nn.Module) -> tuple[list[Writer], list[Writer]]:
    """The writers of a block's first and (bottleneck) second mid space."""
    first = [(block.conv1, block.bn1)]
    return first, ([(block.conv2, block.bn2)] if hasattr(block, "conv3") else first)


def _truncate(size: int, source: int) -> IndexMap:
    return [i if i < source else -1 for i in range(size)]


def _gather(src: torch.Tensor, dst: torch.Tensor, out_map: IndexMap | None, in_map: IndexMap | None) -> torch.Tensor:
    """``dst`` with the entries that have a source replaced from ``src`` through the maps.

    Input channels that the map repeats are divided by their number of copies (Net2Net), so a
    consumer of widened channels computes what it computed before.
    """
    if dst.dim() == 0 or (out_map is None and (in_map is None or dst.dim() == 1) and src.shape == dst.shape):
        return src.clone().to(dst.dtype) if src.shape == dst.shape else dst.clone()
    out = torch.tensor(out_map if out_map is not None else _truncate(dst.shape[0], src.shape[0]))
    rows = torch.nonzero(out >= 0).flatten()
    taken = src.index_select(0, out[rows])
    result = dst.clone()
    if dst.dim() == 1:
        result[rows] = taken.to(dst.dtype)
        return result
    ins = in_map if in_map is not None else _truncate(dst.shape[1], src.shape[1])
    index = torch.tensor(ins)
    cols = torch.nonzero(index >= 0).flatten()
    counts = Counter(ins)
    scale = torch.tensor([1.0 / counts[ins[c]] for c in cols.tolist()], dtype=taken.dtype)
    taken = taken.index_select(1, index[cols]) * scale.view(1, -1, *([1] * (taken.dim() - 2)))
    result[rows[:, None], cols[None, :]] = taken.to(dst.dtype)
    return result


def _local(mid_map: IndexMap | None, groups: int, source: int) -> IndexMap | None:
    """The in-group map of a grouped conv's inputs, from the global map of the space it reads."""
    if mid_map is None or groups == 1:
        return mid_map
    per_new, per_old = len(mid_map) // groups, source // groups
    return [i % per_old for i in mid_map[:per_new]]


def transfer(
    parent: nn.Module,
    student: nn.Module,
    plan: Plan,
    parent_arch: Arch,
    student_arch: Arch,
    returned_layers: tuple[int, ...],
) -> None:
    """Fill ``student``'s weights from ``parent`` following ``plan`` (in place, no gradients)."""
    source = parent.state_dict()
    target = student.state_dict()
    filled: dict[str, torch.Tensor] = {}
    for key, dst in target.items():
        route = _route(key, plan, source, parent_arch, student_arch, returned_layers)
        if route is None:
            filled[key] = dst
            continue
        src_key, out_map, in_map = route
        filled[key] = _gather(source[src_key], dst, out_map, in_map)
    student.load_state_dict(filled)
    with torch.no_grad():
        for s, blocks in enumerate(plan.blocks, start=1):
            for j, origin in enumerate(blocks):
                if origin is None:  # a new block: its residual branch adds exactly zero
                    _, norm = _last(getattr(student.backbone.body, f"layer{s}")[j])
                    norm.weight.zero_()
                    norm.bias.zero_()


def _route(
    key: str,
    plan: Plan,
    source: dict[str, torch.Tensor],
    parent_arch: Arch,
    student_arch: Arch,
    returned_layers: tuple[int, ...],
) -> tuple[str, IndexMap | None, IndexMap | None] | None:
    match = _BODY.match(key)
    if match:
        s, j, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        origin = plan.blocks[s - 1][j]
        if origin is None:
            return None
        ps, pj = origin
        src_key = f"backbone.body.layer{ps}.{pj}.{rest}"
        if src_key not in source:
            return None
        student_in, parent_in = (s if j else s - 1), (ps if pj else ps - 1)
        in_map = plan.streams.get(student_in) if student_in == parent_in else None
        out_map = plan.streams.get(s) if s == ps else None
        mid_a, mid_b = plan.mids.get((s, j), (None, None))
        groups = student_arch.groups
        parent_mid = parent_arch.stages[ps - 1].mids[pj]
        bottleneck = student_arch.block == "bottleneck"
        layer = rest.rsplit(".", 1)[0]
        routes: dict[str, tuple[IndexMap | None, IndexMap | None]] = {
            "conv1": (mid_a, in_map),
            "bn1": (mid_a, None),
            "conv2": (mid_b, _local(mid_a, groups, parent_mid)) if bottleneck else (out_map, mid_a),
            "bn2": (mid_b, None) if bottleneck else (out_map, None),
            "conv3": (out_map, mid_b),
            "bn3": (out_map, None),
            "downsample.0": (out_map, in_map),
            "downsample.1": (out_map, None),
        }
        out, inp = routes[layer]
        return src_key, out, inp
    if key.startswith("backbone.body."):
        stem = plan.streams.get(0)
        return key, stem, None
    lateral = _LATERAL.match(key)
    if lateral:
        stream = returned_layers[int(lateral.group(1))]
        return key, None, plan.streams.get(stream)
    return key, None, None
