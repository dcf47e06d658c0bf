"""Typed descriptions of a detector: :class:`DetectorSpec` (everything but the backbone's shape).

``DetectorSpec`` is what a rebuild needs besides the weights: family, backbone, classes, FPN,
head and input-size settings. It is a frozen dataclass of plain values so that it can be stored
in a detector file as JSON-like data and loaded without executing any code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import ArchError

__all__ = ["FAMILIES", "BACKBONES", "DetectorSpec"]

#: Detector families the SDK builds, keyed by name, with the torchvision class each produces.
FAMILIES: dict[str, str] = {
    "fasterrcnn": "FasterRCNN",
    "maskrcnn": "MaskRCNN",
    "keypointrcnn": "KeypointRCNN",
    "retinanet": "RetinaNet",
    "fcos": "FCOS",
}

#: torchvision ResNet-family backbones the SDK builds (never with downloaded weights).
BACKBONES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)

#: FPN levels each family takes from the backbone by default, as torchvision builds them.
DEFAULT_RETURNED_LAYERS: dict[str, tuple[int, ...]] = {
    "fasterrcnn": (1, 2, 3, 4),
    "maskrcnn": (1, 2, 3, 4),
    "keypointrcnn": (1, 2, 3, 4),
    "retinanet": (2, 3, 4),
    "fcos": (2, 3, 4),
}


#: torchvision's post-processing defaults per family: (score_thresh, nms_thresh, detections_per_img).
DEFAULT_POSTPROCESS: dict[str, tuple[float, float, int]] = {
    "fasterrcnn": (0.05, 0.5, 100),
    "maskrcnn": (0.05, 0.5, 100),
    "keypointrcnn": (0.05, 0.5, 100),
    "retinanet": (0.05, 0.5, 300),
    "fcos": (0.2, 0.6, 100),
}


def _tuple_of_ints(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ArchError(f"{name} must be a sequence of integers, got {value!r}")
    items = tuple(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ArchError(f"{name} must hold integers only, got {value!r}")
    return items


@dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to rebuild a detector besides the backbone's shape and the weights.

    ``num_classes`` counts the background, as torchvision does: labels run 1..num_classes-1.
    ``category_ids`` maps those labels back to the dataset's COCO category ids (empty means the
    identity ``label -> label``). ``anchor_sizes`` gives one base anchor size per pyramid level
    (``None`` keeps torchvision's 32..512); small inputs want smaller anchors.
    """

    family: str
    backbone: str
    num_classes: int
    min_size: int = 800
    max_size: int = 1333
    fpn_channels: int = 256
    returned_layers: tuple[int, ...] = ()
    trainable_layers: int = 5
    frozen_bn: bool = False
    anchor_sizes: tuple[int, ...] | None = None
    representation_size: int = 1024
    num_keypoints: int = 17
    score_thresh: float | None = None
    nms_thresh: float | None = None
    detections_per_img: int | None = None
    category_ids: tuple[int, ...] = ()
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ArchError(f"unknown detector family {self.family!r}; supported: {', '.join(FAMILIES)}")
        if self.backbone not in BACKBONES:
            raise ArchError(f"unknown backbone {self.backbone!r}; supported: {', '.join(BACKBONES)}")
        for name in ("num_classes", "min_size", "max_size", "fpn_channels", "trainable_layers",
                     "representation_size", "num_keypoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ArchError(f"{name} must be an integer, got {value!r}")
        if self.num_classes < 2:
            raise ArchError(f"num_classes must be >= 2 (background + at least one class), got {self.num_classes}")
        if not 16 <= self.min_size <= self.max_size:
            raise ArchError(f"need 16 <= min_size <= max_size, got min_size={self.min_size}, max_size={self.max_size}")
        if self.fpn_channels < 1:
            raise ArchError(f"fpn_channels must be positive, got {self.fpn_channels}")
        if self.family == "fcos" and self.fpn_channels % 32:
            raise ArchError(f"fcos heads use GroupNorm(32, C): fpn_channels must be a multiple of 32, got {self.fpn_channels}")
        if not 0 <= self.trainable_layers <= 5:
            raise ArchError(f"trainable_layers must be in 0..5, got {self.trainable_layers}")
        returned = _tuple_of_ints("returned_layers", self.returned_layers) or DEFAULT_RETURNED_LAYERS[self.family]
        if list(returned) != sorted(set(returned)) or not set(returned) <= {1, 2, 3, 4}:
            raise ArchError(f"returned_layers must be increasing values from 1..4, got {returned!r}")
        object.__setattr__(self, "returned_layers", returned)
        if self.anchor_sizes is not None:
            sizes = _tuple_of_ints("anchor_sizes", self.anchor_sizes)
            if len(sizes) != self.num_levels or any(s < 1 for s in sizes):
                raise ArchError(
                    f"anchor_sizes needs one positive size per pyramid level ({self.num_levels} for "
                    f"{self.family} with returned_layers={returned}), got {sizes!r}"
                )
            if self.family == "fcos":
                raise ArchError("anchor_sizes does not apply to fcos (its anchors are the level strides); leave it None")
            object.__setattr__(self, "anchor_sizes", sizes)
        defaults = DEFAULT_POSTPROCESS[self.family]
        for name, default in zip(("score_thresh", "nms_thresh", "detections_per_img"), defaults):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.family not in ("fasterrcnn", "maskrcnn", "keypointrcnn"):
            object.__setattr__(self, "representation_size", 1024)
        if self.family != "keypointrcnn":
            object.__setattr__(self, "num_keypoints", 17)
        for name in ("score_thresh", "nms_thresh"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
                raise ArchError(f"{name} must be None or a number in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        if not (isinstance(self.detections_per_img, int) and self.detections_per_img >= 1):
            raise ArchError(f"detections_per_img must be None or a positive integer, got {self.detections_per_img!r}")
        cats = _tuple_of_ints("category_ids", self.category_ids)
        if cats and len(cats) != self.num_classes - 1:
            raise ArchError(f"category_ids needs num_classes-1 = {self.num_classes - 1} entries, got {len(cats)}")
        object.__setattr__(self, "category_ids", cats)
        names = tuple(self.class_names)
        if names and (len(names) != self.num_classes - 1 or not all(isinstance(n, str) for n in names)):
            raise ArchError(f"class_names needs num_classes-1 = {self.num_classes - 1} strings, got {names!r}")
        object.__setattr__(self, "class_names", names)

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels the detector's heads see (FPN outputs plus extra levels)."""
        return len(self.returned_layers) + (1 if self.family in ("fasterrcnn", "maskrcnn", "keypointrcnn") else 2)

    def category_id(self, label: int) -> int:
        """The dataset's COCO category id of contiguous ``label`` (1-based)."""
        if not 1 <= label < self.num_classes:
            raise ArchError(f"label {label} outside 1..{self.num_classes - 1}")
        return self.category_ids[label - 1] if self.category_ids else label

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible values (tuples become lists)."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Any) -> DetectorSpec:
        """Rebuild from :meth:`to_dict` output; unknown or missing fields raise :class:`ArchError`."""
        if not isinstance(data, dict):
            raise ArchError(f"a detector spec must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ArchError(f"unknown detector spec fields {unknown}; known: {sorted(known)}")
        missing = [n for n in ("family", "backbone", "num_classes") if n not in data]
        if missing:
            raise ArchError(f"detector spec lacks required fields {missing}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
