"""Export: the whole detector as ONNX, checked and compared with PyTorch; TensorRT where available."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from jdnas_sdk import Arch, ExportError, build, export, save_detector
from jdnas_sdk.latency.backends import OrtBackend, tensorrt_available
from jdnas_sdk.latency.probe import full_load

from .conftest import tiny_spec

ARCH = Arch.parse("basic:16|16:16x1|32:32x1|64:64x1|128:128x1")


def _op_types(graph: onnx.GraphProto) -> set[str]:
    """Op types in the graph and in every subgraph (NMS sits inside If branches)."""
    out = set()
    for node in graph.node:
        out.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out |= _op_types(attr.g)
    return out


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet", "fcos", "maskrcnn"])
def test_onnx_holds_the_whole_detector_and_matches_pytorch(family: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = full_load(build(tiny_spec(family), ARCH))  # score threshold 0: random weights still give boxes
    result = export(model, tmp_path / "d.onnx", input_size=(96, 128))
    graph = onnx.load(tmp_path / "d.onnx")
    ops = _op_types(graph.graph)
    assert "NonMaxSuppression" in ops and "Resize" in ops  # post- and pre-processing are in the graph
    assert {o.name for o in graph.graph.output} >= {"boxes", "scores", "labels"}
    assert result.detections[0] == result.detections[1] > 0
    diff = result.max_abs_diff
    assert diff["boxes"] < 1e-2 and diff["scores"] < 1e-4 and diff["ranked_scores"] < 1e-4, result.summary()
    # Untrained dense heads tie: every score is the prior's 0.01 and boxes sit on the anchor grid, so
    # which of several equal detections survives the top-k cut or NMS depends on the last bit of a
    # float. The sorted scores above are blind to that; pairing boxes is not, so it is strict only
    # where the weights break ties (the R-CNN box head). Trained detectors pair 100% (README).
    assert diff["matched"] > (0.95 if family in ("fasterrcnn", "maskrcnn") else 0.3), result.summary()


def test_a_detector_that_keeps_no_box_is_compared_at_full_load_not_passed_on_0_against_0(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build(tiny_spec("fasterrcnn", score_thresh=1.0), ARCH)  # keeps nothing on the probe image
    result = export(model, tmp_path / "d.onnx")
    assert result.max_abs_diff["full_load"] == 1.0 and result.detections[0] == result.detections[1] > 0
    assert result.max_abs_diff["boxes"] < 1e-2 and "at full detection load" in result.summary()
    assert onnx.load(tmp_path / "d.onnx")  # the file written is the detector's own graph, its threshold kept
    session = OrtBackend().session((tmp_path / "d.onnx").read_bytes())
    boxes = session.run(["boxes"], {"image": torch.rand(3, 96, 96).numpy()})[0]
    assert boxes.shape[0] == 0
    split = export(model, tmp_path / "s.onnx", split=True).split  # the graphs TensorRT gets: the same rule
    assert split is not None and split.max_abs_diff["full_load"] == 1.0 and min(split.detections) > 0
    assert split.max_abs_diff["boxes"] < 1e-2


def test_an_engine_without_tensorrt_is_refused_after_the_onnx_is_written(tmp_path: Path) -> None:
    if tensorrt_available() is None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(ExportError, match="TensorRT"):
        export(build(tiny_spec(), ARCH), tmp_path / "d.onnx", engine=tmp_path / "d.plan")
    assert (tmp_path / "d.onnx").is_file() and not (tmp_path / "d.plan").exists()


@pytest.mark.tensorrt
@pytest.mark.skipif(tensorrt_available() is not None, reason=str(tensorrt_available()))
def test_tensorrt_engine_is_built_from_the_onnx(tmp_path: Path) -> None:
    result = export(
        build(tiny_spec("retinanet"), ARCH), tmp_path / "d.onnx", engine=tmp_path / "d.plan", precision="fp16"
    )
    assert result.engine_path is not None and result.engine_path.stat().st_size > 0


def test_export_command_writes_checks_and_measures(tmp_path: Path) -> None:
    model_file = tmp_path / "m.pt"
    save_detector(build(tiny_spec(), ARCH), model_file)
    table = tmp_path / "local.json"
    from jdnas_sdk.latency import Entry, LatencyTable, fixed_key, lower, open_table

    # a handful of kernels is measured, never a whole detector's (minutes on a CPU with a large
    # cache): every op but the smallest one is given a placeholder entry, and so is the fixed entry
    local = open_table(table, "local", OrtBackend())
    spec = tiny_spec()
    ops = sorted({k for _, stage in lower(spec, ARCH, (96, 96)).stages for k, _ in stage}, key=str)
    missing = next(k for k in ops if k.kind == "relu") if any(k.kind == "relu" for k in ops) else ops[0]
    for key in ops:
        if key != missing:
            local.put(key, Entry(0.001, samples=1))
    local.put(fixed_key(spec, (96, 96)), Entry(1.0, samples=1, source="residual"))
    local.save()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "jdnas_sdk.cli",
            "export",
            "--model",
            str(model_file),
            "--onnx",
            str(tmp_path / "m.onnx"),
            "--measure",
            "--target",
            str(table),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "largest differences" in run.stdout and "measured" in run.stdout and "estimated" in run.stdout
    assert (tmp_path / "m.onnx").is_file()
    assert LatencyTable.load(table).get(missing).samples > 1  # the one miss was measured here and saved


@pytest.mark.parametrize("family,heads", [("fasterrcnn", "fpn8,in64x64,p50,b16"), ("retinanet", "fpn8,in64x64,c1,w8")])
def test_a_student_with_other_heads_exports_whole_and_matches_pytorch(family: str, heads: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = full_load(build(tiny_spec(family), f"{ARCH}@{heads}"))
    result = export(model, tmp_path / "s.onnx", input_size=(96, 128))
    assert result.detections[0] == result.detections[1] > 0
    assert result.max_abs_diff["scores"] < 1e-4 and result.max_abs_diff["ranked_scores"] < 1e-4, result.summary()


def test_a_degenerate_box_pairs_with_itself() -> None:
    """A zero-height box (four of an FCOS student's detections, an independent check found) scored IoU 0/0 = 0
    against its own copy, and export reported 50% paired where ONNX and PyTorch agreed exactly."""
    import numpy as np

    from jdnas_sdk.deploy.onnx_export import _iou

    boxes = np.array([[10.0, 20.0, 30.0, 20.0], [0.0, 0.0, 8.0, 8.0]], dtype=np.float32)
    iou = _iou(boxes, boxes + np.float32(1e-5))
    assert iou[0, 0] == 1.0 and iou[1, 1] > 0.99 and iou[0, 1] == 0.0  # equal pairs, distinct do not
    assert _iou(boxes, boxes[[0]] + np.float32([0.0, 0.0, 0.0, 0.5]))[0, 0] == 0.0  # a moved degenerate box is not


def test_near_identical_boxes_pair_by_their_scores() -> None:
    """A dense head at full load keeps dozens of near-identical boxes of one label: paired by overlap alone,
    a box met the wrong twin and export reported a 1.3e-2 score difference where the outputs agreed to 2.5e-7."""
    import numpy as np

    from jdnas_sdk.deploy.onnx_export import _iou, _pairs

    want = np.array([[10.0, 10.0, 40.0, 40.0], [10.0, 10.0, 40.0, 40.002], [50.0, 50.0, 60.0, 60.0]], np.float32)
    want_scores = np.array([0.30, 0.31, 0.9], np.float32)
    got = np.array([[10.0, 10.0, 40.0, 40.0015], [10.0, 10.0, 40.0, 40.0005], [50.0, 50.0, 60.0, 60.0]], np.float32)
    iou = _iou(got, want)  # each twin overlaps the other's partner a hair more
    assert iou[0, 1] > iou[0, 0] > 0.99 and iou[1, 0] > iou[1, 1] > 0.99
    best, paired = _pairs(iou, want_scores + np.float32(1e-7), want_scores)
    assert paired.all() and best.tolist() == [0, 1, 2]
    tied = np.array([0.5, 0.5, 0.9], np.float32)  # equal scores: the most overlapping twin, each its own
    assert _pairs(iou, tied, tied)[0].tolist() == [1, 0, 2]
    assert _pairs(np.zeros((1, 2), np.float32), np.array([0.5]), np.array([0.5, 0.4]))[1].tolist() == [False]
