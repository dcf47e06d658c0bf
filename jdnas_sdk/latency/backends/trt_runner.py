"""A deserialised TensorRT engine bound to torch CUDA memory, run on its own stream.

Outputs whose shape depends on the data (NMS: ``(-1, 4)``) get their memory from an
``IOutputAllocator`` sized beforehand with ``get_max_output_size`` (TensorRT used to write past a
one-row buffer); static outputs are bound once; inputs with dynamic dimensions get their shape
with ``set_input_shape``. Inputs are copied on the engine's stream, so ``enqueueV3`` cannot start
before the copy ends, and readers of the outputs wait for that stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...errors import ExportError
from .trt_compat import grow_capacity, layer_names_from_inspector
from .trt_engine import deserialize_engine, load_tensorrt

__all__ = ["EngineRunner"]


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=trt.nptype(dtype))).dtype


def _reserve(allocator: Any, tensor_name: str, size: int) -> None:
    """Grow ``allocator``'s memory for ``tensor_name`` to hold ``size`` bytes (see :func:`grow_capacity`)."""
    have = allocator.memory[tensor_name].numel() if tensor_name in allocator.memory else 0
    want = grow_capacity(size, have)
    if want > have:
        allocator.memory[tensor_name] = torch.empty(want, dtype=torch.uint8, device="cuda")


def _make_allocator(trt: Any) -> Any:
    class TorchOutputAllocator(trt.IOutputAllocator):  # type: ignore[misc,name-defined]
        """Output memory for data-dependent shapes: torch CUDA bytes, grown only when TensorRT
        asks for more than the capacity set beforehand (no allocation inside timed runs)."""

        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.memory: dict[str, torch.Tensor] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            _reserve(self, tensor_name, size)
            return self.memory[tensor_name].data_ptr()

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int, stream: int) -> int:
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return TorchOutputAllocator()


class EngineRunner:
    """A deserialised engine with torch CUDA memory bound to every input and output.

    ``input_shapes`` gives the shape of each input with dynamic dimensions."""

    def __init__(self, data: bytes, *, input_shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        trt, _ = load_tensorrt()
        self.trt = trt
        self.runtime, self.engine = deserialize_engine(data)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.buffers: dict[str, torch.Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.allocator = _make_allocator(trt)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        for name in self.inputs:
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                if not input_shapes or name not in input_shapes:
                    raise ExportError(
                        f"engine input {name!r} has dynamic shape {shape}: pass its shape in input_shapes"
                    )
                shape = tuple(input_shapes[name])
                self.context.set_input_shape(name, shape)
            self._bind(name, shape)
        for name in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # data-dependent: sized by TensorRT's upper bound
                self.dtypes[name] = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
                _reserve(self.allocator, name, int(self.context.get_max_output_size(name)))
                self.context.set_output_allocator(name, self.allocator)
            else:
                self._bind(name, shape)

    def _bind(self, name: str, shape: tuple[int, ...]) -> None:
        self.dtypes[name] = _torch_dtype(self.trt, self.engine.get_tensor_dtype(name))
        self.buffers[name] = torch.zeros(shape, dtype=self.dtypes[name], device="cuda")
        self.context.set_tensor_address(name, self.buffers[name].data_ptr())

    def feed(self, name: str, value: torch.Tensor) -> None:
        """Copy ``value`` into input ``name`` on the engine's stream (ordered before the next run)."""
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            self.buffers[name].copy_(value.reshape(self.buffers[name].shape), non_blocking=True)

    def run(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log above)")

    def output(self, name: str) -> torch.Tensor:
        """Output ``name`` after the last run, as the current torch stream may read it."""
        torch.cuda.current_stream().wait_stream(self.stream)
        if name in self.buffers:
            return self.buffers[name]
        shape = self.allocator.shapes[name]
        count = int(np.prod(shape)) if shape else 1
        dtype = self.dtypes[name]
        return (
            self.allocator.memory[name][: count * torch.empty(0, dtype=dtype).element_size()].view(dtype).reshape(shape)
        )

    def layer_names(self) -> list[str]:
        """The engine's layers as the inspector names them (fusions joined by ``" + "``)."""
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        return layer_names_from_inspector(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))
