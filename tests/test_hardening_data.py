"""Hostile and damaged datasets (issue 16, items 2, 4 and 5): every one a DataError naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from jdnas_sdk.data import CocoDetection, check_disjoint
from jdnas_sdk.errors import DataError


def _dataset(tmp_path: Path, *, image: Image.Image | None = None, **changes: Any) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    (image or Image.new("RGB", (64, 48), (10, 20, 30))).save(images / "a.png")
    data: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [4, 4, 20, 20],
                "iscrowd": 0,
                "segmentation": [[4, 4, 24, 4, 24, 24, 4, 24]],
            }
        ],
        "categories": [{"id": 1, "name": "box"}],
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        data[section][0][field] = value
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    return images, ann


def test_a_file_name_outside_the_images_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    images, ann = _dataset(tmp_path, images__file_name="../secret.png")
    with pytest.raises(DataError, match=r"images\[0\]: file name '../secret.png' points outside"):
        CocoDetection(images, ann)
    images, ann = _dataset(tmp_path, images__file_name=str(tmp_path / "secret.png"))
    with pytest.raises(DataError, match="points outside"):
        CocoDetection(images, ann)
    images, ann = _dataset(tmp_path, images__file_name="sub/../../secret.png")
    with pytest.raises(DataError, match="points outside"):
        CocoDetection(images, ann)


def test_an_image_that_is_a_link_the_folder_holds_is_read(tmp_path: Path) -> None:
    """A name that stays inside the images folder is read even where the file there is a symbolic link
    out of it (DVC's and git-annex's caches, splits made of links into one pool): the folder's owner
    placed the link, the JSON only names it. It was refused as 'points outside', naming a correct name."""
    (pool := tmp_path / "pool").mkdir()
    images, ann = _dataset(pool)  # writes pool/images/a.png
    linked = tmp_path / "linked"
    (linked / "images").mkdir(parents=True)
    (linked / "images" / "a.png").symlink_to(images / "a.png")
    data = CocoDetection(linked / "images", ann)
    image, target = data[0]
    assert image.shape[0] == 3 and len(target["boxes"]) == 1
    # a link is the picture it links to: one pool picture in train and test is caught, as are two links to it
    # in one split (review45: names alone let a test image be trained on)
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    (other / "images" / "b.png").symlink_to(images / "a.png")
    moved = json.loads(ann.read_text())
    moved["images"][0]["file_name"] = "b.png"
    (other / "instances.json").write_text(json.dumps(moved))
    with pytest.raises(DataError, match="the train and test splits share 1 image"):
        check_disjoint(train=data, test=CocoDetection(other / "images", other / "instances.json"))
    (linked / "images" / "b.png").symlink_to(images / "a.png")
    twice = json.loads(ann.read_text())
    twice["images"].append({**twice["images"][0], "id": 2, "file_name": "b.png"})
    ann.write_text(json.dumps(twice))
    with pytest.raises(DataError, match="'b.png' is image 1's file too"):
        CocoDetection(linked / "images", ann)
    # a folder on the way that links out is not the file's own link: a name through it is outside
    (linked / "images" / "up").symlink_to(tmp_path)
    twice["images"] = [{**twice["images"][0], "file_name": "up/pool/images/a.png"}]
    ann.write_text(json.dumps(twice))
    with pytest.raises(DataError, match="'up/pool/images/a.png' points outside"):
        CocoDetection(linked / "images", ann)


def test_a_decompression_bomb_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    bomb = Image.new("1", (12_000, 12_000))  # 144 Mpixel (over PIL's limit) in a few kB of PNG
    images, ann = _dataset(
        tmp_path, image=bomb, images__width=12_000, images__height=12_000, annotations__bbox=[4, 4, 20, 20]
    )
    data = CocoDetection(images, ann)
    with pytest.raises(DataError, match=r"a\.png is too large to decode safely"):
        data[0]


def test_16_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    values = np.full((48, 64), 30_000, dtype=np.uint16)
    values[0, 0] = 65_535
    grey16 = Image.fromarray(values)
    images, ann = _dataset(tmp_path, image=grey16)
    assert Image.open(images / "a.png").mode.startswith("I")
    image, _ = CocoDetection(images, ann)[0]
    assert image.shape == (3, 48, 64)
    assert image[:, 1, 1].tolist() == pytest.approx([30_000 / 65_535] * 3, abs=1e-6)
    assert image[0, 0, 0].item() == pytest.approx(1.0)


def test_ids_beyond_int64_are_refused_at_load(tmp_path: Path) -> None:
    images, ann = _dataset(tmp_path, images__id=2**63, annotations__image_id=2**63)
    with pytest.raises(DataError, match="int64"):
        CocoDetection(images, ann)


@pytest.mark.parametrize(
    "segmentation",
    [
        {"size": [48, 64], "counts": [1, 2]},  # covers 3 pixels of 3,072: pycocotools reads garbage
        {"size": [48, 64], "counts": "zz"},  # not a compressed RLE string
        {"size": [10, 10], "counts": [100]},  # another image's size
        [[1, 2, 3]],  # a polygon of one and a half points
        [["a", 1, 2, 3, 4, 5]],
    ],
)
def test_an_invalid_mask_is_a_data_error_at_load_naming_the_image(tmp_path: Path, segmentation: Any) -> None:
    images, ann = _dataset(tmp_path, annotations__segmentation=segmentation)
    with pytest.raises(DataError, match=r"image 'a\.png'") as info:
        CocoDetection(images, ann, with_masks=True)
    assert str(ann) in str(info.value)
    CocoDetection(images, ann)  # a box-only family never decodes masks: the same file loads


def test_a_valid_compressed_rle_loads(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    grid = np.zeros((48, 64), dtype=np.uint8, order="F")
    grid[4:24, 4:24] = 1
    rle = mask_utils.encode(grid)
    images, ann = _dataset(tmp_path, annotations__segmentation={"size": [48, 64], "counts": rle["counts"].decode()})
    _, target = CocoDetection(images, ann, with_masks=True)[0]
    assert int(target["masks"].sum()) == 400


def test_deeply_nested_json_is_a_data_error(tmp_path: Path) -> None:
    images, ann = _dataset(tmp_path)
    ann.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nests too deeply"):
        CocoDetection(images, ann)


def test_synth_on_a_disk_that_fills_half_way_leaves_no_half_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC simulated at the fourth image (the OS call raises it), then a real run replaces the folder whole."""
    import errno

    from jdnas_sdk.data import make_synthetic_dataset
    from jdnas_sdk.errors import StorageError

    real_save = Image.Image.save
    calls = {"n": 0}

    def save(self: Image.Image, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(StorageError, match="the disk is full"):
        make_synthetic_dataset(tmp_path / "ds", train=4, val=2, size=64, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(Image.Image, "save", real_save)
    make_synthetic_dataset(tmp_path / "ds", train=2, val=1, size=64, progress=False)
    assert len(list((tmp_path / "ds" / "images" / "train").iterdir())) == 2
    (tmp_path / "ds" / "mine.txt").write_text("user file")
    from jdnas_sdk.errors import DataError as _DataError

    with pytest.raises(_DataError, match="holds other files"):
        make_synthetic_dataset(tmp_path / "ds", train=2, val=1, size=64, progress=False)


def test_synth_onto_a_real_full_disk_is_refused_before_drawing(tmp_path: Path) -> None:
    import subprocess

    from jdnas_sdk.data import make_synthetic_dataset
    from jdnas_sdk.errors import StorageError

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(StorageError, match=f"{small}: the disk is nearly full"):
            make_synthetic_dataset(small / "ds", train=50, val=10, size=96, progress=False)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_synth_never_replaces_a_dataset_it_did_not_write(tmp_path: Path) -> None:
    from jdnas_sdk.data import make_synthetic_dataset
    from jdnas_sdk.errors import DataError as _DataError

    mine = tmp_path / "real"
    (mine / "images" / "train").mkdir(parents=True)
    (mine / "annotations").mkdir()
    (mine / "images" / "train" / "cat.jpg").write_bytes(b"my photo")
    (mine / "annotations" / "instances_train.json").write_text("{}")
    with pytest.raises(_DataError, match="did not write"):
        make_synthetic_dataset(mine, train=2, val=1, size=64, progress=False)
    assert (mine / "images" / "train" / "cat.jpg").read_bytes() == b"my photo"  # nothing lost
    made = make_synthetic_dataset(tmp_path / "synth", train=2, val=1, size=64, progress=False)
    again = make_synthetic_dataset(made, train=3, val=1, size=64, progress=False)  # its own: replaced whole
    assert len(list((again / "images" / "train").iterdir())) == 3


def test_one_file_listed_under_two_image_ids_is_refused(tmp_path: Path) -> None:
    """Two ids for one picture (here 'a.png' and './a.png') count and score it twice: refused, naming both."""
    images, ann = _dataset(tmp_path)
    data = json.loads(ann.read_text())
    data["images"].append({**data["images"][0], "id": 2, "file_name": "./a.png"})
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"images\[1\]: './a.png' is image 1's file too; list each file once"):
        CocoDetection(images, ann)
