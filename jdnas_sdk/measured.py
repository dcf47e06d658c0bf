"""A run's measured latencies, recorded in its workdir: a finished run called again reports what it
measured instead of measuring anew (machine noise moved a claim's ratio from 0.29x to 0.32x).

The detectors a claim compares are timed in interleaved rounds (base, student, base, student, ...)
and each kept at the median of its rounds: on a shared host one whole-detector timing moved by 4.2%
on average between two passes minutes apart (a 2-core AMD EPYC, ``benchmarks/latency_accuracy.py
--rounds 3``, stop 43), so a slow spell or a drift between two single timings would move the ratio
by as much; interleaved, it lands on one round of both.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write_json, read_json
from .latency.local import fingerprint_hash
from .latency.roofline import finite_number

__all__ = ["ROUNDS", "measured_ms"]

log = logging.getLogger(__name__)

ROUNDS = 3
"""Interleaved rounds each detector of a claim is timed in (its latency: the median of them)."""


def measured_ms(
    work: Path, models: Mapping[str, nn.Module], backend: Any, size: tuple[int, int], *, rounds: int = ROUNDS
) -> dict[str, float]:
    """Each of ``models``' measured latency by name (median ms over ``rounds`` interleaved rounds,
    full detection load), recorded in ``work/measured.json`` with what it was measured on: a
    finished run called again returns what it reported instead of measuring anew. A model is
    measured again when its weights, the image size or the device differ (the others keep theirs)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    path = work / "measured.json"
    try:
        recorded = read_json(path)
    except (OSError, ValueError):  # absent or damaged: measured again, the file rewritten
        recorded = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    keys = {name: _key(model, backend, size) for name, model in models.items()}
    out: dict[str, float] = {}
    for name, key in keys.items():
        row = recorded.get(name)
        ms = row.get("median_ms") if isinstance(row, dict) else None
        if isinstance(row, dict) and {k: row.get(k) for k in key} == key and finite_number(ms) and ms > 0:
            log.info("%s: measured %.2f ms before, on this device (%s); not measured again", name, ms, path)
            out[name] = float(ms)
    todo = {name: model for name, model in models.items() if name not in out}
    timed: dict[str, list[float]] = {name: [] for name in todo}
    for _ in range(rounds if todo else 0):
        for name, model in todo.items():
            timed[name].append(float(backend.measure_detector(model, size).median_ms))
    for name, samples in timed.items():
        out[name] = statistics.median(samples)
        recorded[name] = {**keys[name], "median_ms": out[name], "rounds_ms": samples}
    if todo:
        atomic_write_json(path, recorded)
    return {name: out[name] for name in models}


def _key(model: nn.Module, backend: Any, size: tuple[int, int]) -> dict[str, Any]:
    """What a recorded measurement was taken on: the weights, the input size and the device."""
    return {
        "weights": _weights_digest(model),
        "input_size": list(size),
        "device": fingerprint_hash(backend.fingerprint()),
    }


def _weights_digest(model: nn.Module) -> str:
    """16 hex digits of the sha256 of ``model``'s named tensors (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
