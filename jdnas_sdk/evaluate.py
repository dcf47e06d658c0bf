"""COCO box mAP of a detector on a dataset, through pycocotools.

Predictions are mapped from contiguous labels back to the dataset's COCO category ids and from
xyxy to COCO's xywh, in the original image's pixels, so the figures are the standard COCO ones.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from tqdm.auto import tqdm

from .data.coco import CocoDetection
from .detectors import spec_of
from .errors import DataError

__all__ = ["EvalResult", "Detection", "predict", "coco_map", "evaluate"]

#: One image's detections as torchvision returns them: boxes (xyxy), scores, labels (1..K).
Detection = dict[str, torch.Tensor]

_METRICS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


@dataclass(frozen=True)
class EvalResult:
    """COCO box metrics in [0, 1]; ``nan`` where COCO has no ground truth (e.g. no large objects)."""

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    images: int
    detections: int
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (``nan`` becomes ``None``)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        def pct(v: float) -> str:
            return "  n/a" if math.isnan(v) else f"{100 * v:5.1f}"

        return "  ".join(f"{name}={pct(getattr(self, name))}" for name in _METRICS)


def _coco_api(ground_truth: dict[str, Any]) -> COCO:
    api = COCO()
    api.dataset = ground_truth
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def coco_map(dataset: CocoDetection, detections: Sequence[Detection], *, wall_s: float = 0.0) -> EvalResult:
    """Score ``detections`` (one per dataset image, in dataset order) against the ground truth.

    Label 0 is the background and is skipped; labels above the dataset's classes are an error.
    """
    if len(detections) != len(dataset):
        raise DataError(f"got detections for {len(detections)} images, the dataset has {len(dataset)}")
    categories = dataset.category_ids
    results: list[dict[str, Any]] = []
    for index, det in enumerate(detections):
        image_id = dataset.image_info(index)["id"]
        boxes = det["boxes"].detach().cpu().double()
        for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), det["scores"].tolist(), det["labels"].tolist()):
            if label == 0:  # background: RetinaNet/FCOS keep a never-trained class 0, as torchvision does
                continue
            if not 1 <= label <= len(categories):
                raise DataError(f"detection label {label} outside the dataset's 1..{len(categories)}")
            results.append(
                {
                    "image_id": image_id,
                    "category_id": categories[label - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    gt = _coco_api(dataset.coco_ground_truth())
    if not results or not gt.getAnnIds():
        nan_or_zero = 0.0 if gt.getAnnIds() else math.nan
        return _result([nan_or_zero] * len(_METRICS), len(dataset), len(results), wall_s)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(v) if v >= 0 else math.nan for v in evaluator.stats[:6]]
    return _result(stats, len(dataset), len(results), wall_s)


def _result(values: Sequence[float], images: int, detections: int, wall_s: float) -> EvalResult:
    metrics = dict(zip(_METRICS, values))
    return EvalResult(**metrics, images=images, detections=detections, wall_s=wall_s)


@torch.inference_mode()
def predict(model: nn.Module, dataset: CocoDetection, *, batch_size: int = 4, progress: bool = True) -> list[Detection]:
    """Run ``model`` in eval mode over every image; returns torchvision's per-image outputs on CPU."""
    was_training = model.training
    model.eval()
    out: list[Detection] = []
    try:
        for start in tqdm(range(0, len(dataset), batch_size), desc="eval", unit="batch", disable=not progress):
            images = [dataset.load_image(i) for i in range(start, min(start + batch_size, len(dataset)))]
            out.extend({k: v.cpu() for k, v in det.items()} for det in model(images))
    finally:
        model.train(was_training)
    return out


def evaluate(model: nn.Module, dataset: CocoDetection, *, batch_size: int = 4, progress: bool = True) -> EvalResult:
    """COCO bbox AP, AP50, AP75 and AP small/medium/large of ``model`` on ``dataset``."""
    if len(dataset) == 0:
        raise DataError(f"{dataset.annotation_file} has no images to evaluate on")
    dataset.check_compatible(spec_of(model))
    began = time.perf_counter()
    detections = predict(model, dataset, batch_size=batch_size, progress=progress)
    return coco_map(dataset, detections, wall_s=time.perf_counter() - began)
