"""Standalone PyTorch modules, one per :class:`OpKey`, built the way torchvision's layers are.

The profiler times these modules directly (``torch`` backend) or exports them to ONNX with the
same exporter as the whole detector (``ort`` and ``tensorrt`` backends), so that a standalone op
and the same op inside the detector go through the same graph patterns and fusions; weights are
module parameters and so become ONNX initializers, which ONNX Runtime can pre-pack.
"""

from __future__ import annotations

import io
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import LatencyTableError
from .ops import OpKey, conv_out

__all__ = ["op_module", "op_inputs", "op_onnx", "WARM_NAME"]

ONNX_OPSET = 17


class _Conv(nn.Module):
    def __init__(self, key: OpKey) -> None:
        super().__init__()
        f = key.as_dict()
        k = int(f["k"])
        self.conv = nn.Conv2d(
            int(f["cin"]), int(f["cout"]), k, int(f["s"]), k // 2, groups=int(f["g"]), bias=f["norm"] != "bn"
        )
        norms = {
            "bn": lambda c: nn.BatchNorm2d(c),
            "gn": lambda c: nn.GroupNorm(32, c),
            "none": lambda c: nn.Identity(),
        }
        self.norm: nn.Module = norms[str(f["norm"])](int(f["cout"]))
        self.relu, self.add = f["act"] == "relu", bool(f["add"])

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        y = self.norm(self.conv(x))
        if self.add:
            y = y + residual
        return F.relu(y) if self.relu else y


class _Linear(nn.Module):
    def __init__(self, key: OpKey) -> None:
        super().__init__()
        self.fc, self.relu = nn.Linear(int(key["fin"]), int(key["fout"])), key["act"] == "relu"

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc(x)
        return F.relu(y) if self.relu else y


class _Upsample(nn.Module):
    def __init__(self, key: OpKey) -> None:
        super().__init__()
        self.size = (int(key["oh"]), int(key["ow"]))

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode="nearest")


class _Relu(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


def op_module(key: OpKey) -> nn.Module:
    """A randomly initialised module computing ``key`` (eval mode: BatchNorm uses running statistics)."""
    if key.kind == "conv":
        module: nn.Module = _Conv(key)
        if key["norm"] == "gn" and int(key["cout"]) % 32:
            raise LatencyTableError(f"{key}: GroupNorm(32, C) needs C divisible by 32")
    elif key.kind == "linear":
        module = _Linear(key)
    elif key.kind == "maxpool":
        module = nn.MaxPool2d(int(key["k"]), int(key["s"]), int(key["p"]))
    elif key.kind == "upsample":
        module = _Upsample(key)
    elif key.kind == "relu":
        module = _Relu()
    else:
        raise LatencyTableError(f"op {key.kind!r} is not a standalone kernel; it is measured on the whole detector")
    return module.eval()


def op_inputs(key: OpKey, *, seed: int = 0, device: str | torch.device = "cpu") -> tuple[Tensor, ...]:
    """Random inputs of the op's shapes (and the residual operand of a fused add)."""
    gen = torch.Generator().manual_seed(seed)
    f = key.as_dict()
    if key.kind == "conv":
        n, h, w, k, s = (int(f[x]) for x in ("n", "h", "w", "k", "s"))
        shapes = [(n, int(f["cin"]), h, w)]
        if f["add"]:
            shapes.append((n, int(f["cout"]), conv_out(h, k, s), conv_out(w, k, s)))
    elif key.kind == "linear":
        shapes = [(int(f["rows"]), int(f["fin"]))]
    else:
        shapes = [(1, int(f["c"]), int(f["h"]), int(f["w"]))]
    return tuple(torch.randn(shape, generator=gen).to(device) for shape in shapes)


#: Name of the module that produces an op's inputs inside its graph (timings leave it out).
WARM_NAME = "jdnas_warm"


class _Warmed(nn.Module):
    """Puts producers in front of the op: inside the op's graph, as inside a detector, every input
    is written by another kernel just before the op reads it (so it is in cache) and is in the
    layout the engine keeps between convolutions (ONNX Runtime's blocked NCHWc: a residual that
    arrives as a plain graph input stops the add from fusing into the convolution). Producers are
    1x1 depthwise convolutions (a ReLU for the 2-D input of a linear layer) in modules named after
    :data:`WARM_NAME`, and their kernels are left out of the op's time."""

    def __init__(self, op: nn.Module, channels: list[int]) -> None:
        super().__init__()
        self.op = op
        producers = [nn.Conv2d(c, c, 1, groups=c) if c else _Relu() for c in channels]
        for index, producer in enumerate(producers):
            setattr(self, f"{WARM_NAME}_{index}", producer)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.op(*(getattr(self, f"{WARM_NAME}_{i}")(x) for i, x in enumerate(inputs)))


def _producer_channels(inputs: tuple[Tensor, ...]) -> list[int]:
    return [0 if x.dim() == 2 else int(x.shape[1]) for x in inputs]


def op_onnx(key: OpKey, *, warm: bool = True) -> bytes:
    """The op as an ONNX model (weights as initializers), exported as the detector is exported;
    ``warm`` puts input producers in front (see :class:`_Warmed`)."""
    module, inputs = op_module(key), op_inputs(key)
    if warm:
        module = _Warmed(module, _producer_channels(inputs)).eval()
    names = ["x", "residual"][: len(inputs)]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            buffer,
            input_names=names,
            output_names=["y"],
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()
