"""A run's measured latencies, recorded in its workdir: a finished run called again reports what it
measured instead of measuring anew (machine noise moved a claim's ratio from 0.29x to 0.32x).

The detectors a claim compares are timed in interleaved rounds (base, student, base, student, ...)
and each kept at the median of its rounds: on a shared host one whole-detector timing moved by 4.2%
on average between two passes minutes apart (a 2-core AMD EPYC, ``benchmarks/latency_accuracy.py
--rounds 3``, stop 43), and two single timings could move the claim's ratio by as much. Interleaved,
a steady drift moves both alike and one slow timing is outvoted. On ONNX Runtime each model is
exported once and the rounds time that file; on TensorRT each timing builds an engine, so it is
timed once there.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write_json, read_json
from .detectors.onnx import detector_onnx
from .latency.local import fingerprint_hash
from .latency.probe import Probe, probe
from .latency.roofline import finite_number

__all__ = ["ROUNDS", "measured_ms", "interleaved_ms", "export_probed"]

log = logging.getLogger(__name__)

ROUNDS = 3
"""Interleaved rounds each detector of a claim is timed in (its latency: the median of them)."""


def measured_ms(
    work: Path, models: Mapping[str, nn.Module], backend: Any, size: tuple[int, int], *, rounds: int = ROUNDS
) -> dict[str, float]:
    """Each of ``models``' measured latency by name (median ms over ``rounds`` interleaved rounds,
    full detection load), recorded in ``work/measured.json`` with what it was measured on: a
    finished run called again returns what it reported instead of measuring anew. Where one model's
    record is missing or stale (its weights, the image size or the device differ), all are timed
    again together: a ratio is of timings taken side by side."""
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
            out[name] = float(ms)
    if len(out) == len(models):
        for name in models:
            how = f"{len(recorded[name].get('rounds_ms') or [0])} round(s)"  # records before rounds: one timing
            log.info(
                "%s: measured %.2f ms before (%s), on this device (%s); not measured again", name, out[name], how, path
            )
        return out
    timed = interleaved_ms(models, backend, size, rounds=rounds)  # all again: a pair is timed together
    for name, samples in timed.items():
        out[name] = statistics.median(samples)
        recorded[name] = {**keys[name], "median_ms": out[name], "rounds_ms": samples}
    atomic_write_json(path, recorded)
    return {name: out[name] for name in models}


def interleaved_ms(
    models: Mapping[str, nn.Module], backend: Any, size: tuple[int, int], *, rounds: int = ROUNDS
) -> dict[str, list[float]]:
    """Each of ``models``' timings (median ms of a measurement, full detection load) over ``rounds``
    interleaved rounds: every model once a round, in the given order. One round on TensorRT, where
    each timing builds its own engine."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if getattr(backend.fingerprint(), "backend", None) == "tensorrt":
        rounds = 1
    log.info("timing %s in %d interleaved round(s)", ", ".join(models), rounds)
    timed: dict[str, list[float]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory(prefix="jdnas-measured-") as folder:
        timers = {name: _timer(name, model, backend, size, Path(folder)) for name, model in models.items()}
        for _ in range(rounds):
            for name, timer in timers.items():
                timed[name].append(timer())
    return timed


def _timer(name: str, model: nn.Module, backend: Any, size: tuple[int, int], folder: Path) -> Callable[[], float]:
    """A callable that times ``model`` once more (median ms). Where the backend times exported files
    (ONNX Runtime's ``measure_onnx``), the full-load detector ``measure_detector`` would time is
    exported once, to ``folder``, and each round times that file; otherwise each round is a whole
    ``measure_detector``."""
    if not hasattr(backend, "measure_onnx"):
        return lambda: float(backend.measure_detector(model, size).median_ms)
    file = folder / f"{name}.onnx"
    export_probed(model, size, file)
    return lambda: float(backend.measure_onnx(file, size).median_ms)


def export_probed(model: nn.Module, size: tuple[int, int], file: Path) -> Probe:
    """Write to ``file`` (atomically) the full-load detector ``measure_detector`` would time, so that
    ``measure_onnx(file, size)`` times it again and again without exporting it anew; the probe it was
    exported from (``.info()``: what ``measure_detector`` would record beside the milliseconds)."""
    probed = probe(model, size)
    file.parent.mkdir(parents=True, exist_ok=True)
    detector_onnx(probed.model, size, file)
    return probed


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
