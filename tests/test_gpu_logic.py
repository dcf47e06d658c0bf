"""The GPU paths' pure logic, tested without a GPU: TensorRT version guards and target support,
output sizing, layer classification, nvidia-smi parsing, the FP16 ONNX rewrite, FP32 boxes under
autocast, and the profile's refusal of a target its TensorRT cannot profile."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from jdnas_sdk.detectors import build_detector
from jdnas_sdk.detectors.onnx_fp16 import to_fp16
from jdnas_sdk.errors import ExportError, LatencyTableError
from jdnas_sdk.latency.backends.torch_backend import cuda_optimization, keep_boxes_fp32, l2_flush_elements
from jdnas_sdk.latency.backends.trt_compat import (
    NMS_TOPK_LIMIT,
    check_target,
    grow_capacity,
    layer_names_from_inspector,
    network_mode,
    output_bytes,
    split_layers,
    target_support,
    trt_major,
    trt_version,
)
from jdnas_sdk.latency.gpu import parse_nvidia_smi, tensorrt_cuda_variant
from jdnas_sdk.latency.kernels import WARM_NAME, op_inputs, op_onnx
from jdnas_sdk.latency.ops import OpKey
from jdnas_sdk.latency.profile import _prepare_backend, timing_cache_path
from jdnas_sdk.latency.table import Fingerprint, LatencyTable

from .conftest import tiny_spec


def test_versions_and_guards() -> None:
    assert trt_version("10.3.0") == (10, 3) and trt_version("11.4.0.106") == (11, 4) and trt_major("10.13.2") == 10
    with pytest.raises(ValueError):
        trt_version("unknown")
    assert network_mode(10, "fp16") == (False, True)  # weakly typed: the FP16 builder flag
    assert network_mode(10, "fp32") == (False, False)
    assert network_mode(11, "fp16") == (True, False)  # strongly typed only: FP16 comes from the graph
    assert NMS_TOPK_LIMIT == 5000


def test_v100_needs_tensorrt_before_10_5() -> None:
    assert target_support("v100-trt", "10.4.0") is None
    reason = target_support("v100-trt", (10, 5))
    assert reason and "Volta" in reason and "10.5" in reason
    assert target_support("v100-trt", "11.4") and target_support("v100-trt", "9.3")
    assert target_support("t4-trt", "11.4.0") is None and target_support("a100-trt", "10.5") is None
    assert target_support("cpu-ort", "11.4") is None  # not a TensorRT target
    with pytest.raises(LatencyTableError, match="Volta support was removed in TensorRT 10.5"):
        check_target("v100-trt", "10.5.0")


class _FakeTrtBackend:
    """Stands in for TensorRTBackend's table hooks only (its measuring needs a GPU)."""

    name = "tensorrt"

    def __init__(self, version: str) -> None:
        self.version, self.cache = trt_version(version), None

    def check_target(self, target: str) -> None:
        check_target(target, self.version)

    def use_cache(self, path: object) -> None:
        self.cache = path


def test_profile_refuses_v100_with_new_tensorrt_and_puts_the_cache_beside_the_table(tmp_path) -> None:
    table = LatencyTable(target="v100-trt", source="measured", fingerprint=Fingerprint("V100", "tensorrt", "10.6.0"))
    table.path = tmp_path / "v100-trt.json"
    with pytest.raises(LatencyTableError, match="v100-trt"):
        _prepare_backend(table, _FakeTrtBackend("10.6.0"))  # type: ignore[arg-type]
    backend = _FakeTrtBackend("10.4.1")
    _prepare_backend(table, backend)  # type: ignore[arg-type]
    assert backend.cache == timing_cache_path(table.path) == tmp_path / "v100-trt.trt-timing-cache"


def test_output_sizing() -> None:
    assert output_bytes((100, 4), 4) == 1792  # 1600 rounded up to 256
    assert output_bytes((0, 4), 4) == 256  # an empty output still needs an address
    with pytest.raises(ValueError, match="data-dependent"):
        output_bytes((-1, 4), 4)
    assert grow_capacity(1000, 4096) == 4096  # fits: no reallocation inside timed runs
    assert grow_capacity(5000, 4096) == 8192  # grows at least twofold
    assert grow_capacity(20000, 4096) == 20224


