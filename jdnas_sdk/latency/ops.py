"""The op vocabulary: :class:`OpKey`, the signature of one fused kernel as the target runs it.

A key names what an inference engine actually launches after its graph optimisations, not the
framework's layers: a convolution carries its folded BatchNorm, its ReLU and a fused residual
add (``add=1``), because ONNX Runtime and TensorRT fuse exactly those. Every key has one
canonical text form, ``kind(field=value,...)`` with the kind's fields in a fixed order, which is
what latency tables store; :meth:`OpKey.parse` reads it back and refuses anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ..errors import LatencyTableError
from ..families import REGISTRY
from ..layers import conv_out

__all__ = ["OpKey", "OP_FIELDS", "op_macs", "op_bytes", "conv_out"]

#: Fields of each op kind, in canonical order. Integers unless listed in ``_TEXT_FIELDS``.
OP_FIELDS: dict[str, tuple[str, ...]] = {
    # convolution: batch n, channels in/out, square kernel k, stride s, groups g, input h x w
    # (padding k // 2), folded norm (bn), or one applied after (gn), ReLU, fused residual add
    "conv": ("n", "cin", "cout", "k", "s", "g", "h", "w", "norm", "act", "add"),
    "maxpool": ("c", "k", "s", "p", "h", "w"),
    # nearest-neighbour resize of a c x h x w map to oh x ow (the FPN's top-down path)
    "upsample": ("c", "h", "w", "oh", "ow"),
    "relu": ("c", "h", "w"),
    # fully connected layer over ``rows`` rows (the R-CNN box head runs one row per proposal)
    "linear": ("rows", "fin", "fout", "act"),
    # what no kernel entry holds: pre-processing, anchors, proposal selection, RoI pooling, box
    # decoding, NMS, (mask/keypoint heads): one entry per detector head, proposal count (``pre``
    # per level before the RPN's NMS, ``props`` after it; 0 for one-stage families), width of the
    # untimed heads (``head``: Mask R-CNN's mask head, else 0) and input size (image h x w, resized rh x rw)
    "fixed": ("family", "classes", "fpn", "levels", "pre", "props", "head", "dets", "h", "w", "rh", "rw"),
}

#: The fixed entry's fields before the detector-level space (version-1 tables): ``rep`` (box-head
#: width, now a timed kernel's business) instead of ``pre``/``props``/``head``, which then were
#: torchvision's defaults. :meth:`OpKey.parse` reads them into today's key.
_LEGACY_FIXED = ("family", "classes", "fpn", "levels", "rep", "dets", "h", "w", "rh", "rw")

_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "norm": ("none", "bn", "gn"),
    "act": ("none", "relu"),
    "family": tuple(REGISTRY),
    "levels": (),  # digits of the returned backbone layers, e.g. "1234"
}
_TEXT_PATTERN = re.compile(r"^[a-z0-9_]+$")
_KEY_PATTERN = re.compile(r"^([a-z]+)\((.*)\)$")


@dataclass(frozen=True)
class OpKey:
    """One fused kernel: ``kind`` and its field values in canonical order (see :data:`OP_FIELDS`)."""

    kind: str
    values: tuple[int | str, ...]

    @classmethod
    def make(cls, kind: str, **fields: int | str) -> OpKey:
        """Build a key from named fields; every field of the kind must be given, and only those."""
        names = OP_FIELDS.get(kind)
        if names is None:
            raise LatencyTableError(f"unknown op kind {kind!r}; known: {', '.join(OP_FIELDS)}")
        if set(fields) != set(names):
            missing, extra = sorted(set(names) - set(fields)), sorted(set(fields) - set(names))
            raise LatencyTableError(f"op {kind!r} needs fields {list(names)}; missing {missing}, unexpected {extra}")
        values = tuple(_check_value(kind, name, fields[name]) for name in names)
        return cls(kind, values)

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[OP_FIELDS[self.kind].index(name)]
        except ValueError:
            raise KeyError(f"op {self.kind!r} has no field {name!r}") from None

    def as_dict(self) -> dict[str, int | str]:
        return dict(zip(OP_FIELDS[self.kind], self.values))

    def __str__(self) -> str:
        return f"{self.kind}(" + ",".join(f"{n}={v}" for n, v in zip(OP_FIELDS[self.kind], self.values)) + ")"

    @classmethod
    def parse(cls, text: str) -> OpKey:
        """Read a canonical key; anything else (unknown kind or field, bad value, other order) raises."""
        if not isinstance(text, str):
            raise LatencyTableError(f"an op key is a string, got {type(text).__name__}")
        match = _KEY_PATTERN.match(text)
        if not match or match.group(1) not in OP_FIELDS:
            raise LatencyTableError(
                f"not an op key: {text!r} (expected kind(field=value,...) with kind in {list(OP_FIELDS)})"
            )
        kind, body = match.groups()
        fields: dict[str, int | str] = {}
        for part in body.split(",") if body else []:
            name, sep, raw = part.partition("=")
            if not sep or name in fields:
                raise LatencyTableError(f"op key {text!r}: bad or repeated field {part!r}")
            fields[name] = raw if name in _TEXT_FIELDS else _parse_int(text, name, raw)
        if kind == "fixed" and tuple(fields) == _LEGACY_FIXED:
            return _legacy_fixed(fields)
        key = cls.make(kind, **fields)
        if str(key) != text:
            raise LatencyTableError(f"op key {text!r} is not canonical; write it as {str(key)!r}")
        return key


def _legacy_fixed(fields: dict[str, int | str]) -> OpKey:
    """Today's fixed key for a version-1 one: torchvision's proposal counts (1000 before and after
    the RPN's NMS) for two-stage families, 0 for one-stage; Mask R-CNN's 256-wide mask head."""
    if fields["family"] not in REGISTRY:
        raise LatencyTableError(f"op key fixed(...): unknown family {fields['family']!r}; known: {list(REGISTRY)}")
    defaults = SimpleNamespace(rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, mask_head_width=256)
    pre, props, head = REGISTRY[str(fields["family"])].fixed_settings(defaults)
    rest = {k: v for k, v in fields.items() if k != "rep"}
    return OpKey.make("fixed", **rest, pre=pre, props=props, head=head)


def _parse_int(text: str, name: str, raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise LatencyTableError(f"op key {text!r}: field {name} must be a non-negative integer, got {raw!r}")
    return int(raw)


def _check_value(kind: str, name: str, value: Any) -> int | str:
    if name in _TEXT_FIELDS:
        allowed = _TEXT_FIELDS[name]
        ok = isinstance(value, str) and (value in allowed if allowed else bool(_TEXT_PATTERN.match(value)))
        if not ok:
            raise LatencyTableError(
                f"op {kind!r} field {name} must be one of {allowed or 'a short lowercase word'}, got {value!r}"
            )
        return value
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LatencyTableError(f"op {kind!r} field {name} must be a non-negative integer, got {value!r}")
    if name in ("add",) and value not in (0, 1):
        raise LatencyTableError(f"op {kind!r} field add must be 0 or 1, got {value!r}")
    return value


def op_macs(key: OpKey) -> int:
    """Multiply-accumulates of one op (comparisons for pooling, one per element for the rest)."""
    f = key.as_dict()
    if key.kind == "conv":
        ho, wo = conv_out(int(f["h"]), int(f["k"]), int(f["s"])), conv_out(int(f["w"]), int(f["k"]), int(f["s"]))
        return int(f["n"]) * int(f["cout"]) * ho * wo * (int(f["cin"]) // int(f["g"])) * int(f["k"]) ** 2
    if key.kind == "linear":
        return int(f["rows"]) * int(f["fin"]) * int(f["fout"])
    if key.kind == "maxpool":
        ho, wo = (
            (int(f["h"]) + 2 * int(f["p"]) - int(f["k"])) // int(f["s"]) + 1,
            (int(f["w"]) + 2 * int(f["p"]) - int(f["k"])) // int(f["s"]) + 1,
        )
        return int(f["c"]) * ho * wo * int(f["k"]) ** 2
    if key.kind == "upsample":
        return int(f["c"]) * int(f["oh"]) * int(f["ow"])
    if key.kind == "relu":
        return int(f["c"]) * int(f["h"]) * int(f["w"])
    return 0


def op_bytes(key: OpKey, element_size: int = 4) -> int:
    """Bytes an op must move at least once: its inputs, weights and outputs."""
    f = key.as_dict()
    if key.kind == "conv":
        n, cin, cout, k, s = (int(f[x]) for x in ("n", "cin", "cout", "k", "s"))
        h, w = int(f["h"]), int(f["w"])
        ho, wo = conv_out(h, k, s), conv_out(w, k, s)
        out = n * cout * ho * wo
        elements = n * cin * h * w + cout * (cin // int(f["g"])) * k * k + cout + out * (2 if f["add"] else 1)
    elif key.kind == "linear":
        rows, fin, fout = int(f["rows"]), int(f["fin"]), int(f["fout"])
        elements = rows * fin + fin * fout + fout + rows * fout
    elif key.kind == "maxpool":
        c, h, w = int(f["c"]), int(f["h"]), int(f["w"])
        ho, wo = (
            (h + 2 * int(f["p"]) - int(f["k"])) // int(f["s"]) + 1,
            (w + 2 * int(f["p"]) - int(f["k"])) // int(f["s"]) + 1,
        )
        elements = c * (h * w + ho * wo)
    elif key.kind == "upsample":
        c = int(f["c"])
        elements = c * (int(f["h"]) * int(f["w"]) + int(f["oh"]) * int(f["ow"]))
    elif key.kind == "relu":
        elements = 2 * int(f["c"]) * int(f["h"]) * int(f["w"])
    else:
        elements = 0
    return elements * element_size
