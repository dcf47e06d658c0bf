"""Checks of the public API's arguments.

A wrong type or value handed to a public function is one :class:`~jdnas_sdk.errors.ArgumentError`
naming the argument, what it takes and what it got, before any work; not an ``AttributeError`` or a
``ZeroDivisionError`` from deep inside (``build('x')``, ``estimate_latency(m, input_size=0)``).
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

from .arch import MAX_INPUT_SIDE, Arch, DetectorSpec
from .errors import ArgumentError

__all__ = ["as_arch", "as_input_size", "as_path", "as_spec"]

#: the smallest image side a detector is fed (``DetectorSpec``'s smallest ``min_size``)
MIN_INPUT_SIDE = 16


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:120]


def as_spec(value: Any, name: str = "spec") -> DetectorSpec:
    """``value`` if it is a :class:`DetectorSpec`."""
    if not isinstance(value, DetectorSpec):
        raise ArgumentError(
            f"{name} must be a DetectorSpec (e.g. jdnas_sdk.spec_of(model), or DetectorSpec(family=..., "
            f"backbone=..., num_classes=...)), got {_got(value)}"
        )
    return value


def as_arch(value: Any, name: str = "arch") -> Arch:
    """An :class:`Arch`, or the arch its code names (``Arch.parse``)."""
    if isinstance(value, Arch):
        return value
    if isinstance(value, str):
        return Arch.parse(value)
    raise ArgumentError(
        f"{name} must be an Arch or its code (e.g. jdnas_sdk.standard_arch('resnet18') or str(arch)), got {_got(value)}"
    )


def as_input_size(value: Any, name: str = "input_size") -> tuple[int, int] | None:
    """``None``, an int side (a square) or a (height, width) pair of ints (a tuple, list, array or
    ``torch.Size``), each side within ``MIN_INPUT_SIDE..MAX_INPUT_SIDE``; returned as a pair
    (``None`` stays ``None``)."""
    if value is None:
        return None
    sides = (value, value) if isinstance(value, numbers.Integral) else value
    ok = not isinstance(sides, (str, bytes)) and hasattr(sides, "__len__") and len(sides) == 2  # a pair, an array
    ok = ok and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sides)
    if not ok or not all(MIN_INPUT_SIDE <= s <= MAX_INPUT_SIDE for s in sides):
        raise ArgumentError(
            f"{name} must be an image side or a (height, width) pair of ints from {MIN_INPUT_SIDE} to "
            f"{MAX_INPUT_SIDE} pixels, e.g. 256 or (256, 320); got {_got(value)}"
        )
    return int(sides[0]), int(sides[1])


def as_path(value: Any, name: str) -> Path:
    """A file or folder path: a non-empty ``str`` or ``os.PathLike``."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ArgumentError(f"{name} must be a non-empty file or folder path (str or pathlib.Path), got {_got(value)}")
    return Path(value)
