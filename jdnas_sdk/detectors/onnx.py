"""A whole torchvision detector as ONNX: pre-processing, backbone, heads and NMS in one graph.

torchvision's NMS and RoI pooling break the dynamo exporter; the TorchScript-based exporter
(``dynamo=False``) traces them into ONNX ``NonMaxSuppression`` and ``RoiAlign``. The graph takes
one ``3 x H x W`` float image in [0, 1] and returns the model's eval outputs under their own
names (``boxes``, ``labels``, ``scores``, and ``masks`` / ``keypoints`` for those families).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path
from ..errors import ExportError

__all__ = ["detector_onnx", "ONNX_OPSET", "output_names"]

ONNX_OPSET = 17


def output_names(model: nn.Module, image: torch.Tensor) -> list[str]:
    """The keys of the model's eval output, in the order the exporter flattens them (R-CNNs give
    boxes, labels, scores; RetinaNet and FCOS boxes, scores, labels)."""
    with torch.no_grad():
        return list(model([image])[0].keys())


def detector_onnx(
    model: nn.Module, image_size: tuple[int, int], path: str | os.PathLike[str] | None = None, *, dynamic: bool = False
) -> bytes:
    """Export ``model`` (eval mode is set on a temporary basis) for ``image_size`` = (H, W).

    Returns the ONNX bytes and writes them to ``path`` when given. ``dynamic`` makes height and
    width symbolic (the graph then serves any size; sizes other than the traced one are not
    checked here).
    """
    was_training = model.training
    model.eval()
    image = torch.rand(3, *image_size, generator=torch.Generator().manual_seed(0))
    names = output_names(model, image)
    axes = {"image": {1: "height", 2: "width"}} if dynamic else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                ([image],),
                buffer,
                input_names=["image"],
                output_names=names,
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
                dynamo=False,
                dynamic_axes=axes,
            )
    except Exception as exc:  # the exporter raises many types; name the model and the cause
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
    return data
