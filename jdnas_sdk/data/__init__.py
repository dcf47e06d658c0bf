"""COCO-format datasets, the synthetic generator, and batching."""

from .coco import Category, CocoDetection, DataStats, find_split, load_split
from .loader import ResumableSampler, collate, hflip
from .splits import PROTOCOL_SPLITS, check_disjoint, check_given_splits, load_any_split, load_protocol_splits, split_val
from .synth import SHAPES, SynthConfig, make_synthetic_dataset, synthetic_image

__all__ = [
    "Category",
    "CocoDetection",
    "DataStats",
    "find_split",
    "load_split",
    "PROTOCOL_SPLITS",
    "check_disjoint",
    "check_given_splits",
    "load_protocol_splits",
    "load_any_split",
    "split_val",
    "collate",
    "ResumableSampler",
    "hflip",
    "SHAPES",
    "SynthConfig",
    "make_synthetic_dataset",
    "synthetic_image",
]
