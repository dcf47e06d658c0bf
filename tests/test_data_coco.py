from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from jdnas_sdk import DataError
from jdnas_sdk.data import CocoDetection, find_split, hflip, load_split


def _dataset(
    tmp_path: Path,
    *,
    images: list[dict[str, Any]] | None = None,
    annotations: list[dict[str, Any]] | None = None,
    categories: list[dict[str, Any]] | None = None,
    write: bool = True,
) -> tuple[Path, Path]:
    img_dir = tmp_path / "imgs"
    img_dir.mkdir(exist_ok=True)
    images = (
        images
        if images is not None
        else [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 11, "file_name": "b.png", "width": 40, "height": 30},
        ]
    )
    if write:
        for img in images:
            Image.fromarray(np.zeros((img["height"], img["width"], 3), dtype=np.uint8)).save(img_dir / img["file_name"])
    data = {
        "images": images,
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 5, 10, 10], "iscrowd": 0, "area": 100},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [30, 20, 20, 20], "iscrowd": 0},  # runs off the image
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [1, 1, 0, 5], "iscrowd": 0},  # zero width
            {"id": 4, "image_id": 10, "category_id": 7, "bbox": [0, 0, 20, 20], "iscrowd": 1},
        ],
        "categories": categories if categories is not None else [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    return img_dir, ann


def test_reads_coco_into_torchvision_targets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(*_dataset(tmp_path))
    assert "clipped 1 boxes" in caplog.text and "dropped 1 degenerate" in caplog.text
    assert ds.category_ids == (3, 7) and ds.class_names == ("cat", "dog") and ds.num_classes == 3
    assert (ds.stats.clipped, ds.stats.dropped_degenerate, ds.stats.crowd, ds.stats.unannotated_images) == (1, 1, 1, 1)
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert target["boxes"].tolist() == [[5, 5, 15, 15], [30, 20, 40, 30]]
    assert target["labels"].tolist() == [2, 1]  # dog -> 2, cat -> 1 (sorted by category id)
    assert target["crowd_boxes"].tolist() == [[0, 0, 20, 20]]
    assert int(target["image_id"]) == 10
    empty = ds.target(1)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    gt = ds.coco_ground_truth()
    assert {a["iscrowd"] for a in gt["annotations"]} == {0, 1} and all("area" in a for a in gt["annotations"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        # an integer past Python's 4300-digit limit was a traceback
        ('{"images": [{"id": 1' + "1" * 5000 + '}], "annotations": [], "categories": [{"id": 1}]}', "not valid JSON"),
        ("[1, 2]", "not a COCO instances file"),
        ('{"images": []}', "not a COCO instances file"),
        ('{"images": {}, "annotations": [], "categories": [{"id": 1}]}', "'images' must be a list"),
        ('{"images": [], "annotations": [], "categories": []}', "'categories' must be a non-empty list"),
        (
            '{"images": [{"id": "x", "file_name": "a.png", "width": 1, "height": 1}], '
            '"annotations": [], "categories": [{"id": 1}]}',
            r"images\[0\] needs a unique integer 'id'",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.png", "width": 0, "height": 1}], '
            '"annotations": [], "categories": [{"id": 1}]}',
            "positive integer 'width'",
        ),
        ('{"images": [], "annotations": [], "categories": [{"id": 1}, {"id": 1}]}', "category ids must be unique"),
    ],
)
def test_malformed_json_names_file_and_problem(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "imgs").mkdir()
    ann = tmp_path / "instances.json"
    ann.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        CocoDetection(tmp_path / "imgs", ann)
    assert "instances.json" in str(info.value)


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({"image_id": 99, "category_id": 7, "bbox": [0, 0, 1, 1]}, "image_id 99"),
        ({"image_id": 10, "category_id": 99, "bbox": [0, 0, 1, 1]}, "category_id 99"),
        ({"image_id": 10, "category_id": 7, "bbox": [0, 0, 1]}, "'bbox' must be"),
        ({"image_id": 10, "category_id": 7, "bbox": ["a", 0, 1, 1]}, "'bbox' must be"),
        ({"image_id": 10, "category_id": 7, "bbox": [0, 0, float("nan"), 1]}, "'bbox' must be"),
        ({"image_id": 10, "category_id": 7, "bbox": [0, 0, 1, 1], "iscrowd": 2}, "'iscrowd'"),
        ("nope", r"annotations\[0\] must be an object"),
    ],
)
def test_bad_annotations(tmp_path: Path, annotation: Any, message: str) -> None:
    paths = _dataset(tmp_path, annotations=[annotation])
    with pytest.raises(DataError, match=message):
        CocoDetection(*paths)