def test_layer_split_leaves_out_producers_and_reformats() -> None:
    names = [
        f"/{WARM_NAME}_0/Conv",
        "/op/conv/Conv + /op/Add + /op/Relu",
        "Reformatting CopyNode for Input Tensor 0 to /op/conv/Conv",
        f"/{WARM_NAME}_1/Conv",
    ]
    split = split_layers(names, WARM_NAME)
    assert split.op == ("/op/conv/Conv + /op/Add + /op/Relu",)
    assert len(split.producers) == 2 and len(split.reformats) == 1
    with pytest.raises(LatencyTableError, match="fused an input producer"):
        split_layers([f"/{WARM_NAME}_0/Conv + /op/conv/Conv"], WARM_NAME)
    detailed = json.dumps(
        {"Layers": [{"Name": "a + b", "LayerType": "CaskConvolution"}, {"Name": "c"}], "Bindings": []}
    )
    assert layer_names_from_inspector(detailed) == ["a + b", "c"]
    assert layer_names_from_inspector(json.dumps({"Layers": ["x", "y"]})) == ["x", "y"]


def test_nvidia_smi_parsing_and_cuda_variant() -> None:
    info = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 550.54.15, 9.0, 1980, 2619, 1980, 2619")
    assert info.compute_capability == (9, 0) and info.driver == "550.54.15" and info.sm == "9.0"
    assert info.clocks() == {
        "sm_clock_mhz": 1980,
        "mem_clock_mhz": 2619,
        "max_sm_clock_mhz": 1980,
        "max_mem_clock_mhz": 2619,
    }
    assert "SM 9.0" in info.describe() and "550.54.15" in info.describe()
    partial = parse_nvidia_smi("Tesla V100-SXM2-16GB, 535.104.05, 7.0, [N/A], 877, 1530, 877")
    assert partial.sm_clock_mhz is None and "sm_clock_mhz" not in partial.clocks()
    with pytest.raises(ValueError, match="7 comma-separated"):
        parse_nvidia_smi("NVIDIA T4, 535.0")
    assert tensorrt_cuda_variant(["tensorrt-cu12", "tensorrt_cu12_libs", "numpy"]) == "cu12"
    assert tensorrt_cuda_variant(["numpy"]) == "" and tensorrt_cuda_variant(["tensorrt-cu12", "tensorrt-cu13"]) == ""


@pytest.mark.parametrize(
    "text",
    [
        "conv(n=1,cin=16,cout=32,k=3,s=2,g=1,h=16,w=16,norm=bn,act=relu,add=1)",
        "upsample(c=8,h=4,w=4,oh=8,ow=8)",
        "linear(rows=4,fin=16,fout=8,act=relu)",
    ],
)
def test_fp16_graph_computes_in_fp16_with_fp32_io(text: str) -> None:
    key = OpKey.parse(text)
    fp32 = op_onnx(key)
    fp16 = onnx.load_from_string(to_fp16(fp32))
    resize_inputs = {n.input[i] for n in fp16.graph.node if n.op_type == "Resize" for i in (1, 2) if i < len(n.input)}
    floats = {i.name: i.data_type for i in fp16.graph.initializer}
    assert all(t == onnx.TensorProto.FLOAT16 for name, t in floats.items() if name not in resize_inputs)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*fp16.graph.input, *fp16.graph.output])
    feeds = {n: t.numpy() for n, t in zip(("x", "residual"), op_inputs(key))}
    want = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(fp16.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-2 * max(1.0, float(np.abs(want).max())))


def test_fp16_rewrite_refuses_control_flow() -> None:
    model = build_detector(tiny_spec("fasterrcnn"))
    from jdnas_sdk.detectors import detector_onnx

    with pytest.raises(ExportError, match="control flow"):
        to_fp16(detector_onnx(model.eval(), (96, 96)))


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet"])
def test_boxes_stay_fp32_under_autocast(family: str) -> None:
    """CPU bfloat16 autocast stands in for CUDA FP16: the hooks must make every box input FP32."""
    torch.manual_seed(0)
    model = build_detector(tiny_spec(family)).eval()
    seen: dict[str, torch.dtype] = {}
    target = model.roi_heads.box_predictor if family == "fasterrcnn" else model.head

    def record(_module: torch.nn.Module, _inputs: object, out: object) -> None:
        seen["raw"] = next(iter(out.values())).dtype if isinstance(out, dict) else out[0].dtype  # type: ignore[union-attr,index]

    target.register_forward_hook(record)
    image = torch.rand(3, 96, 96)
    handles = keep_boxes_fp32(model)
    assert len(handles) == (3 if family == "fasterrcnn" else 2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model([image])[0]
    assert seen["raw"] == torch.bfloat16  # the head computed in reduced precision ...
    assert out["boxes"].dtype == torch.float32  # ... and boxes were decoded in FP32
    for handle in handles:
        handle.remove()


def test_torch_cuda_conditions_are_recorded() -> None:
    assert cuda_optimization("fp16") == "eager, autocast-fp16, channels_last, cudnn.benchmark"
    assert cuda_optimization("fp32", channels_last=False) == "eager, fp32, cudnn.benchmark"
    assert l2_flush_elements(50 << 20) == (100 << 20) // 4 and l2_flush_elements(0) == (8 << 20) // 4
