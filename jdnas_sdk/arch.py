"""Typed descriptions of a detector: :class:`DetectorSpec` (everything but the backbone's shape).

``DetectorSpec`` is what a rebuild needs besides the weights: family, backbone, classes, FPN,
head and input-size settings. It is a frozen dataclass of plain values so that it can be stored
in a detector file as JSON-like data and loaded without executing any code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import ArchError
from .families import REGISTRY, get_family

__all__ = ["FAMILIES", "BACKBONES", "BLOCK_TYPES", "MAX_INPUT_SIDE", "DetectorSpec", "Stage", "Arch", "standard_arch"]

#: Detector families the SDK builds, keyed by name, with the torchvision class each produces
#: (each family's home is its module under :mod:`jdnas_sdk.families`).
FAMILIES: dict[str, str] = {name: f.model_class.__name__ for name, f in REGISTRY.items()}

#: (block, stage depths, groups, width per group) of torchvision's ResNets, for :func:`standard_arch`.
_TORCHVISION_RESNETS: dict[str, tuple[str, tuple[int, ...], int, int]] = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 1, 128),
}


#: torchvision ResNet-family backbones the SDK builds (never with downloaded weights).
BACKBONES: tuple[str, ...] = tuple(_TORCHVISION_RESNETS)

#: Defaults of the head settings only some families read (see ``Family.head_settings``).
_HEAD_DEFAULTS: dict[str, int] = {
    "representation_size": 1024,
    "num_keypoints": 17,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "mask_head_width": 256,
    "head_convs": 4,
    "head_width": 0,
    "topk_candidates": 1000,
}


def _tuple_of_ints(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ArchError(f"{name} must be a sequence of integers, got {value!r}")
    items = tuple(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ArchError(f"{name} must hold integers only, got {value!r}")
    return items


#: The largest input side a detector spec may ask for: far beyond any detector in use (COCO's 1333),
#: and what keeps a damaged file's size from becoming a terabyte allocation.
MAX_INPUT_SIDE = 16384


@dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to rebuild a detector besides the backbone's shape and the weights.

    ``num_classes`` counts the background, as torchvision does: labels run 1..num_classes-1.
    ``category_ids`` maps those labels back to the dataset's COCO category ids (empty means the
    identity ``label -> label``). ``anchor_sizes`` gives one base anchor size per pyramid level
    (``None`` keeps torchvision's 32..512); small inputs want smaller anchors.

    Head settings (each read only by the families that list it in ``head_settings``; others keep
    the default): R-CNN ``rpn_pre_nms_top_n_test`` / ``rpn_post_nms_top_n_test`` (proposals kept
    at test time, per level before NMS / in all after it) and ``representation_size`` (the
    ``TwoMLPHead`` width), Mask R-CNN ``mask_head_width`` (its four mask convs), RetinaNet and
    FCOS ``head_convs`` (convs per head tower, torchvision builds 4), ``head_width`` (their
    width; 0 means ``fpn_channels``) and ``topk_candidates`` (boxes kept per level before NMS at
    test time, torchvision's 1000: a weight-free knob like R-CNN proposals).
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
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    mask_head_width: int = 256
    head_convs: int = 4
    head_width: int = 0
    topk_candidates: int = 1000
    score_thresh: float | None = None
    nms_thresh: float | None = None
    detections_per_img: int | None = None
    category_ids: tuple[int, ...] = ()
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        family = get_family(self.family)
        if self.backbone not in BACKBONES:
            raise ArchError(f"unknown backbone {self.backbone!r}; supported: {', '.join(BACKBONES)}")
        for name in (
            "num_classes",
            "min_size",
            "max_size",
            "fpn_channels",
            "trainable_layers",
            "representation_size",
            "num_keypoints",
            "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_test",
            "mask_head_width",
            "head_convs",
            "head_width",
            "topk_candidates",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ArchError(f"{name} must be an integer, got {value!r}")
        if self.num_classes < 2:
            raise ArchError(f"num_classes must be >= 2 (background + at least one class), got {self.num_classes}")
        if not 16 <= self.min_size <= self.max_size <= MAX_INPUT_SIDE:
            raise ArchError(
                f"need 16 <= min_size <= max_size <= {MAX_INPUT_SIDE}, got min_size={self.min_size}, "
                f"max_size={self.max_size}"
            )
        if self.fpn_channels < 1:
            raise ArchError(f"fpn_channels must be positive, got {self.fpn_channels}")
        for name, most in (*((n, MAX_WIDTH) for n in _HEAD_WIDTHS), ("head_convs", MAX_BLOCKS)):
            if getattr(self, name) > most:  # a typo, not a detector: here, not as torch running out of memory
                raise ArchError(f"{name}={getattr(self, name)} is above the most a detector may have ({most})")
        if not 0 <= self.trainable_layers <= 5:
            raise ArchError(f"trainable_layers must be in 0..5, got {self.trainable_layers}")
        returned = _tuple_of_ints("returned_layers", self.returned_layers) or family.returned_layers
        if list(returned) != sorted(set(returned)) or not set(returned) <= {1, 2, 3, 4} or 4 not in returned:
            raise ArchError(f"returned_layers must be increasing values from 1..4 ending with 4, got {returned!r}")
        object.__setattr__(self, "returned_layers", returned)
        if self.anchor_sizes is not None:
            sizes = _tuple_of_ints("anchor_sizes", self.anchor_sizes)
            if len(sizes) != self.num_levels or any(s < 1 for s in sizes):
                raise ArchError(
                    f"anchor_sizes needs one positive size per pyramid level ({self.num_levels} for "
                    f"{self.family} with returned_layers={returned}), got {sizes!r}"
                )
            object.__setattr__(self, "anchor_sizes", sizes)
        why = family.check(self)
        if why:
            raise ArchError(why)
        defaults = family.postprocess
        for name, default in zip(("score_thresh", "nms_thresh", "detections_per_img"), defaults):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        for name, default in _HEAD_DEFAULTS.items():  # settings of heads this family lacks: defaults
            if name not in family.head_settings:
                object.__setattr__(self, name, default)
        if "head_width" in family.head_settings and self.head_width == 0:
            object.__setattr__(self, "head_width", self.fpn_channels)
        small = [n for n in _HEAD_DEFAULTS if getattr(self, n) < 1 and n in family.head_settings]
        if small:
            raise ArchError(f"head settings {small} must be positive integers for {self.family}")
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
        if not isinstance(self.class_names, (tuple, list)):
            raise ArchError(f"class_names must be a list of strings, got {self.class_names!r}")
        names = tuple(self.class_names)
        if names and (len(names) != self.num_classes - 1 or not all(isinstance(n, str) for n in names)):
            raise ArchError(f"class_names needs num_classes-1 = {self.num_classes - 1} strings, got {names!r}")
        object.__setattr__(self, "class_names", names)

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels the detector's heads see (FPN outputs plus extra levels)."""
        return len(self.returned_layers) + get_family(self.family).extra_levels

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


