"""jdnas_sdk: make object detectors faster on a target without losing accuracy (Joint-DetNAS)."""

from __future__ import annotations

from ._version import __version__
from .arch import BACKBONES, FAMILIES, Arch, DetectorSpec, Stage, standard_arch
from .compress import CompressResult, compress  # the function; module: from jdnas_sdk.compress import ...
from .cost import Cost, detector_cost
from .deploy import export  # the function; the subpackage is jdnas_sdk.deploy (CONTRIBUTING.md)
from .detectors import build_detector, describe, load_detector, save_detector, spec_of
from .errors import (
    ArchError,
    ArgumentError,
    DataError,
    DetectorFileError,
    ExportError,
    JdnasError,
    LatencyTableError,
    LockError,
    NonFiniteLossError,
    SearchError,
    StorageError,
    TrainingError,
    UnsupportedModelError,
)
from .latency import estimate_latency
from .morph import available_actions, morph, sample_arch
from .space import SearchSpace
from .student import Heads, Student

#: ``build(spec, code)``: the detector of a spec with a student (``ARCH@HEADS`` code, :class:`Student`)
#: or a backbone (:class:`Arch` or its code) (see :func:`build_detector`).
build = build_detector

__all__ = [
    "__version__",
    "BACKBONES",
    "FAMILIES",
    "DetectorSpec",
    "Arch",
    "Stage",
    "Heads",
    "Student",
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
    "compress",
    "CompressResult",
    "Cost",
    "detector_cost",
    "save_detector",
    "load_detector",
    "JdnasError",
    "ArgumentError",
    "DataError",
    "DetectorFileError",
    "UnsupportedModelError",
    "TrainingError",
    "NonFiniteLossError",
    "ArchError",
    "LatencyTableError",
    "SearchError",
    "ExportError",
    "StorageError",
    "LockError",
]
