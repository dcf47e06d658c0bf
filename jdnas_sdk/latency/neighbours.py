"""Entries of a latency table near a missing op: what the estimator interpolates from.

Two entries are neighbours when they differ only in widths (``same``) or in widths and map sizes
(``scaled``); :func:`fit` is the least-squares line through a few of them, time against MACs.
"""

from __future__ import annotations

from .ops import OP_FIELDS, OpKey
from .table import Entry, LatencyTable

__all__ = ["fit", "neighbours"]


def fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var
    return slope, my - slope * mx


_WIDTHS = {
    "conv": ("cin", "cout"),
    "linear": ("fin", "fout", "rows"),
    "maxpool": ("c",),
    "upsample": ("c",),
    "relu": ("c",),
    "fixed": ("h", "w", "rh", "rw", "fpn", "pre", "props", "head"),
}
_SIZES = {
    "conv": ("h", "w", "n"),
    "linear": (),
    "maxpool": ("h", "w"),
    "upsample": ("h", "w", "oh", "ow"),
    "relu": ("h", "w"),
    "fixed": (),
}


def neighbours(table: LatencyTable, key: OpKey) -> tuple[list[tuple[OpKey, Entry]], list[tuple[OpKey, Entry]]]:
    """Entries equal to ``key`` but for its widths, and (second) those equal but for widths and sizes."""
    names = OP_FIELDS[key.kind]
    free = set(_WIDTHS[key.kind])
    loose = free | set(_SIZES[key.kind])
    same, scaled = [], []
    for other, entry in table.entries.items():
        if other.kind != key.kind or other == key:
            continue
        differing = {n for n, a, b in zip(names, key.values, other.values) if a != b}
        if differing <= free:
            same.append((other, entry))
        elif differing <= loose:
            scaled.append((other, entry))
    return same, scaled
