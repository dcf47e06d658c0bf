"""A synthetic COCO-format detection dataset, written to disk, deterministic by seed.

Nothing can be downloaded where the SDK is tested, so tests, benchmarks and the demo use this:
eight shape classes in random colours on noisy, textured backgrounds, several objects per image
at sizes spanning COCO's small/medium/large, overlapping and occluding one another, with
unlabelled distractor strokes. Boxes and masks (RLE) describe the visible part of each object.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from .._io import atomic_dir, atomic_write_json, check_writable
from ..errors import DataError

__all__ = ["SHAPES", "SynthConfig", "make_synthetic_dataset", "synthetic_image"]

log = logging.getLogger(__name__)

#: The classes, in category-id order (ids 1..8).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")


@dataclass(frozen=True)
class SynthConfig:
    """How the images look. ``min_rel``/``max_rel`` bound an object's side relative to the image.

    Sides are drawn log-uniformly within one of three equal log-width bands, picked uniformly, so
    that COCO's small, medium and large areas all occur at the default 256 px.
    """

    size: int = 256
    min_objects: int = 2
    max_objects: int = 7
    min_rel: float = 0.05
    max_rel: float = 0.75
    min_visible: float = 0.4
    noise: float = 0.06
    distractors: int = 3
    min_contrast: float = 0.3
    image_format: str = "jpg"

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 4096:
            raise DataError(f"image size must be in 32..4096 pixels, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise DataError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 0 < self.min_rel <= self.max_rel <= 1:
            raise DataError(f"need 0 < min_rel <= max_rel <= 1, got {self.min_rel}, {self.max_rel}")
        if self.image_format not in ("jpg", "png"):
            raise DataError(f"image_format must be 'jpg' or 'png', got {self.image_format!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour field plus low-frequency blotches and fine noise (H x W x 3 float)."""
    base = rng.uniform(0, 1, 3)
    tilt = rng.uniform(-0.35, 0.35, (2, 3))
    ys, xs = np.mgrid[0:size, 0:size] / size
    field = base + xs[..., None] * tilt[0] + ys[..., None] * tilt[1]
    coarse = rng.uniform(-0.25, 0.25, (8, 8, 3)).astype(np.float32)
    blotch = (
        np.asarray(
            Image.fromarray(((coarse + 0.25) * 510).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC),
            dtype=np.float32,
        )
        / 510.0
        - 0.25
    )
    return np.clip(field + blotch, 0, 1)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray, min_contrast: float) -> np.ndarray:
    """A random colour at least ``min_contrast`` (RGB distance) from ``background``, when one is found."""
    colour = rng.uniform(0, 1, 3)
    for _ in range(20):
        if np.linalg.norm(colour - background) >= min_contrast:
            break
        colour = rng.uniform(0, 1, 3)
    return colour


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, offset: float = 0.0) -> list[tuple[float, float]]:
        return [
            (
                cx + radius * math.cos(angle + offset + 2 * math.pi * k / n),
                cy + radius * math.sin(angle + offset + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if shape == "square":
        return ring(4, r, math.pi / 4)
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]
    if shape == "triangle":
        return ring(3, r)
    if shape == "hexagon":
        return ring(6, r)
    if shape == "star":
        outer, inner = ring(5, r), ring(5, 0.45 * r, math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = r, 0.33 * r
        pts = [
            (b, a),
            (b, b),
            (a, b),
            (a, -b),
            (b, -b),
            (b, -a),
            (-b, -a),
            (-b, -b),
            (-a, -b),
            (-a, b),
            (-b, b),
            (-b, a),
        ]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise AssertionError(shape)


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        draw.ellipse((cx - 0.5 * r, cy - 0.5 * r, cx + 0.5 * r, cy + 0.5 * r), fill=0)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=255)
    return np.asarray(canvas) > 127


def _render(rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image and its objects' visible masks."""
    size = cfg.size
    image = _background(rng, size)
    owner = np.full((size, size), -1, dtype=np.int32)
    placed: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        cls = int(rng.integers(len(SHAPES)))
        lo, hi = math.log(cfg.min_rel), math.log(cfg.max_rel)
        band = int(rng.integers(3))
        side = size * math.exp(rng.uniform(lo + band * (hi - lo) / 3, lo + (band + 1) * (hi - lo) / 3))
        r = side / 2
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        mask = _shape_mask(SHAPES[cls], size, cx, cy, r, rng.uniform(0, 2 * math.pi))
        if mask.sum() < 12:
            continue
        colour = _contrasting_colour(rng, image[mask].mean(axis=0), cfg.min_contrast)
        shade = rng.normal(0, 0.05, (size, size, 1))
        image[mask] = np.clip(colour + shade[mask], 0, 1)
        owner[mask] = len(placed)
        placed.append((cls, mask))
    objects = []
    for index, (cls, mask) in enumerate(placed):
        visible = owner == index
        if visible.sum() >= max(cfg.min_visible * mask.sum(), 12):
            objects.append((cls, visible))
    return image, objects


def _finish(rng: np.random.Generator, image: np.ndarray, cfg: SynthConfig) -> Image.Image:
    pil = Image.fromarray((image * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(cfg.distractors):
        points = [tuple(rng.uniform(0, cfg.size, 2)) for _ in range(int(rng.integers(2, 5)))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    if rng.uniform() < 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    array = np.asarray(pil, dtype=np.float32) / 255.0
    array = array + rng.normal(0, cfg.noise, array.shape)
    return Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8))


def synthetic_image(height: int, width: int, *, seed: int = 0, config: SynthConfig | None = None) -> np.ndarray:
    """One synthetic scene of ``height x width`` pixels as float32 RGB in [0, 1] (H, W, 3).

    For probes that need a realistic image without a dataset on disk (latency measurements).
    """
    cfg = config or SynthConfig()
    side = max(height, width, 32)
    cfg = SynthConfig(**{**cfg.__dict__, "size": side})
    rng = np.random.default_rng(seed)
    image, _ = _render(rng, cfg)
    pil = _finish(rng, image, cfg)
    return (np.asarray(pil, dtype=np.float32) / 255.0)[:height, :width]


def _annotation(ann_id: int, image_id: int, cls: int, mask: np.ndarray) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cls + 1,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": int(mask.sum()),
        "iscrowd": 0,
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
    }


def _write_split(root: Path, split: str, count: int, seed: int, cfg: SynthConfig, progress: bool) -> Path:
    images_dir = root / "images" / split
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    split_key = sum(map(ord, split))
    for index in tqdm(range(count), desc=f"synth {split}", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, split_key, index])
        image, objects = _render(rng, cfg)
        pil = _finish(rng, image, cfg)
        name = f"{index:06d}.{cfg.image_format}"
        pil.save(images_dir / name, quality=92) if cfg.image_format == "jpg" else pil.save(images_dir / name)
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "width": cfg.size, "height": cfg.size})
        for cls, mask in objects:
            annotations.append(_annotation(len(annotations) + 1, image_id, cls, mask))
    data = {
        "info": {"description": f"jdnas_sdk synthetic shapes ({split}, seed {seed})", "version": "1"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)],
    }
    return atomic_write_json(root / "annotations" / f"instances_{split}.json", data, indent=None)


