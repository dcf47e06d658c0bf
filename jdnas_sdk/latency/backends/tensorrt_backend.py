"""TensorRT profiling backend: one engine per op, built from the op's ONNX with TensorRT's Python API.

Used where ``import tensorrt`` works and a CUDA device is present. Device memory is torch CUDA
tensors (no pycuda). An op's entry is the sum of the engine's layer times from TensorRT's
per-layer profiler (reformatting layers excluded); a detector's is the wall time of the whole
engine, measured with CUDA events.
"""

from __future__ import annotations

import platform
from typing import Any

import torch
from torch import nn

from ...detectors import detector_onnx
from ...errors import ExportError
from ..kernels import op_inputs, op_onnx
from ..ops import OpKey
from ..probe import probe
from ..table import Entry, Fingerprint
from .base import Timing, summarise

__all__ = ["TensorRTBackend", "tensorrt_available", "build_engine", "EngineRunner"]


def tensorrt_available() -> str | None:
    """``None`` when TensorRT and a CUDA device are usable, else why not (for skip reasons and errors)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT's Python package is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)"
    if not torch.cuda.is_available():
        return "TensorRT is installed but torch sees no CUDA device"
    return None


def _trt() -> Any:
    reason = tensorrt_available()
    if reason:
        raise RuntimeError(reason)
    import tensorrt as trt

    return trt


def build_engine(onnx: bytes, *, precision: str = "fp16", workspace_mib: int = 2048) -> bytes:
    """A serialised TensorRT engine of an ONNX model (static shapes)."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT >= 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build an engine (see the TensorRT log above)")
    return bytes(serialized)


class EngineRunner:
    """A deserialised engine with torch CUDA tensors bound to every input and output."""

    def __init__(self, engine: bytes) -> None:
        trt = _trt()
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.buffers: dict[str, torch.Tensor] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(max(d, 1) for d in self.engine.get_tensor_shape(name))
            dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                     trt.int64: torch.int64, trt.bool: torch.bool}[self.engine.get_tensor_dtype(name)]
            self.buffers[name] = torch.zeros(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())

    def feed(self, name: str, value: torch.Tensor) -> None:
        self.buffers[name].copy_(value.reshape(self.buffers[name].shape))

    def run(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")


class TensorRTBackend:
    """TensorRT on the first CUDA device, at ``precision`` fp16 or fp32."""

    name = "tensorrt"

    def __init__(self, *, precision: str = "fp16", timing: Timing | None = None) -> None:
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
        self.precision = precision
        self.timing = timing or Timing()
        self.trt = _trt()

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(device=torch.cuda.get_device_name(0), backend="tensorrt", backend_version=self.trt.__version__,
                           precision=self.precision, batch=1, threads=1, provider="cuda",
                           driver=str(torch.version.cuda or ""), optimization="builder-default",
                           machine=platform.machine())

    def _events(self, runner: EngineRunner) -> list[float]:
        for _ in range(self.timing.warmup):
            runner.run()
        samples: list[float] = []
        while len(samples) < self.timing.min_runs or (sum(samples) < self.timing.min_time_s * 1e3 and len(samples) < self.timing.max_runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(runner.stream)
            runner.run()
            end.record(runner.stream)
            end.synchronize()
            samples.append(start.elapsed_time(end))
        return samples

    def measure_op(self, key: OpKey) -> Entry:
        runner = EngineRunner(build_engine(op_onnx(key), precision=self.precision))
        for name, value in zip(("x", "residual"), op_inputs(key, device="cuda")):
            runner.feed(name, value.to(runner.buffers[name].dtype))
        trt = self.trt
        layer_ms: list[float] = []

        class _Profiler(trt.IProfiler):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)
                self.total = 0.0

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                if "reformat" not in layer_name.lower():
                    self.total += ms

        events = self._events(runner)
        profiler = _Profiler()
        runner.context.profiler = profiler
        for _ in range(len(events)):
            profiler.total = 0.0
            runner.run()
            runner.stream.synchronize()
            layer_ms.append(profiler.total)
        return summarise(layer_ms, wall_median_ms=sorted(events)[len(events) // 2])

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        loaded, image, detections = probe(model, image_size, seed=seed)
        runner = EngineRunner(build_engine(detector_onnx(loaded, image_size), precision=self.precision))
        runner.feed("image", image.cuda())
        return summarise(self._events(runner), detections=detections)
