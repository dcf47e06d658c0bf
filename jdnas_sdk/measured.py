"""A run's measured latencies, recorded in its workdir: a finished run called again reports what it
measured instead of measuring anew (machine noise moved a claim's ratio from 0.29x to 0.32x)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write_json, read_json
from .latency.local import fingerprint_hash
from .latency.roofline import finite_number

__all__ = ["measured_ms"]

log = logging.getLogger(__name__)


def measured_ms(work: Path, name: str, model: nn.Module, backend: Any, size: tuple[int, int]) -> float:
    """``model``'s measured latency (median ms, full detection load), recorded in ``work/measured.json``
    under ``name`` with what it was measured on: a finished run called again returns what it
    reported instead of measuring anew (machine noise moved a claim's ratio from 0.29x to 0.32x).
    Measured again when the weights, the image size or the device differ."""
    path = work / "measured.json"
    key = {
        "weights": _weights_digest(model),
        "input_size": list(size),
        "device": fingerprint_hash(backend.fingerprint()),
    }
    try:
        recorded = read_json(path)
    except (OSError, ValueError):  # absent or damaged: measured again, the file rewritten
        recorded = {}
    row = recorded.get(name) if isinstance(recorded, dict) else None
    recorded_ms = row.get("median_ms") if isinstance(row, dict) else None
    if isinstance(row, dict) and {k: row.get(k) for k in key} == key and finite_number(recorded_ms) and recorded_ms > 0:
        log.info("%s: measured %.2f ms before, on this device (%s); not measured again", name, row["median_ms"], path)
        return float(row["median_ms"])
    median = float(backend.measure_detector(model, size).median_ms)
    recorded = recorded if isinstance(recorded, dict) else {}
    atomic_write_json(path, {**recorded, name: {**key, "median_ms": median}})
    return median


def _weights_digest(model: nn.Module) -> str:
    """16 hex digits of the sha256 of ``model``'s named tensors (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
