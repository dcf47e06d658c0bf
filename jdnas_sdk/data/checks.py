"""Checks on what a dataset's files say, before anything is trained on them.

Image files: a decompression bomb is refused (PIL's limit), 16-bit and 32-bit greyscale are
scaled to [0, 1] instead of clipped to white, a JPEG's EXIF orientation is applied (the image as
shown, as labelling tools and most detection loaders read it). Segmentations: polygons and RLE masks are checked
against their image before pycocotools sees them (it decodes invalid RLE into garbage or
crashes). Paths: a name read from a file resolves inside its folder or is refused.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from ..families import get_family

__all__ = [
    "contained_path",
    "read_rgb",
    "check_images",
    "check_size",
    "check_segmentation",
    "unread_targets",
    "INT64_MAX",
    "MAX_SIDE",
]

INT64_MAX = 2**63 - 1
#: The largest image side a dataset may declare (larger is corrupt or hostile).
MAX_SIDE = 65_535


def contained_path(root: str | os.PathLike[str], name: Any, *, where: str, follow_links: bool = True) -> Path:
    """``root / name`` if it resolves inside ``root`` (symbolic links followed); otherwise a
    :class:`DataError` naming ``where``: a file the user did not write never reads outside its folder.
    ``follow_links=False``: the file itself may be a link out (an images folder of links into a shared
    pool, DVC's and git-annex's caches), the folders on its way may not (``..`` or absolute names neither)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise DataError(f"{where}: a file name must be a non-empty string without NUL, got {name!r}")
    base = Path(root).resolve()
    named = Path(os.path.normpath(base / name))
    path = (base / name).resolve() if follow_links else named.parent.resolve() / named.name
    if Path(name).is_absolute() or not path.is_relative_to(base):
        raise DataError(f"{where}: file name {name!r} points outside {root}; names must stay inside that folder")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 float32 in [0, 1]; every failure is a :class:`DataError` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # as shown, and as labelling tools draw on it
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"image {path} is too large to decode safely ({exc}); it is corrupt or a decompression bomb"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def check_size(path: Path, array: np.ndarray, height: int, width: int, *, where: str) -> None:
    """Refuse an image whose decoded size is not the ``width`` x ``height`` its JSON (``where``) says;
    where the file turns itself by its EXIF orientation, the message says so (the JSON's size may be
    the stored one, and its boxes drawn on the stored pixels)."""
    if array.shape[:2] == (height, width):
        return
    fix = "fix the JSON's width/height"
    try:
        with Image.open(path) as img:
            turned, stored = img.getexif().get(0x0112, 1), img.size  # EXIF Orientation: 5-8 swap the sides
    except (OSError, ValueError, SyntaxError):
        turned, stored = 1, None
    if turned in (5, 6, 7, 8) and stored == (width, height):  # the JSON has the stored size
        fix = (
            f"the file's EXIF orientation ({turned}) turns it to that size, as it is shown and as labelling tools "
            "draw boxes on it; if the JSON's size and boxes are of the stored pixels, remove the file's "
            "orientation tag (e.g. `exiftool -Orientation= FILE`)"
        )
    raise DataError(f"image {path} is {array.shape[1]}x{array.shape[0]} but {where} says {width}x{height}; {fix}")


def check_images(data: Any, *, name: str = "dataset", progress: bool = False) -> None:
    """Decode every image of ``data`` (a :class:`~jdnas_sdk.data.CocoDetection`) once, its size
    checked against the annotations, so that a damaged file stops a run before any training rather
    than hours into it (images are otherwise read only when a batch needs them). A
    :class:`DataError` gives how many cannot be used and names the first three."""
    from tqdm.auto import tqdm

    bad: list[str] = []
    for index in tqdm(range(len(data)), desc=f"check {name} images", unit="img", disable=not progress, leave=False):
        try:
            data.load_image(index)
        except DataError as exc:
            bad.append(str(exc))
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(
            f"{len(bad)} of the {len(data)} images of {name} cannot be used: {'; '.join(bad[:3])}{more}; replace "
            "those files, or remove them and their annotations"
        )


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(img, dtype=np.float64) / 65535.0  # 16-bit greyscale: scale, never clip to white
    elif img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        grey = np.nan_to_num(grey, nan=0.0, posinf=1.0, neginf=0.0)
    else:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
    return np.repeat(grey[:, :, None], 3, axis=2)


def check_segmentation(seg: Any, height: int, width: int, *, where: str) -> None:
    """Refuse a segmentation pycocotools would decode into garbage: polygons are lists of at least
    three finite (x, y) points; an RLE has this image's ``size`` and counts that cover it exactly."""
    if seg is None:
        raise DataError(f"{where} has no 'segmentation'; mask training needs one per object (or use a box-only family)")
    if isinstance(seg, list):
        if not seg:
            raise DataError(f"{where}: 'segmentation' polygon list is empty")
        for polygon in seg:
            ok = (
                isinstance(polygon, list)
                and len(polygon) >= 6
                and len(polygon) % 2 == 0
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in polygon)
            )
            if not ok:
                raise DataError(f"{where}: a 'segmentation' polygon must be a list of >= 3 finite x, y pairs")
        return
    if not isinstance(seg, dict) or set(seg) != {"size", "counts"}:
        raise DataError(
            f"{where}: 'segmentation' must be polygons or an RLE {{'size', 'counts'}}, got {type(seg).__name__}"
        )
    if seg["size"] != [height, width]:
        raise DataError(f"{where}: RLE 'size' {seg['size']!r} is not the image's [height, width] [{height}, {width}]")
    counts = seg["counts"]
    if isinstance(counts, str):
        counts = _rle_counts(counts, where)
    elif not (isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)):
        raise DataError(f"{where}: RLE 'counts' must be a string or a list of integers")
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise DataError(
            f"{where}: invalid RLE: its counts cover {sum(counts)} pixels, the image has "
            f"{height * width} (or a count is negative)"
        )


def _rle_counts(text: str, where: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools' rleFrString) in Python, checking it."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text) or not 48 <= ord(text[pos]) < 48 + 64 or shift > 60:
                raise DataError(f"{where}: invalid RLE: 'counts' is not a COCO compressed RLE string")
            char = ord(text[pos]) - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            pos += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def unread_targets(family: str) -> list[str]:
    """The targets a detector of ``family`` trains on that the SDK's COCO loader does not read (it
    reads boxes and masks): what makes ``jdnas train`` and ``compress`` refuse it before any work."""
    return [name for name in get_family(family).target_fields if name != "masks"]