#: The file that marks a folder as a synthetic dataset this generator wrote (and may replace).
MARKER = ".jdnas-synthetic"


def _check_target(root: Path, cfg: SynthConfig, count: int) -> None:
    """Before any image is drawn: ``root`` is new, empty or an earlier synthetic dataset (marked
    by :data:`MARKER`; it is replaced whole): a COCO dataset of the user's own in the same layout is
    never replaced. Its disk is writable with room for the images (checked roughly)."""
    entries = {p.name for p in root.iterdir()} if root.is_dir() else set()
    if root.exists() and (not root.is_dir() or entries - {"images", "annotations", MARKER}):
        raise DataError(
            f"{root} exists and holds other files; pass a new or empty folder (a synthetic dataset "
            "replaces its folder whole)"
        )
    if entries and MARKER not in entries:
        raise DataError(
            f"{root} holds a dataset that `jdnas data synth` did not write (no {MARKER} file), perhaps your "
            "own; pass a new or empty folder, or delete it first if it is a synthetic dataset to replace"
        )
    per_image = cfg.size * cfg.size * 3 * (0.25 if cfg.image_format == "jpg" else 1.0) + 4096
    check_writable(root.parent, need_bytes=int(per_image * count), what="the dataset")


def make_synthetic_dataset(
    out: str | os.PathLike[str],
    *,
    train: int = 200,
    val: int = 50,
    select: int = 0,
    test: int = 0,
    size: int = 256,
    seed: int = 0,
    config: SynthConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write a COCO-format dataset under ``out`` with the splits whose count is not 0; returns ``out``.

    ``select`` and ``test`` are the protocol's choice and report splits
    (:mod:`jdnas_sdk.data.splits`); ``val`` is the single held-out split of folders made before it
    (give ``val=0`` with ``select``/``test``). Each split's images are drawn from its own random
    stream, so the splits are disjoint. Layout: ``images/<split>/*.jpg`` and
    ``annotations/instances_<split>.json``; read it back with :func:`jdnas_sdk.data.load_split`.
    The same arguments always give the same files.
    The dataset is written into a temporary folder renamed to ``out`` at the end (an earlier
    dataset there is replaced whole), so a full disk or a kill never leaves half a dataset.
    """
    counts = {"train": train, "val": val, "select": select, "test": test}
    if any(n < 0 for n in counts.values()) or not sum(counts.values()):
        raise DataError(f"need every split count >= 0 and at least one image, got {counts}")
    cfg = config or SynthConfig(size=size)
    if config is not None and config.size != size and size != 256:
        raise DataError(f"size={size} conflicts with config.size={config.size}; give one of them")
    root = Path(out)
    _check_target(root, cfg, sum(counts.values()))
    with atomic_dir(root) as tmp:  # a full disk or a kill leaves no half dataset behind
        for split, count in counts.items():
            if count:
                _write_split(tmp, split, count, seed, cfg, progress)
        (tmp / MARKER).write_text(f"written by jdnas data synth: {counts}, size {cfg.size}, seed {seed}\n")
    log.info(
        "wrote synthetic dataset to %s (%s, %d px)",
        root,
        ", ".join(f"{n} {k}" for k, n in counts.items() if n),
        cfg.size,
    )
    return root
