"""A whole torchvision detector as ONNX: pre-processing, backbone, heads and NMS in one graph.

torchvision's NMS and RoI pooling break the dynamo exporter; the TorchScript-based exporter
(``dynamo=False``) traces them into ONNX ``NonMaxSuppression`` and ``RoiAlign``. The graph takes
one ``3 x H x W`` float image in [0, 1] and returns ``boxes``, ``scores``, ``labels`` (and
``masks`` / ``keypoints`` for those families), as the model's eval forward does.
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


def output_names(model: nn.Module) -> list[str]:
    names = ["boxes", "scores", "labels"]
    if getattr(model, "roi_heads", None) is not None:
        if getattr(model.roi_heads, "mask_head", None) is not None:
            names.append("masks")
        if getattr(model.roi_heads, "keypoint_head", None) is not None:
            names += ["keypoints", "keypoints_scores"]
    return names


def detector_onnx(model: nn.Module, image_size: tuple[int, int], path: str | os.PathLike[str] | None = None,
                  *, dynamic: bool = False) -> bytes:
    """Export ``model`` (eval mode is set on a temporary basis) for ``image_size`` = (H, W).

    Returns the ONNX bytes and writes them to ``path`` when given. ``dynamic`` makes height and
    width symbolic (the graph then serves any size; sizes other than the traced one are not
    checked here).
    """
    was_training = model.training
    model.eval()
    image = torch.rand(3, *image_size, generator=torch.Generator().manual_seed(0))
    names = output_names(model)
    axes = {"image": {1: "height", 2: "width"}} if dynamic else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, ([image],), buffer, input_names=["image"], output_names=names,
                              opset_version=ONNX_OPSET, do_constant_folding=True, dynamo=False,
                              dynamic_axes=axes)
    except Exception as exc:  # the exporter raises many types; name the model and the cause
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
    return data
