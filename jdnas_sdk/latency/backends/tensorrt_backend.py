"""TensorRT profiling backend: one engine per op, built from the op's ONNX with TensorRT's Python API.

Used where ``import tensorrt`` works and a CUDA device is present. Device memory is torch CUDA
tensors (no pycuda). How each number is made, and why:

- An op's entry is the sum, per run, of the engine's layer times from TensorRT's per-layer
  profiler, over the op's own layers: the warm-up producers in front of the op (see
  :class:`~jdnas_sdk.latency.kernels._Warmed`) and reformatting copies are left out, as the ONNX
  Runtime backend leaves them out. Which layer is which is read from the engine inspector (the
  engine is built with ``ProfilingVerbosity.DETAILED``); a layer fusing a producer into the op
  is an error, not a silent over-count.
- Outputs whose shape depends on the data (NMS: ``(-1, 4)``) get their memory from an
  ``IOutputAllocator`` sized beforehand with ``get_max_output_size``; static outputs are bound
  once. Inputs with dynamic dimensions get their shape with ``set_input_shape``.
- Inputs are copied on the engine's stream, so ``enqueueV3`` cannot start before the copy ends;
  readers of the outputs wait for that stream. The L2 cache is flushed before every timed run, as
  the torch backend and the native profiler flush it.
- A detector's entry is the wall time of the whole inference with CUDA events. R-CNNs run as
  engines for their dense parts with the data-dependent post-processing in torch (see
  :mod:`jdnas_sdk.detectors.rcnn_split`: TensorRT's parser rejects torchvision's RoI pooling).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...detectors import detector_onnx
from ...errors import LatencyTableError
from ..gpu import gpu_info, tensorrt_cuda_variant
from ..kernels import WARM_NAME, op_inputs, op_onnx
from ..ops import OpKey
from ..probe import probe
from ..table import Entry, Fingerprint
from .base import Timing, summarise
from .torch_backend import l2_flush_elements
from .trt_compat import check_target, split_layers, trt_version
from .trt_engine import EngineBuilder, build_engine, load_tensorrt
from .trt_runner import EngineRunner

__all__ = ["TensorRTBackend", "tensorrt_available", "build_engine", "EngineRunner"]


def tensorrt_available() -> str | None:
    """``None`` when TensorRT and a CUDA device are usable, else why not (for skip reasons and errors)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return (
            f"TensorRT's Python package is not importable ({exc}); pip install tensorrt, on a machine with an "
            "NVIDIA GPU"
        )
    if not torch.cuda.is_available():
        return "TensorRT is installed but torch sees no CUDA device"
    return None


def _make_profiler(trt: Any, keep: set[str]) -> Any:
    class LayerProfiler(trt.IProfiler):  # type: ignore[misc,name-defined]
        """Per run, the summed time of the layers in ``keep`` (the op's own)."""

        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.total = 0.0
            self.seen: set[str] = set()

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.seen.add(layer_name)
            if layer_name in keep:
                self.total += ms

    return LayerProfiler()


class TensorRTBackend:
    """TensorRT on the first CUDA device, at ``precision`` fp16 or fp32; ``cache_path`` is the
    timing cache shared by every build (``jdnas profile`` puts it beside the table)."""

    name = "tensorrt"

    def __init__(
        self, *, precision: str = "fp16", timing: Timing | None = None, cache_path: str | Path | None = None
    ) -> None:
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
        self.precision = precision
        self.timing = timing or Timing()
        self.trt, _ = load_tensorrt()
        self.version = trt_version(self.trt)
        self.gpu = gpu_info(0)
        self.engines = EngineBuilder(precision=precision, cache_path=cache_path)

    def use_cache(self, path: str | Path) -> None:
        """Share the timing cache at ``path`` from now on (loaded if it exists)."""
        self.engines = EngineBuilder(precision=self.precision, cache_path=path)

    def save_cache(self) -> None:
        self.engines.save_cache()

    def check_target(self, target: str) -> None:
        """Refuse a target this TensorRT cannot profile (``v100-trt`` needs TensorRT < 10.5)."""
        check_target(target, self.version)

    def fingerprint(self) -> Fingerprint:
        gpu = self.gpu
        device = f"{gpu.name} (SM {gpu.sm})" if gpu else torch.cuda.get_device_name(0)
        variant = tensorrt_cuda_variant() or f"cu{(torch.version.cuda or '').split('.')[0]}"
        return Fingerprint(
            device=device,
            backend="tensorrt",
            backend_version=self.trt.__version__,
            precision=self.precision,
            batch=1,
            threads=1,
            provider=variant,
            driver=gpu.driver if gpu else "",
            optimization="builder-default",
            machine=platform.machine(),
        )

    def _info(self) -> dict[str, object]:
        current = gpu_info(0)
        return {"clocks": current.clocks()} if current is not None and current.clocks() else {}

    def _flush(self, stream: torch.cuda.Stream) -> None:
        """Evict the L2 cache on ``stream`` (a write of twice its size), outside the timed span."""
        if not hasattr(self, "_l2"):
            l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0))
            self._l2 = torch.empty(l2_flush_elements(l2), dtype=torch.float32, device="cuda")
        with torch.cuda.stream(stream):
            self._l2.fill_(1.0)

    def _events(self, run: Any, stream: torch.cuda.Stream) -> list[float]:
        for _ in range(self.timing.warmup):
            run()
        samples: list[float] = []
        while len(samples) < self.timing.min_runs or (
            sum(samples) < self.timing.min_time_s * 1e3 and len(samples) < self.timing.max_runs
        ):
            self._flush(stream)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            run()
            end.record(stream)
            end.synchronize()
            samples.append(start.elapsed_time(end))
        return samples

    def measure_op(self, key: OpKey) -> Entry:
        runner = EngineRunner(self.engines.build(op_onnx(key)))
        for name, value in zip(("x", "residual"), op_inputs(key, device="cuda")):
            runner.feed(name, value.to(runner.dtypes[name]))
        split = split_layers(runner.layer_names(), WARM_NAME)
        if not split.op:
            raise LatencyTableError(f"{key}: the engine has no layer of the op (layers: {split})")
        events = self._events(runner.run, runner.stream)
        profiler = _make_profiler(self.trt, set(split.op))
        runner.context.profiler = profiler
        layer_ms: list[float] = []
        for _ in range(len(events)):
            profiler.total = 0.0
            self._flush(runner.stream)
            runner.stream.synchronize()
            runner.run()
            runner.stream.synchronize()
            layer_ms.append(profiler.total)
        unknown = profiler.seen - set(split.op) - set(split.producers) - set(split.reformats)
        if unknown:
            raise LatencyTableError(
                f"{key}: the profiler reported layers the inspector did not list: {sorted(unknown)}"
            )
        return summarise(layer_ms, wall_median_ms=sorted(events)[len(events) // 2], **self._info())

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        probed = probe(model, image_size, seed=seed)
        if getattr(probed.model, "roi_heads", None) is not None:
            from .trt_rcnn import rcnn_runner

            run = rcnn_runner(probed.model, image_size, self.engines, probed.image.cuda())
            return summarise(self._events(run, torch.cuda.current_stream()), **probed.info(load=False), **self._info())
        runner = EngineRunner(self.engines.build(detector_onnx(probed.model, image_size)))
        runner.feed("image", probed.image.cuda())
        return summarise(self._events(runner.run, runner.stream), **probed.info(load=False), **self._info())
