from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from jdnas_sdk import DataError
from jdnas_sdk.data import SHAPES, SynthConfig, load_split, make_synthetic_dataset


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        make_synthetic_dataset(tmp_path / name, train=4, val=2, size=64, seed=seed, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_dataset_is_rich_enough_to_be_a_benchmark(tmp_path: Path) -> None:
    make_synthetic_dataset(tmp_path, train=60, val=0, size=256, seed=0, progress=False)
    raw = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    assert len(raw["categories"]) == len(SHAPES) >= 6
    anns = raw["annotations"]
    areas = [a["area"] for a in anns]
    # COCO's small (< 32^2), medium and large (>= 96^2) areas all occur
    assert min(areas) < 32**2 and any(32**2 <= a < 96**2 for a in areas) and max(areas) >= 96**2
    per_image = [sum(a["image_id"] == img["id"] for a in anns) for img in raw["images"]]
    assert sum(per_image) / len(per_image) >= 2.5
    assert {a["category_id"] for a in anns} == set(range(1, len(SHAPES) + 1))
    # occlusion: some boxes overlap
    boxes: dict[int, list[list[float]]] = {}
    for a in anns:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])

    def overlaps(a: list[float], b: list[float]) -> bool:
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]

    assert any(overlaps(a, b) for bs in boxes.values() for i, a in enumerate(bs) for b in bs[i + 1 :])
    ds = load_split(tmp_path, "train")
    assert ds.stats.dropped_degenerate == 0 and ds.stats.clipped == 0


def test_png_format_and_bad_options(tmp_path: Path) -> None:
    make_synthetic_dataset(
        tmp_path, train=1, val=1, size=48, seed=0, config=SynthConfig(size=48, image_format="png"), progress=False
    )
    assert (tmp_path / "images" / "val" / "000000.png").is_file()
    with pytest.raises(DataError, match="image size"):
        SynthConfig(size=8)
    with pytest.raises(DataError, match="at least one image"):
        make_synthetic_dataset(tmp_path, train=0, val=0, progress=False)
    with pytest.raises(DataError, match="image_format"):
        SynthConfig(image_format="gif")
