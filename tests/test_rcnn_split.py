"""The Faster R-CNN split for TensorRT, checked on the CPU: the dense parts exported to ONNX and
run in ONNX Runtime, with anchors, proposals, RoI alignment and NMS in torch, give PyTorch's
detections; the split graphs hold none of the ops TensorRT's parser rejects or limits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from jdnas_sdk.detectors import build_detector, detector_onnx
from jdnas_sdk.detectors.onnx_fp16 import to_fp16
from jdnas_sdk.detectors.rcnn_split import BOX_FEATURES, SplitRcnn, split_onnx, split_rcnn
from jdnas_sdk.errors import UnsupportedModelError
from jdnas_sdk.latency.probe import full_load, probe_image

from .conftest import tiny_spec

SIZE = (96, 96)


@pytest.fixture(scope="module")
def detector() -> torch.nn.Module:
    torch.manual_seed(0)
    return full_load(build_detector(tiny_spec("fasterrcnn")))


@pytest.fixture(scope="module")
def graphs(detector: torch.nn.Module) -> tuple[bytes, bytes, tuple[int, ...], int]:
    return split_onnx(detector, SIZE)


def _ops(graph: onnx.GraphProto) -> set[str]:
    """Op types of ``graph`` and of the subgraphs of its If/Loop nodes."""
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found |= _ops(attr.g)
    return found


def _session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def test_split_in_torch_is_the_detector(detector: torch.nn.Module) -> None:
    image = probe_image(*SIZE)
    with torch.no_grad():
        want = detector([image])[0]
    got = SplitRcnn(detector)(image)
    assert want["boxes"].shape[0] > 0
    for name in ("boxes", "scores", "labels"):
        assert torch.equal(got[name], want[name]), name


def test_split_onnx_in_onnx_runtime_gives_pytorchs_detections(detector: torch.nn.Module, graphs) -> None:
    dense_onnx, head_onnx, dense_shape, top_n = graphs
    assert dense_shape == (1, 3, *SIZE) and top_n == detector.rpn.post_nms_top_n()
    dense, head = _session(dense_onnx), _session(head_onnx)
    # the box head's proposal dimension is dynamic (an optimisation profile's range in TensorRT)
    assert head.get_inputs()[0].name == BOX_FEATURES and isinstance(head.get_inputs()[0].shape[0], str)
    split = SplitRcnn(
        detector,
        dense=lambda x: [torch.from_numpy(a) for a in dense.run(None, {"images": x.numpy()})],
        box_head=lambda x: [torch.from_numpy(a) for a in head.run(None, {BOX_FEATURES: x.numpy()})],
    )
    image = probe_image(*SIZE)
    with torch.no_grad():
        want = detector([image])[0]
    got = split(image)
    assert got["boxes"].shape == want["boxes"].shape and torch.equal(got["labels"], want["labels"])
    assert float((got["boxes"] - want["boxes"]).abs().max()) < 1e-3
    assert float((got["scores"] - want["scores"]).abs().max()) < 1e-4


def test_split_graphs_avoid_what_tensorrt_rejects(detector: torch.nn.Module, graphs) -> None:
    whole = _ops(onnx.load_from_string(detector_onnx(detector, SIZE)).graph)
    assert {"If", "RoiAlign", "NonMaxSuppression"} <= whole  # issue 3034's If, a plugin, and the 5,000-box NMS
    for data in graphs[:2]:
        ops = _ops(onnx.load_from_string(data).graph)
        assert not ops & {"If", "Loop", "RoiAlign", "NonMaxSuppression", "NonZero", "TopK"}, ops
    # and both convert to FP16 graphs for TensorRT 11's strongly typed networks
    head16 = to_fp16(graphs[1])
    x = np.random.default_rng(0).random((5, *_session(graphs[1]).get_inputs()[0].shape[1:]), dtype=np.float32)
    want = _session(graphs[1]).run(None, {BOX_FEATURES: x})
    got = _session(head16).run(None, {BOX_FEATURES: x})
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, atol=2e-2)
    onnx.checker.check_model(onnx.load_from_string(to_fp16(graphs[0])))


def test_only_faster_rcnn_is_split() -> None:
    with pytest.raises(UnsupportedModelError, match="not an R-CNN"):
        split_rcnn(build_detector(tiny_spec("retinanet")))


def test_export_writes_the_split_graphs_checked_against_pytorch(tmp_path, detector: torch.nn.Module) -> None:
    from jdnas_sdk.deploy import export
    from jdnas_sdk.errors import ExportError

    result = export(detector, tmp_path / "d.onnx", split=True, input_size=SIZE)
    assert result.split is not None
    assert result.split.dense_path == tmp_path / "d.dense.onnx" and result.split.dense_path.is_file()
    assert result.split.box_head_path == tmp_path / "d.box_head.onnx" and result.split.box_head_path.is_file()
    assert result.split.detections[0] == result.split.detections[1] > 0
    assert result.split.max_abs_diff["boxes"] < 1e-3 and result.split.max_abs_diff["labels"] == 0
    assert "dense graphs" in result.summary()
    with pytest.raises(ExportError, match="split export is for R-CNNs"):
        export(build_detector(tiny_spec("retinanet")), tmp_path / "r.onnx", split=True)
