"""How much work a detector's NMS does on the probe image, and what that work costs on a target.

At full detection load (:mod:`.probe`) the number of boxes reaching each NMS is fixed by the head
settings, but how many NMS keeps, and so how many IoU tests its greedy loop makes, follows the
weights. On a trained RetinaNet R18 (AMD EPYC, ONNX Runtime, 1 thread) 20 students of 128-320 px
spent 1.8-14.6 ms in the final NMS node, the tests it made (0.85-5.7 M) explaining 96% of that
spread at 2.3 ns a test, the number of boxes kept 72% (``benchmarks/nms_cost.py``, stop 42). A table
cannot see weights, but an estimate of a detector that exists can count its load:

- :func:`nms_comparisons` replays the greedy loop the exported graph runs (torchvision's
  ``batched_nms`` keeps classes apart by offsetting each class's boxes, in float32, then one
  NonMaxSuppression takes candidates in falling score order and tests each against the boxes kept
  so far, stopping at the first that overlaps it beyond the threshold) and counts the tests;
- :func:`nms_load` sums them over every NMS a detector runs on the probe image at full load;
- the profiler records each timed detector's load beside its residual in the fixed entry, and
  :func:`nms_ms_per_test` fits one cost per test across a table's fixed entries, within each entry
  (so each setting's own cost cancels): a machine's NMS is the machine's whatever the setting.

An estimate given a detector's load then moves its fixed entry by that cost times the detector's
load minus the mean load of the detectors the entry was timed on (:class:`~.estimate.Estimator`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from .probe import full_load, probe_image
from .table import Entry, LatencyTable

__all__ = ["LOADS", "nms_comparisons", "nms_calls", "nms_load", "nms_ms_per_test", "with_loads", "load_shift_ms"]

LOADS = "nms_tests"
"""The ``info`` key of a fixed entry that holds its detectors' NMS loads (one per residual)."""

MIN_DETECTORS = 8
"""Fewer timed detectors than this (across entries with two or more) fit no cost per test."""

MIN_T = 3.0
"""A cost per test whose fit is less sure than this (slope over its standard error) is not used."""

BACKENDS = ("onnxruntime",)
"""Backends whose NMS runs the greedy loop :func:`nms_comparisons` replays (a table of another fits no cost:
torch's loops over every remaining box, TensorRT's plugins differ)."""

CHUNK = 4096
"""Suppressed boxes tested at a time (bounds memory at ``CHUNK`` x kept boxes of one class)."""

_RECORDING = threading.RLock()  # _recorded swaps a module attribute: one thread records at a time


def nms_comparisons(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> int:
    """The IoU tests one exported ``batched_nms(boxes, scores, idxs, iou_threshold)`` makes.

    A kept box is tested against every box kept before it; a suppressed one against the kept boxes
    before it, in the order they were kept, up to and including the first that overlaps it beyond
    the threshold. Boxes of other classes never overlap (the offsets) but are still tested."""
    if boxes.numel() == 0:
        return 0
    boxes, scores, idxs = boxes.detach().float().cpu(), scores.detach().float().cpu(), idxs.detach().cpu()
    shifted = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
    n = len(scores)
    order = torch.empty(n, dtype=torch.long)  # each box's place in the loop
    order[torch.argsort(scores, descending=True, stable=True)] = torch.arange(n)
    kept_mask = torch.zeros(n, dtype=torch.bool)
    for label in torch.unique(idxs):  # the offsets keep classes apart: one class at a time, not n x kept
        members = torch.nonzero(idxs == label).flatten()
        kept_mask[members[torchvision.ops.nms(shifted[members], scores[members], iou_threshold)]] = True
    keep = torch.nonzero(kept_mask).flatten()
    keep = keep[torch.argsort(order[keep])]  # in the order the loop keeps them
    kept = len(keep)
    rank = torch.full((n,), -1, dtype=torch.long)
    rank[keep] = torch.arange(kept)
    tests = kept * (kept - 1) // 2
    kept_places = order[keep]  # ascending: the loop's places of the kept boxes
    suppressed = torch.nonzero(rank < 0).flatten()
    for label in torch.unique(idxs[suppressed]):
        k = keep[idxs[keep] == label]
        for s in suppressed[idxs[suppressed] == label].split(CHUNK):  # memory: CHUNK x kept at a time
            before = order[k][None, :] < order[s][:, None]  # the kept boxes it is tested against
            hits = (torchvision.ops.box_iou(shifted[s], shifted[k]) > iou_threshold) & before
            first = rank[k[hits.to(torch.uint8).argmax(dim=1)]] + 1
            # none found (a borderline overlap computed differently): tested against every kept box before it
            every = torch.searchsorted(kept_places, order[s])
            tests += int(torch.where(hits.any(dim=1), first, every).sum())
    return tests


@contextmanager
def _recorded() -> Iterator[list[tuple[Any, ...]]]:
    """Every ``batched_nms`` call's arguments while inside (torchvision's detectors call it through
    ``torchvision.ops.boxes``, so that attribute is swapped, and restored however the block ends)."""
    calls: list[tuple[Any, ...]] = []
    module = torchvision.ops.boxes
    with _RECORDING:  # another thread's recording ends (and restores) first; one nested here wraps this one
        original = module.batched_nms

        def spy(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
            calls.append((boxes, scores, idxs, float(iou_threshold)))
            return original(boxes, scores, idxs, iou_threshold)

        module.batched_nms = spy
        try:
            yield calls
        finally:
            module.batched_nms = original


def nms_calls(model: nn.Module, input_size: tuple[int, int], *, seed: int = 0) -> list[tuple[Any, ...]]:
    """The arguments of every ``batched_nms`` call ``model`` makes on the probe image of ``input_size``
    at full detection load: the conditions every backend times a whole detector under."""
    loaded, image = full_load(model), probe_image(*input_size, seed=seed)
    device = next(loaded.parameters()).device
    with _recorded() as calls, torch.no_grad():
        loaded([image.to(device)])
    return calls


def nms_load(model: nn.Module, input_size: tuple[int, int], *, seed: int = 0) -> int | None:
    """The IoU tests every NMS of ``model`` makes on the probe image of ``input_size`` at full
    detection load (:func:`nms_calls`). ``None`` where no NMS was seen (a detector that does not
    call torchvision's ``batched_nms``): its load is unknown."""
    calls = nms_calls(model, input_size, seed=seed)
    return sum(nms_comparisons(*call) for call in calls) if calls else None


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


def with_loads(entry: Entry, loads: Sequence[int | None]) -> Entry:
    """Fixed entry ``entry`` with the NMS loads of the detectors it was timed on (in their order);
    unchanged where one of them is unknown."""
    if any(load is None for load in loads):
        return entry
    return replace(entry, info={**entry.info, LOADS: [int(load) for load in loads]})  # type: ignore[arg-type]


def load_shift_ms(entry: Entry | None, tests: int, ms_per_test: float | None) -> float | None:
    """How far fixed entry ``entry`` moves for a detector whose NMS makes ``tests`` IoU tests: the
    cost per test times its load minus the mean load the entry was timed at, never below minus the
    entry itself; ``None`` (it does not move) without a cost per test or without loads in the entry."""
    loads = entry.info.get(LOADS) if entry is not None else None
    if entry is None or ms_per_test is None or not isinstance(loads, list) or not loads:
        return None
    return max(ms_per_test * (tests - sum(loads) / len(loads)), -entry.median_ms)
