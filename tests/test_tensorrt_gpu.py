"""TensorRT and CUDA behaviour that only a GPU can show (skipped elsewhere, with the reason).

Each test is the first-run confirmation of a fix read against TensorRT's documentation:
data-dependent outputs sized by the allocator, producer layers out of op entries, the timing
cache written beside the table, R-CNN engines against ONNX Runtime, FP16 torch boxes in FP32.
"""

from __future__ import annotations

import pytest
import torch

from jdnas_sdk.detectors import build_detector, detector_onnx
from jdnas_sdk.latency.backends import Timing, tensorrt_available
from jdnas_sdk.latency.ops import OpKey
from jdnas_sdk.latency.probe import full_load, probe_image

from .conftest import tiny_spec

FAST = Timing(warmup=2, min_runs=5, max_runs=20, min_time_s=0.0)
NO_TRT = tensorrt_available()


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
@pytest.mark.tensorrt
@pytest.mark.skipif(NO_TRT is not None, reason=str(NO_TRT))
def test_nms_outputs_are_allocated_by_tensorrt(family: str) -> None:
    from jdnas_sdk.latency.backends.tensorrt_backend import EngineRunner, build_engine

    model = full_load(build_detector(tiny_spec(family)))
    image = probe_image(96, 96)
    runner = EngineRunner(build_engine(detector_onnx(model, (96, 96)), precision="fp32"))
    runner.feed("image", image.cuda())
    runner.run()
    boxes = runner.output("boxes")
    with torch.no_grad():
        want = model([image])[0]["boxes"]
    assert boxes.shape == want.shape and boxes.shape[0] > 1  # not the single row allocated before


@pytest.mark.tensorrt
@pytest.mark.skipif(NO_TRT is not None, reason=str(NO_TRT))
def test_op_entries_leave_out_producers_and_the_cache_is_saved(tmp_path) -> None:
    from jdnas_sdk.latency.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(precision="fp16", timing=FAST, cache_path=tmp_path / "t.trt-timing-cache")
    entry = backend.measure_op(OpKey.parse("conv(n=1,cin=64,cout=64,k=3,s=1,g=1,h=64,w=64,norm=bn,act=relu,add=1)"))
    assert 0 < entry.median_ms <= entry.info["wall_median_ms"]
    backend.save_cache()
    assert (tmp_path / "t.trt-timing-cache").stat().st_size > 0
    fingerprint = backend.fingerprint()
    assert "SM " in fingerprint.device and fingerprint.driver and fingerprint.driver != torch.version.cuda


@pytest.mark.tensorrt
@pytest.mark.skipif(NO_TRT is not None, reason=str(NO_TRT))
def test_rcnn_engines_match_onnx_runtime() -> None:
    from jdnas_sdk.latency.backends.trt_engine import EngineBuilder
    from jdnas_sdk.latency.backends.trt_rcnn import tensorrt_split_rcnn

    model = full_load(build_detector(tiny_spec("fasterrcnn")))
    image = probe_image(96, 96)
    with torch.no_grad():
        want = model([image])[0]
    got = tensorrt_split_rcnn(model, (96, 96), EngineBuilder(precision="fp32"))(image.cuda())
    assert got["boxes"].shape[0] == want["boxes"].shape[0]
    assert float((got["scores"].cpu() - want["scores"]).abs().max()) < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_torch_detector_keeps_its_detections() -> None:
    from jdnas_sdk.latency.backends import TorchBackend

    model = build_detector(tiny_spec("fasterrcnn", num_classes=91))
    fp32 = TorchBackend(device="cuda", precision="fp32", timing=FAST).measure_detector(model, (96, 96))
    fp16 = TorchBackend(device="cuda", precision="fp16", timing=FAST).measure_detector(model, (96, 96))
    assert fp16.info["detections"] == fp32.info["detections"]
