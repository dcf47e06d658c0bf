"""jdnas_sdk: make object detectors faster on a target without losing accuracy (Joint-DetNAS)."""

from __future__ import annotations

__version__ = "0.1.0"

from .arch import BACKBONES, FAMILIES, Arch, DetectorSpec, Stage, standard_arch  # noqa: E402
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
from .detectors import build_detector, describe, load_detector, save_detector, spec_of  # noqa: E402
from .cost import Cost, detector_cost  # noqa: E402
from .morph import available_actions, morph, sample_arch  # noqa: E402
from .space import SearchSpace  # noqa: E402
from .latency import estimate_latency  # noqa: E402
from .export import export  # noqa: E402  (the function; the subpackage stays importable as jdnas_sdk.export.*)

#: ``build(spec, arch)``: the detector of a spec with an arch backbone (see :func:`build_detector`).
build = build_detector

__all__ = [
    "__version__",
    "BACKBONES",
    "FAMILIES",
    "DetectorSpec",
    "Arch",
    "Stage",
    "standard_arch",
    "build",
    "build_detector",
    "describe",
    "spec_of",
    "morph",
    "available_actions",
    "sample_arch",
    "SearchSpace",
    "estimate_latency",
    "export",
    "Cost",
    "detector_cost",
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
