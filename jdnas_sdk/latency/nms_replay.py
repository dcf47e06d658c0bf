"""The greedy loop an exported detector's NMS runs, replayed to count its IoU tests, and the calls
that feed it, recorded from a forward pass.

torchvision's ``batched_nms`` keeps classes apart by offsetting each class's boxes (in float32); the
exported graph then runs one NonMaxSuppression, which takes candidates in falling score order and
tests each against the boxes kept so far, stopping at the first that overlaps it beyond the threshold.
:func:`nms_comparisons` counts those tests without running the loop box by box; :func:`recorded_nms`
collects every ``batched_nms`` call of a forward pass (:func:`~.probe.probe` counts a detector's
load on the forward it runs anyway; :mod:`.nms_load` fits what a test costs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torchvision
from torch import Tensor

__all__ = ["nms_comparisons", "recorded_nms"]

CHUNK = 4096
"""Suppressed boxes tested at a time (bounds memory at ``CHUNK`` x kept boxes of one class)."""

_RECORDING = threading.RLock()  # recorded_nms swaps a module attribute: one thread records at a time


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
def recorded_nms() -> Iterator[list[tuple[Any, ...]]]:
    """Every ``batched_nms`` call's arguments made by this thread while inside (torchvision's detectors
    call it through ``torchvision.ops.boxes``, so that attribute is swapped, and restored however the
    block ends; another thread's detector running meanwhile calls through it unrecorded)."""
    calls: list[tuple[Any, ...]] = []
    module = torchvision.ops.boxes
    owner = threading.get_ident()
    with _RECORDING:  # another thread's recording ends (and restores) first; one nested here wraps this one
        original = module.batched_nms

        def spy(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
            if threading.get_ident() == owner:
                calls.append((boxes, scores, idxs, float(iou_threshold)))
            return original(boxes, scores, idxs, iou_threshold)

        module.batched_nms = spy
        try:
            yield calls
        finally:
            module.batched_nms = original
