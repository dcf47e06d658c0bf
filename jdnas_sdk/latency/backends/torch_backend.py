"""PyTorch eager profiling backend: CPU (wall clock) or CUDA (timed with CUDA events).

Eager PyTorch fuses nothing, so a ``conv`` entry here is the convolution plus its BatchNorm,
ReLU and add run one after the other, exactly as the detector runs them in eager mode.

On CUDA, timings follow the conditions a deployed detector runs under, and the fingerprint's
``optimization`` records them (``eager, autocast-fp16, channels_last, cudnn.benchmark``):

- FP16 is autocast, not ``module.half()``: a half-precision detector overflows in batched NMS,
  whose per-class coordinate offset reaches classes x image size (90 x 1345 px > 65,504, FP16's
  largest value), and loses anchor precision (FP16 has a 1 px step above 1024). Backbone
  features and the box heads' outputs are cast back to FP32 (:func:`keep_boxes_fp32`), so
  anchors, box decoding and NMS run in FP32 while convolutions and linear layers run in FP16.
- ``cudnn.benchmark`` picks each convolution's fastest algorithm (as TensorRT's tactics do), and
  modules and inputs are ``channels_last`` (the layout Tensor Cores take without transposes).
- The L2 cache is flushed before every timed run (a write of twice its size), as the CPU
  backends flush the CPU caches: inside a detector an op's weights were last read one
  inference ago, not a moment ago.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ...machine import cpu_model
from ..kernels import op_inputs, op_module
from ..ops import OpKey
from ..probe import probe
from ..table import Entry, Fingerprint
from .base import Timing, summarise, timed_runs

__all__ = ["TorchBackend", "keep_boxes_fp32", "cuda_optimization", "l2_flush_elements"]


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return type(value)((k, _to_fp32(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_to_fp32(v) for v in value)
    return value


def keep_boxes_fp32(model: nn.Module) -> list[Any]:
    """Forward hooks that return FP32 from the modules whose outputs feed boxes: the backbone
    (anchors take its features' dtype; RoI alignment reads them), the RPN head and the R-CNN box
    predictor, or a one-stage detector's head. Returns the hook handles (``.remove()`` undoes)."""
    names = ("backbone", "rpn.head", "roi_heads.box_predictor", "head")
    handles = []
    for name in names:
        module: Any = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Module):
            handles.append(module.register_forward_hook(lambda _m, _i, out: _to_fp32(out)))
    return handles


def cuda_optimization(precision: str, *, channels_last: bool = True, cudnn_benchmark: bool = True) -> str:
    """The fingerprint's ``optimization`` for torch on CUDA: what the timings ran with."""
    parts = ["eager", "autocast-fp16" if precision == "fp16" else "fp32"]
    if channels_last:
        parts.append("channels_last")
    if cudnn_benchmark:
        parts.append("cudnn.benchmark")
    return ", ".join(parts)


def l2_flush_elements(l2_bytes: int) -> int:
    """float32 elements of a buffer twice the L2 cache (at least 8 MiB when the size is unknown)."""
    return max(2 * l2_bytes, 8 << 20) // 4


class TorchBackend:
    """Eager PyTorch on ``device`` (``cpu`` or ``cuda[:N]``) at ``precision`` (fp16: CUDA only)."""

    name = "torch"

    def __init__(
        self, *, device: str = "cpu", threads: int = 1, precision: str = "fp32", timing: Timing | None = None
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("the torch backend was asked for CUDA, but torch sees no CUDA device here")
        if precision not in ("fp32", "fp16") or (precision == "fp16" and self.device.type != "cuda"):
            raise ValueError(f"precision must be fp32, or fp16 on CUDA; got {precision!r} on {self.device}")
        self.threads, self.precision = threads, precision
        self.timing = timing or Timing()

    def fingerprint(self) -> Fingerprint:
        cuda = self.device.type == "cuda"
        return Fingerprint(
            device=torch.cuda.get_device_name(self.device) if cuda else cpu_model(),
            backend="torch",
            backend_version=torch.__version__,
            precision=self.precision,
            batch=1,
            threads=self.threads,
            provider=self.device.type,
            driver=_driver() if cuda else "",
            optimization=cuda_optimization(self.precision) if cuda else "eager",
            machine=platform.machine(),
        )

    @contextmanager
    def _threads(self) -> Iterator[None]:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @contextmanager
    def _conditions(self) -> Iterator[None]:
        """Threads, inference mode, and on CUDA cudnn.benchmark and FP16 autocast (restored after)."""
        with ExitStack() as stack:
            stack.enter_context(self._threads())
            stack.enter_context(torch.inference_mode())
            if self.device.type == "cuda":
                before = torch.backends.cudnn.benchmark
                torch.backends.cudnn.benchmark = True
                stack.callback(setattr, torch.backends.cudnn, "benchmark", before)
                if self.precision == "fp16":
                    stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
            yield

    def _prepare(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device).eval()
        if self.device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        return module

    def _input(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device)
        return (
            tensor.contiguous(memory_format=torch.channels_last)
            if self.device.type == "cuda" and tensor.dim() == 4
            else tensor
        )

    def _time(self, run: Callable[[], object]) -> list[float]:
        if self.device.type != "cuda":
            return timed_runs(run, self.timing)
        l2 = int(getattr(torch.cuda.get_device_properties(self.device), "L2_cache_size", 0))
        flush = torch.empty(l2_flush_elements(l2), dtype=torch.float32, device=self.device)
        for _ in range(self.timing.warmup):
            run()
        samples: list[float] = []
        while len(samples) < self.timing.min_runs or (
            sum(samples) < self.timing.min_time_s * 1e3 and len(samples) < self.timing.max_runs
        ):
            flush.fill_(float(len(samples)))
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize(self.device)
            samples.append(start.elapsed_time(end))
        return samples

    def measure_op(self, key: OpKey) -> Entry:
        module = self._prepare(op_module(key))
        inputs = tuple(self._input(t) for t in op_inputs(key))
        with self._conditions():
            return summarise(self._time(lambda: module(*inputs)))

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        probed = probe(model, image_size, seed=seed)
        loaded = self._prepare(probed.model)
        hooks = keep_boxes_fp32(loaded) if self.precision == "fp16" else []
        image = probed.image.to(self.device)
        try:
            with self._conditions():
                return summarise(self._time(lambda: loaded([image])), **probed.info(load=False))
        finally:
            for hook in hooks:
                hook.remove()


def _driver() -> str:
    from ..gpu import gpu_info

    info = gpu_info(0)
    return info.driver if info is not None else ""
