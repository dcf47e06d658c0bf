"""COCO-format detection datasets, read into what torchvision detectors take.

Any COCO detection dataset works: an images folder plus an instances JSON. Boxes become xyxy
float tensors, categories become contiguous labels 1..K (with the map back to COCO category ids
kept for evaluation), crowd regions are kept apart from the training boxes, and images without
annotations stay in the dataset. Bad boxes are clipped or dropped and counted; bad files raise a
:class:`DataError` that names the file and the problem.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from .._args import as_path
from ..arch import DetectorSpec
from ..errors import DataError
from .checks import INT64_MAX, MAX_SIDE, check_segmentation, check_size, contained_path, read_rgb

__all__ = ["Category", "DataStats", "CocoDetection", "find_split", "load_split"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Category:
    """One COCO category: its id in the JSON, its name and its contiguous label (1-based)."""

    id: int
    name: str
    label: int


@dataclass
class DataStats:
    """What loading did to the annotations, so nothing is changed silently."""

    images: int = 0
    annotations: int = 0
    crowd: int = 0
    clipped: int = 0
    dropped_degenerate: int = 0
    unannotated_images: int = 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _is_id(value: Any) -> bool:
    """An integer id that fits the int64 tensors training puts it in."""
    return _is_int(value) and -INT64_MAX - 1 <= value <= INT64_MAX


class CocoDetection(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """A COCO detection dataset: ``dataset[i] -> (image CHW float in [0, 1], target)``.

    ``target`` holds ``boxes`` (xyxy, float32), ``labels`` (int64, 1..K), ``image_id``,
    ``area``, ``crowd_boxes`` and, with ``with_masks=True``, ``masks`` (uint8, N x H x W).
    ``min_box_size`` (pixels) is the smallest side a box may have after clipping.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        annotation_file: str | os.PathLike[str],
        *,
        with_masks: bool = False,
        min_box_size: float = 1.0,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.with_masks = with_masks
        self.min_box_size = float(min_box_size)
        if not self.images_dir.is_dir():
            raise DataError(f"images folder {self.images_dir} does not exist or is not a folder")
        raw = _read_json(self.annotation_file)
        self.categories = _parse_categories(raw, self.annotation_file)
        self._label_of = {c.id: c.label for c in self.categories}
        self.images = _parse_images(raw, self.annotation_file)
        self.stats = DataStats(images=len(self.images))
        self._anns: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in self.images}
        self._gt_annotations: list[dict[str, Any]] = []
        self._parse_annotations(raw)
        self._check_files()
        self.stats.unannotated_images = sum(1 for anns in self._anns.values() if not anns)
        if self.stats.clipped or self.stats.dropped_degenerate:
            log.warning(
                "%s: clipped %d boxes to their image and dropped %d degenerate boxes (side < %g px)",
                self.annotation_file,
                self.stats.clipped,
                self.stats.dropped_degenerate,
                self.min_box_size,
            )

    # -- parsing ---------------------------------------------------------------------------
    def _parse_annotations(self, raw: dict[str, Any]) -> None:
        anns = raw.get("annotations")
        if not isinstance(anns, list):
            raise DataError(f"{self.annotation_file}: 'annotations' must be a list, got {type(anns).__name__}")
        sizes = {img["id"]: (img["width"], img["height"]) for img in self.images}
        self._file_of = {img["id"]: img["file_name"] for img in self.images}
        for index, ann in enumerate(anns):
            where = f"{self.annotation_file}: annotations[{index}]"
            if not isinstance(ann, dict):
                raise DataError(f"{where} must be an object, got {type(ann).__name__}")
            image_id, category_id, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
            if not _is_id(image_id) or image_id not in sizes:
                raise DataError(f"{where} refers to image_id {image_id!r}, which is not in 'images'")
            if not _is_id(category_id) or category_id not in self._label_of:
                raise DataError(f"{where} refers to category_id {category_id!r}, which is not in 'categories'")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                raise DataError(f"{where}: 'bbox' must be [x, y, width, height] of finite numbers, got {bbox!r}")
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1):
                raise DataError(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
            width, height = sizes[image_id]
            x0, y0, w, h = (float(v) for v in bbox)
            x1, y1 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
            x2, y2 = min(max(x0 + w, 0.0), width), min(max(y0 + h, 0.0), height)
            if x2 - x1 < self.min_box_size or y2 - y1 < self.min_box_size:
                self.stats.dropped_degenerate += 1
                continue
            if (x1, y1, x2, y2) != (x0, y0, x0 + w, y0 + h):
                self.stats.clipped += 1
            area = ann.get("area")
            clean = {
                "id": len(self._gt_annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(area) if _is_number(area) and area > 0 else (x2 - x1) * (y2 - y1),
                "iscrowd": int(crowd),
            }
            seg = ann.get("segmentation")
            if self.with_masks and (seg is not None or not crowd):  # bad RLE decodes into garbage: refused here,
                check_segmentation(seg, height, width, where=f"{where} (image {self._file_of[image_id]!r})")  # or none
            if seg is not None:
                clean["segmentation"] = seg
            self._gt_annotations.append(clean)
            self._anns[image_id].append(clean)
            self.stats.annotations += 1
            self.stats.crowd += int(crowd)

    def _check_files(self) -> None:
        files: dict[Path, int] = {}
        self._files: dict[int, Path] = {}  # each image's file, links resolved: read once, here
        for index, img in enumerate(self.images):  # a name from the JSON never reads outside the images folder
            where = f"{self.annotation_file}: images[{index}]"
            file = contained_path(self.images_dir, img["file_name"], where=where, follow_links=False).resolve()
            if files.setdefault(file, img["id"]) != img["id"]:  # one picture (or two links to it) counted twice
                raise DataError(f"{where}: {img['file_name']!r} is image {files[file]}'s file too; list each file once")
            self._files[img["id"]] = file
        missing = [img["file_name"] for img in self.images if not self._files[img["id"]].is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(self.images)} images listed in {self.annotation_file} are missing "
                f"from {self.images_dir} (first: {missing[:3]}); check the images folder"
            )

    # -- access ----------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes including background, as torchvision detectors count them."""
        return len(self.categories) + 1

    @property
    def category_ids(self) -> tuple[int, ...]:
        """COCO category id of each contiguous label 1..K."""
        return tuple(c.id for c in self.categories)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    def check_compatible(self, spec: DetectorSpec) -> None:
        """Raise :class:`DataError` unless a detector of ``spec`` predicts this dataset's categories."""
        if spec.num_classes != self.num_classes:
            raise DataError(
                f"the model predicts {spec.num_classes - 1} class{'es' * (spec.num_classes != 2)}, the dataset "
                f"{self.annotation_file} has {self.num_classes - 1}; use data with the categories it was trained on"
            )
        if spec.category_ids and spec.category_ids != self.category_ids:
            raise DataError(
                f"the model was trained on category ids {list(spec.category_ids)}, the dataset "
                f"{self.annotation_file} has {list(self.category_ids)}; use data with the same categories"
            )

    def coco_ground_truth(self) -> dict[str, Any]:
        """The cleaned ground truth as a COCO dict (pycocotools-ready: area and iscrowd filled)."""
        return {
            "images": [dict(img) for img in self.images],
            "annotations": [{k: v for k, v in a.items() if k != "segmentation"} for a in self._gt_annotations],
            "categories": [{"id": c.id, "name": c.name} for c in self.categories],
        }

    def fingerprint(self) -> str:
        """16 hex digits of the sha256 of the cleaned ground truth (images, boxes, categories): what
        a training checkpoint records so that a resume on other data is refused, not mixed in."""
        text = json.dumps(self.coco_ground_truth(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def image_info(self, index: int) -> dict[str, Any]:
        return self.images[index]

    def head(self, count: int) -> CocoDetection:
        """The first ``count`` images as a dataset of their own (ground truth restricted to them),
        for quick evaluations on part of a split."""
        part = copy.copy(self)
        part.images = self.images[: max(0, count)]
        kept = {img["id"] for img in part.images}
        part._gt_annotations = [a for a in self._gt_annotations if a["image_id"] in kept]
        return part

    def subset(self, ids: set[int] | list[int] | tuple[int, ...]) -> CocoDetection:
        """The images whose ids are in ``ids`` (file order kept) as a dataset of their own, ground
        truth restricted to them: how one split is cut into two disjoint ones."""
        wanted = set(ids)
        part = copy.copy(self)
        part.images = [img for img in self.images if img["id"] in wanted]
        part._gt_annotations = [a for a in self._gt_annotations if a["image_id"] in wanted]
        return part

    def image_files(self) -> list[Path]:
        """Each image's file with links resolved (one picture is one file across splits), in order."""
        return [self._files[img["id"]] for img in self.images]

    def image_ids(self) -> tuple[int, ...]:
        """The ids of this dataset's images, in order."""
        return tuple(img["id"] for img in self.images)

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, index: int) -> torch.Tensor:
        info = self.images[index]
        path = contained_path(self.images_dir, info["file_name"], where=str(self.annotation_file), follow_links=False)
        array = read_rgb(path)
        check_size(path, array, info["height"], info["width"], where=str(self.annotation_file))
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()

    def target(self, index: int) -> dict[str, torch.Tensor]:
        info = self.images[index]
        anns = self._anns[info["id"]]
        plain = [a for a in anns if not a["iscrowd"]]
        crowd = [a for a in anns if a["iscrowd"]]
        target = {
            "boxes": _xyxy(plain),
            "labels": torch.tensor([self._label_of[a["category_id"]] for a in plain], dtype=torch.int64),
            "image_id": torch.tensor(info["id"], dtype=torch.int64),
            "area": torch.tensor([a["area"] for a in plain], dtype=torch.float32),
            "crowd_boxes": _xyxy(crowd),
        }
        if self.with_masks:
            target["masks"] = self._masks(plain, info)
        return target

    def _masks(self, anns: list[dict[str, Any]], info: dict[str, Any]) -> torch.Tensor:
        height, width = info["height"], info["width"]
        masks = []
        for ann in anns:
            seg = ann.get("segmentation")
            where = f"{self.annotation_file}: annotation on image {info['file_name']!r}"  # checked when read
            try:
                if isinstance(seg, list):
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
                elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                    rle = mask_utils.frPyObjects(seg, height, width)
                else:
                    rle = seg
                masks.append(torch.from_numpy(mask_utils.decode(rle).astype(np.uint8)))
            except Exception as exc:  # pycocotools raises bare Exception for what it cannot read
                raise DataError(f"{where}: invalid segmentation ({exc})") from exc
        if not masks:
            return torch.zeros((0, height, width), dtype=torch.uint8)
        return torch.stack(masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.load_image(index), self.target(index)


def _xyxy(anns: list[dict[str, Any]]) -> torch.Tensor:
    if not anns:
        return torch.zeros((0, 4), dtype=torch.float32)
    boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except ValueError as exc:  # bad syntax or UTF-8, an integer past Python's 4300 digits
        raise DataError(f"{path} is not valid JSON ({exc}); is the file truncated?") from exc
    except RecursionError as exc:
        raise DataError(f"{path} nests too deeply to be a COCO instances file; it is corrupt") from exc
    except OSError as exc:
        raise DataError(f"cannot read annotation file {path}: {exc.strerror or exc}") from exc
    if not isinstance(raw, dict) or not all(k in raw for k in ("images", "annotations", "categories")):
        keys = sorted(raw)[:6] if isinstance(raw, dict) else type(raw).__name__
        raise DataError(
            f"{path} is not a COCO instances file: it needs top-level 'images', 'annotations' and "
            f"'categories' (found {keys})"
        )
    return raw


def _parse_categories(raw: dict[str, Any], path: Path) -> tuple[Category, ...]:
    cats = raw["categories"]
    if not isinstance(cats, list) or not cats:
        raise DataError(f"{path}: 'categories' must be a non-empty list")
    for cat in cats:
        if not isinstance(cat, dict) or not _is_id(cat.get("id")):
            raise DataError(f"{path}: categories entry {cat!r} needs an integer 'id'")
    ids = [cat["id"] for cat in cats]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: category ids must be unique, got {sorted(ids)}")
    ordered = sorted(cats, key=lambda c: c["id"])
    out = [Category(id=c["id"], name=str(c.get("name", c["id"])), label=i + 1) for i, c in enumerate(ordered)]
    return tuple(out)


def _parse_images(raw: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    images = raw["images"]
    if not isinstance(images, list):
        raise DataError(f"{path}: 'images' must be a list, got {type(images).__name__}")
    seen: set[int] = set()
    out = []
    for index, img in enumerate(images):
        where = f"{path}: images[{index}]"
        if not isinstance(img, dict):
            raise DataError(f"{where} must be an object, got {type(img).__name__}")
        if not _is_id(img.get("id")) or img["id"] in seen:
            raise DataError(f"{where} needs a unique integer 'id' within int64 range, got {img.get('id')!r}")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise DataError(f"{where} needs a 'file_name' string")
        for key in ("width", "height"):
            if not _is_int(img.get(key)) or not 1 <= img[key] <= MAX_SIDE:
                raise DataError(f"{where} needs a positive integer '{key}' (at most {MAX_SIDE}), got {img.get(key)!r}")
        seen.add(img["id"])
        out.append({k: img[k] for k in ("id", "file_name", "width", "height")})
    return out


def find_split(root: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """Locate ``(images_dir, annotation_file)`` of ``split`` in a dataset folder.

    Understands this SDK's layout (``images/<split>/`` + ``annotations/instances_<split>.json``)
    and COCO's (``<split>2017/`` + ``annotations/instances_<split>2017.json``).
    """
    base = as_path(root, "dataset folder")
    if base.exists() and not base.is_dir():
        raise DataError(
            f"dataset {base} is a file, not a folder: give the folder that holds images/ and annotations/ "
            "(COCO's layout: train2017/, val2017/, annotations/)"
        )
    if not base.is_dir():
        raise DataError(f"dataset folder {base} does not exist; make one with `jdnas data synth --out {base}`")
    candidates = [
        (base / "images" / split, base / "annotations" / f"instances_{split}.json"),
        (base / split, base / "annotations" / f"instances_{split}.json"),
        (base / f"{split}2017", base / "annotations" / f"instances_{split}2017.json"),
    ]
    for images, ann in candidates:
        if images.is_dir() and ann.is_file():
            return images, ann
    tried = "; ".join(f"{i.relative_to(base)}/ + {a.relative_to(base)}" for i, a in candidates)
    raise DataError(f"no '{split}' split in {base}: tried {tried}")


def load_split(root: str | os.PathLike[str], split: str, **kwargs: Any) -> CocoDetection:
    """``CocoDetection`` for ``split`` of the dataset folder ``root`` (see :func:`find_split`)."""
    images, ann = find_split(root, split)
    return CocoDetection(images, ann, **kwargs)
