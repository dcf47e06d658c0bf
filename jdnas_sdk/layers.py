"""Plain descriptions of the kernels a detector runs: what the lowering emits, cost sums and latency times.

An :class:`Op` is one kernel launch in the form an inference engine runs it (a convolution
carries its folded BatchNorm, ReLU and fused residual add), with the parameters it owns and the
multiply-accumulates it does. Its ``kind`` and ``values`` are exactly the fields of a latency
table key (:data:`jdnas_sdk.latency.ops.OP_FIELDS`), so the latency stage turns an op into its
key with no per-family knowledge; cost (:mod:`jdnas_sdk.cost`) sums ``params`` and ``macs``.

This module is the foundation of the lowering: it imports nothing from the package, so the
detector families (which describe their heads with it) and the stages after them can all use it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Op", "conv", "deconv", "linear", "maxpool", "upsample", "relu", "conv_out"]


class Op(NamedTuple):
    """One kernel launch: ``kind`` and ``values`` (a latency key's fields, in its order), the
    ``params`` it owns (0 where it reuses weights another op owns, e.g. a shared head conv on its
    second pyramid level), its ``macs``, and whether it is ``timed`` (a latency-table kernel) or
    runs inside the detector's ``fixed`` entry (the R-CNN mask and keypoint heads, which run on
    the detections): cost counts both. A named tuple: the lowering makes many, and fast."""

    kind: str
    values: tuple[int | str, ...]
    params: int = 0
    macs: int = 0
    timed: bool = True


def conv_out(size: int, k: int, s: int) -> int:
    """Output size of a convolution or pooling with padding ``k // 2``."""
    return (size + 2 * (k // 2) - k) // s + 1


def conv(
    cin: int,
    cout: int,
    k: int,
    s: int,
    h: int,
    w: int,
    *,
    g: int = 1,
    norm: str = "bn",
    act: str = "relu",
    add: int = 0,
    n: int = 1,
    owns: bool = True,
    timed: bool = True,
) -> Op:
    """A ``k x k`` stride-``s`` convolution on ``n`` maps of ``cin x h x w`` (padding ``k // 2``).

    ``norm``: ``bn`` (folded BatchNorm: weight and bias, no conv bias, as torchvision's ResNet),
    ``gn`` (GroupNorm after a biased conv) or ``none`` (a biased conv). ``owns``: whether this
    launch owns its weights (False for a shared head conv run again on another level).
    """
    weights = cout * (cin // g) * k * k
    params = weights + (2 * cout if norm in ("bn", "gn") else 0) + (cout if norm != "bn" else 0)
    macs = n * weights * conv_out(h, k, s) * conv_out(w, k, s)
    return Op("conv", (n, cin, cout, k, s, g, h, w, norm, act, add), params if owns else 0, macs, timed)


def deconv(cin: int, cout: int, k: int, h: int, w: int, *, n: int = 1) -> Op:
    """A biased stride-2 transposed convolution on ``n`` maps of ``cin x h x w`` (the R-CNN mask
    and keypoint heads' upsampling); never a latency-table kernel (those heads run in ``fixed``)."""
    weights = cin * cout * k * k
    return Op("deconv", (n, cin, cout, k, 2, h, w), weights + cout, n * weights * h * w, timed=False)


def linear(rows: int, fin: int, fout: int, act: str) -> Op:
    """A biased fully connected layer over ``rows`` rows (the R-CNN box head: one row per proposal)."""
    return Op("linear", (rows, fin, fout, act), fin * fout + fout, rows * fin * fout)


def maxpool(c: int, k: int, s: int, p: int, h: int, w: int) -> Op:
    """Max pooling of a ``c x h x w`` map (no parameters; cost counts no MACs for it)."""
    return Op("maxpool", (c, k, s, p, h, w))


def upsample(c: int, h: int, w: int, oh: int, ow: int) -> Op:
    """Nearest-neighbour resize of a ``c x h x w`` map to ``oh x ow`` (the FPN's top-down path)."""
    return Op("upsample", (c, h, w, oh, ow))


def relu(c: int, h: int, w: int) -> Op:
    """A ReLU that no convolution absorbs (before RetinaNet's and FCOS's P7)."""
    return Op("relu", (c, h, w))