# -- backbone architecture ------------------------------------------------------------------------
BLOCK_TYPES: tuple[str, ...] = ("basic", "bottleneck")
MAX_WIDTH = 8192
MAX_BLOCKS = 64
_HEAD_WIDTHS = ("fpn_channels", "representation_size", "mask_head_width", "head_width")


@dataclass(frozen=True)
class Stage:
    """One ResNet stage: its residual-stream ``width`` and the mid width of each of its blocks.

    The first block of stages 2-4 halves the resolution (stride 2) and, with a 1x1 projection,
    changes the stream's width; every other block keeps both.
    """

    width: int
    mids: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.mids)


@dataclass(frozen=True)
class Arch:
    """A ResNet backbone's shape: block type, ResNeXt groups, stem width and four stages.

    ``str(arch)`` is a compact code that :meth:`parse` reads back, for example torchvision's
    ResNet-50 is ``bottleneck:64|256:64x3|512:128x4|1024:256x6|2048:512x3`` (stem width, then
    per stage ``width:mid x count``, runs of equal mids joined by commas) and ResNeXt-50 32x4d is
    ``bottleneck/g32:64|256:128x3|512:256x4|1024:512x6|2048:1024x3``.
    """

    block: str
    stem: int
    stages: tuple[Stage, ...]
    groups: int = 1

    def __post_init__(self) -> None:
        if self.block not in BLOCK_TYPES:
            raise ArchError(f"block type must be one of {BLOCK_TYPES}, got {self.block!r}")
        if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1:
            raise ArchError(f"groups must be a positive integer, got {self.groups!r}")
        if self.groups > 1 and self.block != "bottleneck":
            raise ArchError(
                f"groups > 1 (ResNeXt) needs bottleneck blocks, got {self.block!r} with groups={self.groups}"
            )
        _check_width("stem width", self.stem)
        stages = tuple(self.stages)
        if len(stages) != 4 or not all(isinstance(s, Stage) for s in stages):
            raise ArchError(f"an arch has exactly 4 stages (the FPN reads each), got {len(stages)}")
        for index, stage in enumerate(stages, start=1):
            _check_width(f"stage {index} width", stage.width)
            if not 1 <= len(stage.mids) <= MAX_BLOCKS:
                raise ArchError(f"stage {index} needs 1..{MAX_BLOCKS} blocks, got {len(stage.mids)}")
            for j, mid in enumerate(stage.mids):
                _check_width(f"stage {index} block {j} mid width", mid)
                if mid % self.groups:
                    raise ArchError(
                        f"stage {index} block {j} mid width {mid} is not a multiple of groups={self.groups}"
                    )
        object.__setattr__(self, "stages", stages)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        """Residual-stream width of each stage (what the FPN's lateral convs read)."""
        return tuple(s.width for s in self.stages)

    def __str__(self) -> str:
        head = self.block + (f"/g{self.groups}" if self.groups > 1 else "") + f":{self.stem}"
        parts = [head]
        for stage in self.stages:
            runs: list[list[int]] = []
            for mid in stage.mids:
                if runs and runs[-1][0] == mid:
                    runs[-1][1] += 1
                else:
                    runs.append([mid, 1])
            parts.append(f"{stage.width}:" + ",".join(f"{m}x{n}" for m, n in runs))
        return "|".join(parts)

    @classmethod
    def parse(cls, code: str) -> Arch:
        """Read a code written by ``str(arch)``; anything else raises :class:`ArchError`."""
        if not isinstance(code, str):
            raise ArchError(f"an arch code is a string, got {type(code).__name__}")
        parts = code.strip().split("|")
        if len(parts) != 5:
            raise ArchError(
                f"arch code {code!r} needs 5 '|'-separated parts (block:stem, then 4 stages), got {len(parts)}; "
                "example: bottleneck:64|256:64x3|512:128x4|1024:256x6|2048:512x3"
            )
        head, *stage_codes = parts
        block_part, sep, stem = head.partition(":")
        if not sep:
            raise ArchError(f"arch code {code!r}: first part must be BLOCK[/gGROUPS]:STEM, got {head!r}")
        block, _, group_text = block_part.partition("/g")
        groups = _int(group_text, "groups", code) if group_text else 1
        stages = []
        for index, text in enumerate(stage_codes, start=1):
            width, sep, runs = text.partition(":")
            if not sep or not runs:
                raise ArchError(
                    f"arch code {code!r}: stage {index} must be WIDTH:MIDxCOUNT[,MIDxCOUNT...], got {text!r}"
                )
            mids: list[int] = []
            for run in runs.split(","):
                mid, sep, count = run.partition("x")
                if not sep:
                    raise ArchError(f"arch code {code!r}: stage {index} run {run!r} must be MIDxCOUNT")
                n = _int(count, "block count", code)
                if not 1 <= n <= MAX_BLOCKS or len(mids) + n > MAX_BLOCKS:
                    raise ArchError(f"arch code {code!r}: stage {index} needs 1..{MAX_BLOCKS} blocks")
                mids.extend([_int(mid, "mid width", code)] * n)
            stages.append(Stage(width=_int(width, "stage width", code), mids=tuple(mids)))
        return cls(block=block, stem=_int(stem, "stem width", code), stages=tuple(stages), groups=groups)


def _int(text: str, what: str, code: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise ArchError(f"arch code {code!r}: {what} must be a positive integer, got {text!r}")
    return int(text)


def _check_width(what: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WIDTH:
        raise ArchError(f"{what} must be an integer in 1..{MAX_WIDTH}, got {value!r}")


def standard_arch(backbone: str) -> Arch:
    """The :class:`Arch` of a torchvision ResNet by name (``resnet50``, ``resnext101_32x8d``, ...)."""
    if backbone not in _TORCHVISION_RESNETS:
        raise ArchError(f"unknown backbone {backbone!r}; supported: {', '.join(BACKBONES)}")
    block, depths, groups, width_per_group = _TORCHVISION_RESNETS[backbone]
    expansion = 1 if block == "basic" else 4
    stages = []
    for index, depth in enumerate(depths):
        planes = 64 * 2**index
        mid = planes if block == "basic" else planes * width_per_group // 64 * groups
        stages.append(Stage(width=planes * expansion, mids=(mid,) * depth))
    return Arch(block=block, stem=64, stages=tuple(stages), groups=groups)
