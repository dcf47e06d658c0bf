from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jdnas_sdk import DataError, build_detector
from jdnas_sdk.data import CocoDetection
from jdnas_sdk.evaluate import coco_map, evaluate

from .conftest import tiny_spec


def _ground_truth_as_predictions(ds: CocoDetection) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(len(ds)):
        t = ds.target(i)
        out.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))})
    return out


def _empty(ds: CocoDetection) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}] * len(
        ds
    )


def test_ground_truth_scores_one_and_nothing_scores_zero(val_set: CocoDetection) -> None:
    perfect = coco_map(val_set, _ground_truth_as_predictions(val_set))
    assert (
        perfect.ap == pytest.approx(1.0) and perfect.ap50 == pytest.approx(1.0) and perfect.ap75 == pytest.approx(1.0)
    )
    assert coco_map(val_set, _empty(val_set)).ap == 0.0


def test_shifted_boxes_lose_ap75_before_ap50(val_set: CocoDetection) -> None:
    preds = _ground_truth_as_predictions(val_set)
    for p in preds:
        w = p["boxes"][:, 2] - p["boxes"][:, 0]
        p["boxes"] = p["boxes"] + torch.stack([w * 0.2, torch.zeros_like(w), w * 0.2, torch.zeros_like(w)], 1)
    result = coco_map(val_set, preds)
    # IoU = 0.8 / 1.2 = 0.67: matched at thresholds 0.50..0.65 (4 of COCO's 10), not at 0.75
    assert result.ap50 == pytest.approx(1.0) and result.ap75 == 0.0 and result.ap == pytest.approx(0.4)


def _crowd_dataset(tmp_path: Path) -> CocoDetection:
    images = [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in (1, 2, 3)]
    for img in images:
        Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / img["file_name"])
    anns = [
        {"id": 1, "image_id": 1, "category_id": 40, "bbox": [2, 2, 20, 20], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 12, "bbox": [30, 30, 25, 25], "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 40, "bbox": [0, 0, 60, 60], "iscrowd": 1},
    ]  # image 3 has no annotations
    ann = tmp_path / "gt.json"
    ann.write_text(
        json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 12, "name": "a"}, {"id": 40, "name": "b"}]}
        )
    )
    return CocoDetection(tmp_path, ann)


def test_crowd_and_unannotated_images_and_category_ids(tmp_path: Path) -> None:
    ds = _crowd_dataset(tmp_path)
    preds = _ground_truth_as_predictions(ds)
    # a detection inside the crowd region is ignored, not a false positive
    preds[1] = {
        "boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([0.9]),
    }
    assert coco_map(ds, preds).ap == pytest.approx(1.0)
    # the same detection on the unannotated image is a false positive with a higher score
    preds[1] = _empty(ds)[0]
    preds[2] = {
        "boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([2.0]),
    }
    assert coco_map(ds, preds).ap < 1.0
    # swapped labels map to the wrong COCO categories
    swapped = _ground_truth_as_predictions(ds)
    swapped[0]["labels"] = 3 - swapped[0]["labels"]
    assert coco_map(ds, swapped).ap == 0.0


def test_bad_predictions_are_refused(val_set: CocoDetection) -> None:
    with pytest.raises(DataError, match="detections for 1 images"):
        coco_map(val_set, _empty(val_set)[:1])
    bad = _ground_truth_as_predictions(val_set)
    bad[0]["labels"] = torch.full_like(bad[0]["labels"], 99)
    with pytest.raises(DataError, match="label 99"):
        coco_map(val_set, bad)


def test_evaluate_runs_a_real_model_and_checks_classes(val_set: CocoDetection) -> None:
    model = build_detector(tiny_spec("fcos", num_classes=val_set.num_classes, score_thresh=0.0))
    result = evaluate(model, val_set, progress=False)
    assert result.images == len(val_set) and result.detections > 0
    assert 0.0 <= result.ap < 0.2 and not math.isnan(result.ap)
    assert json.dumps(result.to_dict())
    with pytest.raises(DataError, match="predicts 2 classes"):
        evaluate(build_detector(tiny_spec("fcos", num_classes=3)), val_set, progress=False)
    wrong_ids = tiny_spec(
        "fcos", num_classes=val_set.num_classes, category_ids=tuple(range(101, 101 + val_set.num_classes - 1))
    )
    with pytest.raises(DataError, match="category ids"):
        evaluate(build_detector(wrong_ids), val_set, progress=False)
