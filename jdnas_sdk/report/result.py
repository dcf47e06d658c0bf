"""What the compression report reads from a ``result.json`` it did not write itself, checked first:
a damaged field is one :class:`~jdnas_sdk.errors.SearchError` naming it, never a report that shows
``Input 6x4``, a negative wall time or a NaN stage time as if measured."""

from __future__ import annotations

import math
from typing import Any

from ..errors import SearchError
from ..search.archive import finite_number, validate_candidates

__all__ = ["check_result"]


def _number(value: Any) -> bool:
    """A finite, non-negative JSON number (not a bool)."""
    return finite_number(value) and value >= 0


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def check_result(result: Any, *, origin: str) -> None:
    """Check what the report reads from a ``result.json`` it did not write itself: the history is a
    valid archive (lineages end), ``chosen`` is one of its candidates, the numbers are finite."""
    if not isinstance(result, dict):
        raise SearchError(f"{origin} must hold a JSON object, got {type(result).__name__}")
    history = validate_candidates(result.get("history"), origin=f"{origin}: field 'history'")
    if not history:
        raise SearchError(f"{origin}: field 'history' holds no candidate")
    chosen = result.get("chosen")
    if not isinstance(chosen, int) or isinstance(chosen, bool) or not 0 <= chosen < len(history):
        raise SearchError(
            f"{origin}: field 'chosen' must be a candidate index from 0 to {len(history) - 1}, got {chosen!r}"
        )
    for name in ("target_ms", "wall_s"):
        if not _number(result.get(name)):
            raise SearchError(f"{origin}: field {name!r} must be a finite number >= 0, got {result.get(name)!r}")
    for name in ("metrics", "breakdown"):
        part = result.get(name)
        if not isinstance(part, dict) or not all(isinstance(part.get(w), dict) for w in ("base", "student")):
            raise SearchError(f"{origin}: field {name!r} must hold 'base' and 'student' objects")
    for who, values in result["metrics"].items():
        for key, value in values.items() if isinstance(values, dict) else ():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # codes, names and notes
            low, high = (-1.0, 1.0) if key == "ap" or key.endswith("_ap") or key.startswith("ap") else (0.0, math.inf)
            if not finite_number(value) or not low <= value <= high:
                why = " (APs are fractions)" if high == 1.0 else ""
                raise SearchError(
                    f"{origin}: field 'metrics.{who}.{key}' must be a finite number within {low:g}..{high:g}{why}, "
                    f"got {value!r}"
                )
    _check_fields(result, origin)


def _check_fields(result: dict[str, Any], origin: str) -> None:
    """The fields the report prints as they are: sittings (absent before it was recorded), the input
    size, the table's kind, the claim, the stage times and the split sizes."""
    wrong = []
    if "sittings" in result and not (_count(result["sittings"]) and result["sittings"] >= 1):
        wrong.append("'sittings' must be a count >= 1")
    size = result.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_count(v) and v > 0 for v in size)):
        wrong.append("'input_size' must be [height, width] in pixels")
    if not isinstance(result.get("modelled"), bool):
        wrong.append("'modelled' must be true or false")
    if not isinstance(result.get("claim", ""), str):
        wrong.append("'claim' must be text")
    for who, stages in result["breakdown"].items():
        if not (isinstance(stages, dict) and all(_number(ms) for ms in stages.values())):
            wrong.append(f"'breakdown.{who}' must map stages to finite times >= 0")
    splits = result.get("splits", {})
    if not (isinstance(splits, dict) and all(_count(n) for n in splits.values())):
        wrong.append("'splits' must map splits to image counts")
    if wrong:
        fix = "rerun compress with the same workdir to rewrite it"
        raise SearchError(f"{origin} is damaged: {'; '.join(wrong)}; {fix}")
