"""An FP32 ONNX graph rewritten to compute in FP16, its inputs and outputs kept FP32.

TensorRT 11 builds strongly typed networks only: the graph's own types decide each layer's
precision, so an FP16 engine needs an FP16 graph (10.x could take an FP32 graph and the FP16
builder flag). The rewrite is the one the dense graphs here need (convolutions, norms,
activations, adds, pooling, resizes, matrix products): float initializers and constants become
float16, ``Cast`` to float becomes ``Cast`` to float16, each float input gets a ``Cast`` to
float16 and each float output a ``Cast`` back, and inputs the ONNX specification types as float
whatever the data (``Resize``'s ``roi`` and ``scales``) stay float32. The result is checked by
``onnx.checker`` and strict shape inference, so a type clash is found here, not in TensorRT.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError

__all__ = ["to_fp16", "FLOAT32_INPUTS"]

#: Op inputs (by position) that stay float32 whatever the graph computes in.
FLOAT32_INPUTS: dict[str, tuple[int, ...]] = {"Resize": (1, 2), "RoiAlign": (), "NonMaxSuppression": (3, 4)}


def _kept(graph: onnx.GraphProto) -> set[str]:
    return {
        node.input[i]
        for node in graph.node
        for i in FLOAT32_INPUTS.get(node.op_type, ())
        if i < len(node.input) and node.input[i]
    }


def _rewrite_tensors(graph: onnx.GraphProto, kept: set[str]) -> None:
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in kept:
            graph.initializer[index].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"), init.name)
            )
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] not in kept:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(
                        numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float16"), attr.t.name)
                    )
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT and node.output[0] not in kept:
                    attr.i = TensorProto.FLOAT16


def _cast_io(graph: onnx.GraphProto) -> None:
    nodes: list[onnx.NodeProto] = []
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{value.name}__fp16"
        for node in graph.node:
            node.input[:] = [half if name == value.name else name for name in node.input]
        nodes.append(helper.make_node("Cast", [value.name], [half], to=TensorProto.FLOAT16, name=f"{half}_cast"))
    tail: list[onnx.NodeProto] = []
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{value.name}__fp16"
        for node in graph.node:
            node.output[:] = [half if name == value.name else name for name in node.output]
            node.input[:] = [half if name == value.name else name for name in node.input]
        tail.append(helper.make_node("Cast", [half], [value.name], to=TensorProto.FLOAT, name=f"{value.name}_cast"))
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body + tail)


def to_fp16(model: bytes) -> bytes:
    """``model`` (ONNX bytes) computing in FP16 with FP32 inputs and outputs (see the module docstring)."""
    proto = onnx.load_from_string(model)
    graph = proto.graph
    if any(node.op_type in ("If", "Loop", "Scan") for node in graph.node):
        raise ExportError(
            "to_fp16 rewrites flat graphs only; this one has control flow (If/Loop/Scan): convert its "
            "dense part (see jdnas_sdk.detectors.rcnn_split) instead"
        )
    kept = _kept(graph)
    _rewrite_tensors(graph, kept)
    _cast_io(graph)
    del graph.value_info[:]
    try:
        onnx.checker.check_model(proto)
        onnx.shape_inference.infer_shapes(proto, strict_mode=True, check_type=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the FP16 rewrite produced an invalid graph: {exc}") from exc
    return proto.SerializeToString()
