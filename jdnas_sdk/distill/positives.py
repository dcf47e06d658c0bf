"""Which rows of a detector's class scores are positives, by the rule its family trains with.

Distillation of class scores and box deltas is restricted to positive rows (proposals or anchors
that stand for an object): background rows, the vast majority, carry little the labels do not
already say, and a background row's box deltas are never trained. Which rows are positive is the
family's own assignment rule (:attr:`~jdnas_sdk.families.base.Family.kd_positives` names it):

- ``"iou"`` (R-CNN proposals, RetinaNet anchors): IoU with a ground-truth box >= ``iou``.
- ``"centre"`` (FCOS): torchvision's FCOS assignment, a point positive when it lies inside a box,
  within ``radius`` strides of its centre, and the box's extent from it fits the point's level.
  FCOS's "anchors" are stride-sized squares, so the IoU rule finds almost none of them positive.

Every rule takes the same arguments and returns one flat bool tensor, images in order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["positive_rows", "centre_positives", "positive_labels", "POSITIVE_RULES"]


def _match(boxes: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """For each of ``boxes`` (R x 4, xyxy), its largest IoU with ``gt`` (G x 4) and the index of
    that ground-truth box (IoU 0 and index 0 without gt)."""
    if not len(gt) or not len(boxes):
        return boxes.new_zeros(len(boxes)), torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    lt = torch.max(boxes[:, None, :2], gt[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], gt[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(dim=2)
    area = lambda b: (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)  # noqa: E731
    union = area(boxes)[:, None] + area(gt)[None, :] - inter
    best = (inter / union.clamp_min(1e-9)).max(dim=1)
    return best.values, best.indices


def positive_rows(
    boxes: list[Tensor],
    targets: list[dict[str, Tensor]],
    iou: float,
    *,
    levels: list[int] | None = None,
    radius: float = 1.5,
) -> Tensor:
    """The ``"iou"`` rule: ``boxes`` per image (the proposals or anchors the scores belong to, in
    the scores' row order) are positive when their IoU with a ground-truth box of ``targets`` is at
    least ``iou`` (``levels`` and ``radius`` are the centre rule's; unused here)."""
    return torch.cat([_match(b.detach(), t["boxes"].to(b.dtype))[0] >= iou for b, t in zip(boxes, targets)])


def centre_positives(
    boxes: list[Tensor],
    targets: list[dict[str, Tensor]],
    iou: float = 0.5,
    *,
    levels: list[int] | None = None,
    radius: float = 1.5,
) -> Tensor:
    """The ``"centre"`` rule, torchvision ``FCOS.compute_loss``'s assignment: a point (the centre of
    its stride-sized square in ``boxes``) is positive for a box it lies inside, within ``radius``
    strides of the box's centre, whose largest distance from it lies in the point's level range
    (4 to 8 strides; the first level from 0, the last to infinity). ``levels``: points per level,
    in order (required); ``iou`` is the IoU rule's (unused here)."""
    if not levels or min(levels) < 1:
        raise ValueError(f"the centre rule needs the number (>= 1) of points on each level, got levels={levels}")
    out = []
    for points, target in zip(boxes, targets):
        points = points.detach()
        if len(points) != sum(levels):
            raise ValueError(
                f"{len(points)} points but levels={levels} sum to {sum(levels)}: the centre rule takes one point per "
                "position (FCOS), not several anchors per position"
            )
        gt = target["boxes"].to(points.dtype)
        if not len(gt):
            out.append(torch.zeros(len(points), dtype=torch.bool, device=points.device))
            continue
        centres = (points[:, :2] + points[:, 2:]) / 2
        sizes = points[:, 2] - points[:, 0]
        near = (centres[:, None, :] - (gt[None, :, :2] + gt[None, :, 2:]) / 2).abs().amax(dim=2)
        match = near < radius * sizes[:, None]
        x, y = centres[:, 0:1], centres[:, 1:2]
        dist = torch.stack([x - gt[None, :, 0], y - gt[None, :, 1], gt[None, :, 2] - x, gt[None, :, 3] - y], dim=2)
        match &= dist.amin(dim=2) > 0
        lower, upper = sizes * 4, sizes * 8
        lower[: levels[0]] = 0
        upper[-levels[-1] :] = float("inf")
        reach = dist.amax(dim=2)
        match &= (reach > lower[:, None]) & (reach < upper[:, None])
        out.append(match.any(dim=1))
    return torch.cat(out)


def positive_labels(boxes: list[Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
    """The label of each row's best-overlapping ground-truth box (rows as in :func:`positive_rows`;
    0, the background, for an image without boxes). One flat long tensor, images in order."""
    out = []
    for b, t in zip(boxes, targets):
        labels = t["labels"].to(torch.long)
        index = _match(b.detach(), t["boxes"].to(b.dtype))[1]
        out.append(labels[index] if len(labels) else torch.zeros(len(b), dtype=torch.long, device=b.device))
    return torch.cat(out)


#: The rules by the name a family's ``kd_positives`` gives.
POSITIVE_RULES: dict[str, Callable[..., Tensor]] = {"iou": positive_rows, "centre": centre_positives}
