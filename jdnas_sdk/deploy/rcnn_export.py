"""A Faster R-CNN exported for TensorRT: its two dense graphs as ONNX (checked in ONNX Runtime
against PyTorch), and their engines where TensorRT runs.

TensorRT's parser rejects the whole R-CNN graph (the ``If`` of RoI pooling, NVIDIA/TensorRT issue
3034); :mod:`jdnas_sdk.detectors.rcnn_split` explains the split chosen instead of graph surgery.
A deployment runs the engines for backbone/FPN/RPN head and box head and torchvision's own
anchors, proposal selection, RoI alignment and NMS between them (``SplitRcnn``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from .._io import atomic_path
from ..detectors.rcnn_split import BOX_FEATURES, SplitRcnn, split_onnx
from ..errors import ExportError
from ..latency.probe import full_load, probe_image

__all__ = ["RcnnSplitExport", "export_rcnn_split", "split_paths", "build_rcnn_engines"]


@dataclass(frozen=True)
class RcnnSplitExport:
    """The files written and how the split compares with PyTorch on a probe image."""

    dense_path: Path
    box_head_path: Path
    dense_input: tuple[int, ...]
    proposals: int
    max_abs_diff: dict[str, float]
    detections: tuple[int, int]


def split_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``model.onnx`` -> (``model.dense.onnx``, ``model.box_head.onnx``); the same for engines."""
    path = Path(path)
    return path.with_name(f"{path.stem}.dense{path.suffix}"), path.with_name(f"{path.stem}.box_head{path.suffix}")


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def _parity(
    model: nn.Module, dense: bytes, head: bytes, image: torch.Tensor
) -> tuple[dict[str, float], tuple[int, int]]:
    options = ["CPUExecutionProvider"]
    dense_session = ort.InferenceSession(dense, providers=options)
    head_session = ort.InferenceSession(head, providers=options)
    split = SplitRcnn(
        model,
        dense=lambda x: [torch.from_numpy(a) for a in dense_session.run(None, {"images": x.numpy()})],
        box_head=lambda x: [torch.from_numpy(a) for a in head_session.run(None, {BOX_FEATURES: x.numpy()})],
    )
    got = split(image)
    with torch.no_grad():
        want = model([image])[0]
    counts = (int(got["boxes"].shape[0]), int(want["boxes"].shape[0]))
    if counts[0] != counts[1] or not counts[0]:
        return {"boxes": float("inf") if counts[0] != counts[1] else 0.0, "scores": 0.0}, counts
    return {
        "boxes": float((got["boxes"] - want["boxes"]).abs().max()),
        "scores": float((got["scores"] - want["scores"]).abs().max()),
        "labels": float((got["labels"] != want["labels"]).float().mean()),
    }, counts


def export_rcnn_split(
    model: nn.Module, onnx_path: str | os.PathLike[str], *, input_size: tuple[int, int], check: bool = True
) -> RcnnSplitExport:
    """Write the dense graphs beside ``onnx_path`` (see :func:`split_paths`), checked by
    ``onnx.checker`` and, with ``check``, against PyTorch through ONNX Runtime."""
    model = model.eval()
    dense, head, dense_input, proposals = split_onnx(model, input_size)
    dense_path, head_path = split_paths(onnx_path)
    for data in (dense, head):
        try:
            onnx.checker.check_model(onnx.load_from_string(data))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"a split R-CNN graph fails onnx.checker: {exc}") from exc
    _write(dense_path, dense)
    _write(head_path, head)
    diffs, counts = _parity(model, dense, head, probe_image(*input_size)) if check else ({}, (0, 0))
    if check and not max(counts):  # nothing kept at its own thresholds: the same graphs, post-processed at full load
        diffs, counts = _parity(full_load(model), dense, head, probe_image(*input_size))
        diffs["full_load"] = 1.0
    if check and not np.isfinite(diffs.get("boxes", 0.0)):
        raise ExportError(f"the split R-CNN returned {counts[0]} detections where PyTorch returned {counts[1]}")
    return RcnnSplitExport(dense_path, head_path, dense_input, proposals, diffs, counts)


def build_rcnn_engines(split: RcnnSplitExport, engine: str | os.PathLike[str], *, precision: str) -> tuple[Path, Path]:
    """TensorRT engines of both split graphs (needs TensorRT and a GPU): ``engine``'s split paths."""
    from ..latency.backends.trt_engine import EngineBuilder

    engines = EngineBuilder(precision=precision)
    dense_engine, head_engine = split_paths(engine)
    rows = split.proposals
    head_input = onnx.load(str(split.box_head_path)).graph.input[0].type.tensor_type.shape.dim
    shape = (rows, *(int(d.dim_value) for d in head_input[1:]))
    _write(dense_engine, engines.build(split.dense_path.read_bytes()))
    _write(
        head_engine,
        engines.build(split.box_head_path.read_bytes(), shapes={BOX_FEATURES: ((1, *shape[1:]), shape, shape)}),
    )
    return dense_engine, head_engine
