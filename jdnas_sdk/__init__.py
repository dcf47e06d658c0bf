"""jdnas_sdk: make object detectors faster on a target without losing accuracy (Joint-DetNAS)."""

from __future__ import annotations

__version__ = "0.1.0"

from .arch import BACKBONES, FAMILIES, DetectorSpec  # noqa: E402
from .errors import (  # noqa: E402
    ArchError,
    DataError,
    DetectorFileError,
    ExportError,
    JdnasError,
    LatencyTableError,
    NonFiniteLossError,
    SearchError,
    TrainingError,
    UnsupportedModelError,
)
from .detectors import build_detector, load_detector, save_detector, spec_of  # noqa: E402

__all__ = [
    "__version__",
    "BACKBONES",
    "FAMILIES",
    "DetectorSpec",
    "build_detector",
    "spec_of",
    "save_detector",
    "load_detector",
    "JdnasError",
    "DataError",
    "DetectorFileError",
    "UnsupportedModelError",
    "TrainingError",
    "NonFiniteLossError",
    "ArchError",
    "LatencyTableError",
    "SearchError",
    "ExportError",
]
