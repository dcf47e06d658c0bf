"""torchvision detectors: build from a spec, read a spec off a model, save and load detector files."""

from .build import build_detector
from .files import load_detector, nonfinite_tensor, read_detector_file, save_detector
from .inspect import describe, spec_of
from .onnx import detector_onnx
from .thaw import thaw

__all__ = [
    "nonfinite_tensor",
    "build_detector",
    "thaw",
    "describe",
    "spec_of",
    "save_detector",
    "load_detector",
    "read_detector_file",
    "detector_onnx",
]
