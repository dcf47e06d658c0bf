"""How much work a detector's NMS does on the probe image, and what that work costs on a target.

At full detection load (:mod:`.probe`) the number of boxes reaching each NMS is fixed by the head
settings, but how many NMS keeps, and so how many IoU tests its greedy loop makes, follows the
weights. On a trained RetinaNet R18 (AMD EPYC, ONNX Runtime, 1 thread) 20 students of 128-320 px
spent 1.8-14.6 ms in the final NMS node, the tests it made (0.85-5.7 M) explaining 96% of that
spread at 2.3 ns a test, the number of boxes kept 72% (``benchmarks/nms_cost.py``, stop 42). A table
cannot see weights, but an estimate of a detector that exists can count its load:

- :func:`~.nms_replay.nms_comparisons` replays the greedy loop the exported graph runs and counts
  its IoU tests;
- :func:`~.probe.probe` sums them over every NMS a detector runs on the probe image at full load,
  on the forward it runs anyway, and every backend's whole-detector timing carries that load in its
  ``info`` (:data:`~.probe.TIMED_LOAD`); :func:`nms_load` is that count for a detector not timed;
- the profiler keeps each timed detector's load beside its residual in the fixed entry, and
  :func:`nms_ms_per_test` fits one cost per test across a table's fixed entries, within each entry
  (so each setting's own cost cancels): a machine's NMS is the machine's whatever the setting.

An estimate given a detector's load then moves its fixed entry by that cost times the detector's
load minus the mean load of the detectors the entry was timed on (:class:`~.estimate.Estimator`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from torch import nn

from .probe import TIMED_LOAD, probe
from .table import Entry, LatencyTable

__all__ = ["LOADS", "nms_load", "nms_ms_per_test", "with_loads", "load_shift_ms"]

LOADS = "nms_tests"
"""The ``info`` key of a fixed entry that holds its detectors' NMS loads (one per residual)."""

MIN_DETECTORS = 8
"""Fewer timed detectors than this (across entries with two or more) fit no cost per test."""

MIN_T = 3.0
"""A cost per test whose fit is less sure than this (slope over its standard error) is not used."""

BACKENDS = ("onnxruntime",)
"""Backends whose NMS runs the greedy loop :func:`~.nms_replay.nms_comparisons` replays (a table of
another fits no cost: torch's loops over every remaining box, TensorRT's plugins differ)."""


def nms_load(model: nn.Module, input_size: tuple[int, int], *, seed: int = 0) -> int | None:
    """The IoU tests every NMS of ``model`` makes on the probe image of ``input_size`` at full
    detection load (:func:`~.probe.probe` counts it on the forward every backend's timing runs).
    ``None`` where no NMS was seen (a detector that does not call torchvision's ``batched_nms``):
    its load is unknown."""
    return probe(model, input_size, seed=seed).nms_tests


def nms_ms_per_test(table: LatencyTable) -> float | None:
    """The cost of one NMS IoU test on ``table``'s device, fitted across its fixed entries: within
    each entry timed on two or more detectors with loads, residual against load, one slope for all.
    ``None`` where the table holds too few such detectors, their loads do not vary, or the fit is
    not a cost (not positive and finite, or less than :data:`MIN_T` standard errors from 0), or
    its backend is not one of :data:`BACKENDS`: estimates then keep the entries' means."""
    if table.fingerprint.backend not in BACKENDS:
        return None
    groups = 0
    points: list[tuple[float, float]] = []  # (load, residual), centred within their entry
    for key, entry in table.entries.items():
        if key.kind != "fixed":
            continue
        loads, residuals = entry.info.get(LOADS), entry.info.get("residuals_ms")
        if not isinstance(loads, list) or not isinstance(residuals, list) or len(loads) != len(residuals):
            continue
        if len(loads) < 2:
            continue
        x_mean, y_mean = sum(loads) / len(loads), sum(residuals) / len(residuals)
        points += [(x - x_mean, y - y_mean) for x, y in zip(loads, residuals)]
        groups += 1
    num = sum(x * y for x, y in points)
    den = sum(x * x for x, _ in points)
    dof = len(points) - groups - 1
    if len(points) < MIN_DETECTORS or den <= 0 or dof < 1:
        return None
    slope = num / den
    error = math.sqrt(sum((y - slope * x) ** 2 for x, y in points) / dof / den)
    if not (math.isfinite(slope) and slope > 0) or slope < MIN_T * error:
        return None
    return slope


def with_loads(entry: Entry, timings: Sequence[Entry]) -> Entry:
    """Fixed entry ``entry`` with the NMS loads of the whole-detector timings it was made from, in
    their order, as one list (each timing's :data:`~.probe.TIMED_LOAD`); without that list where
    one of them is unknown."""
    loads = [timing.info.get(TIMED_LOAD) for timing in timings]
    info = {key: value for key, value in entry.info.items() if key != TIMED_LOAD}  # the list replaces the first's
    if loads and all(isinstance(load, int) for load in loads):
        info[LOADS] = loads
    return replace(entry, info=info)


def load_shift_ms(entry: Entry | None, tests: int, ms_per_test: float | None) -> float | None:
    """How far fixed entry ``entry`` moves for a detector whose NMS makes ``tests`` IoU tests: the
    cost per test times its load minus the mean load the entry was timed at, never below minus the
    entry itself; ``None`` (it does not move) without a cost per test or without loads in the entry."""
    loads = entry.info.get(LOADS) if entry is not None else None
    if entry is None or ms_per_test is None or not isinstance(loads, list) or not loads:
        return None
    return max(ms_per_test * (tests - sum(loads) / len(loads)), -entry.median_ms)
