"""Deployable files: the whole detector as ONNX (checked against PyTorch) and as a TensorRT engine."""

from .onnx_export import ExportResult, export, onnx_parity
from .rcnn_export import RcnnSplitExport, export_rcnn_split

__all__ = ["ExportResult", "export", "onnx_parity", "RcnnSplitExport", "export_rcnn_split"]
