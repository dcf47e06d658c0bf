"""Deployable files: the whole detector as ONNX (checked against PyTorch) and as a TensorRT engine."""

from .onnx_export import ExportResult, export, onnx_parity

__all__ = ["ExportResult", "export", "onnx_parity"]