def test_missing_images_and_folders(tmp_path: Path) -> None:
    images, ann = _dataset(tmp_path)
    (images / "b.png").unlink()
    with pytest.raises(DataError, match=r"1 of 2 images .* missing .*b\.png"):
        CocoDetection(images, ann)
    with pytest.raises(DataError, match="does not exist"):
        CocoDetection(tmp_path / "nowhere", ann)
    with pytest.raises(DataError, match="does not exist"):
        CocoDetection(images, tmp_path / "none.json")


def test_image_problems_are_reported_with_the_file(tmp_path: Path) -> None:
    images, ann = _dataset(tmp_path)
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(images / "a.png")
    ds = CocoDetection(images, ann)
    with pytest.raises(DataError, match=r"a\.png is 10x10 but .* says 40x30"):
        ds[0]
    (images / "b.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*b\.png"):
        ds[1]


def test_a_jpeg_is_read_as_its_exif_orientation_shows_it(tmp_path: Path) -> None:
    """A phone's JPEG stored 40x30 with EXIF orientation 6 is shown 30x40, as labelling tools draw boxes on
    it: read that way (it was read as stored and refused with 'fix the JSON's width/height', a fix that
    misaligns every box; probe44). A JSON with the stored size is refused naming the orientation."""
    images, ann = _dataset(tmp_path, images=[{"id": 10, "file_name": "a.jpg", "width": 30, "height": 40}])
    stored = np.zeros((30, 40, 3), dtype=np.uint8)
    stored[:, :10] = 255  # the stored left edge, which orientation 6 (turn 90 degrees clockwise) puts on top
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(images / "a.jpg", exif=exif, quality=95)
    image, _ = CocoDetection(images, ann)[0]
    assert image.shape == (3, 40, 30)
    assert image[:, :10].mean() > 0.9 and image[:, 12:].mean() < 0.1  # the white band is on top
    data = json.loads(ann.read_text())
    data["images"][0].update(width=40, height=30)  # the stored size
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"a\.jpg is 30x40 but .* says 40x30; the file's EXIF orientation \(6\)"):
        CocoDetection(images, ann)[0]
    data["images"][0].update(width=50, height=50)  # neither size: the JSON is wrong, whatever the orientation
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"says 50x50; fix the JSON's width/height$"):
        CocoDetection(images, ann)[0]


def test_masks_from_synthetic_rle(synth_root: Path) -> None:
    ds = load_split(synth_root, "train", with_masks=True)
    _, target = ds[0]
    masks = target["masks"]
    assert masks.shape[0] == target["boxes"].shape[0] and masks.dtype == torch.uint8
    for mask, box in zip(masks, target["boxes"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1] == box.tolist()


def test_an_object_without_a_mask_is_refused_when_the_json_is_read_not_in_training(tmp_path: Path) -> None:
    """With masks asked for, a (non-crowd) annotation without a segmentation stopped jdnas train only
    when a batch drew its image, hours in on a real dataset (probe44); crowd regions need none."""
    img_dir, ann = _dataset(tmp_path)  # the default annotations have no segmentation; one is crowd
    polygon = [[5, 5, 15, 5, 15, 15, 5, 15]]
    data = json.loads(ann.read_text())
    for a in data["annotations"][:3]:
        a["segmentation"] = polygon
    ann.write_text(json.dumps(data))
    assert len(CocoDetection(img_dir, ann, with_masks=True)) == 2  # the crowd region has none: fine
    del data["annotations"][1]["segmentation"]
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\[1\] \(image 'a.png'\) has no 'segmentation'; mask training"):
        CocoDetection(img_dir, ann, with_masks=True)
    assert len(CocoDetection(img_dir, ann)) == 2  # boxes only: not needed


def test_find_split_layouts(tmp_path: Path, synth_root: Path) -> None:
    images, ann = find_split(synth_root, "val")
    assert images.name == "val" and ann.name == "instances_val.json"
    coco = tmp_path / "coco"
    (coco / "val2017").mkdir(parents=True)
    (coco / "annotations").mkdir()
    (coco / "annotations" / "instances_val2017.json").write_text("{}")
    assert find_split(coco, "val")[0].name == "val2017"
    with pytest.raises(DataError, match="no 'test' split"):
        find_split(coco, "test")
    with pytest.raises(DataError, match="jdnas data synth"):
        find_split(tmp_path / "absent", "val")


def test_hflip_mirrors_boxes_and_masks() -> None:
    image = torch.zeros(3, 4, 10)
    image[:, :, 0] = 1
    masks = torch.zeros(1, 4, 10, dtype=torch.uint8)
    masks[0, :, :2] = 1
    flipped, target = hflip(
        image, {"boxes": torch.tensor([[0.0, 0.0, 2.0, 4.0]]), "masks": masks, "labels": torch.tensor([1])}
    )
    assert flipped[0, 0, -1] == 1
    assert target["boxes"].tolist() == [[8.0, 0.0, 10.0, 4.0]]
    assert target["masks"][0, 0, -2:].tolist() == [1, 1]
