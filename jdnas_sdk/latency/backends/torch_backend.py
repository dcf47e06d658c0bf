"""PyTorch eager profiling backend: CPU (wall clock) or CUDA (timed with CUDA events).

Eager PyTorch fuses nothing, so a ``conv`` entry here is the convolution plus its BatchNorm,
ReLU and add run one after the other, exactly as the detector runs them in eager mode.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ...machine import cpu_model
from ..kernels import op_inputs, op_module
from ..ops import OpKey
from ..probe import probe
from ..table import Entry, Fingerprint
from .base import Timing, summarise, timed_runs

__all__ = ["TorchBackend"]


class TorchBackend:
    """Eager PyTorch on ``device`` (``cpu`` or ``cuda[:N]``) at ``precision`` (fp16: CUDA only)."""

    name = "torch"

    def __init__(self, *, device: str = "cpu", threads: int = 1, precision: str = "fp32", timing: Timing | None = None) -> None:
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
            backend="torch", backend_version=torch.__version__, precision=self.precision, batch=1,
            threads=self.threads, provider=self.device.type, driver=str(torch.version.cuda or "") if cuda else "",
            optimization="eager", machine=platform.machine(),
        )

    @contextmanager
    def _threads(self) -> Iterator[None]:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _prepare(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device).eval()
        return module.half() if self.precision == "fp16" else module

    def _time(self, run: Callable[[], object]) -> list[float]:
        if self.device.type != "cuda":
            return timed_runs(run, self.timing)
        for _ in range(self.timing.warmup):
            run()
        samples: list[float] = []
        while len(samples) < self.timing.min_runs or (sum(samples) < self.timing.min_time_s * 1e3 and len(samples) < self.timing.max_runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize(self.device)
            samples.append(start.elapsed_time(end))
        return samples

    def measure_op(self, key: OpKey) -> Entry:
        module = self._prepare(op_module(key))
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        inputs = tuple(t.to(dtype) for t in op_inputs(key, device=self.device))
        with self._threads(), torch.inference_mode():
            return summarise(self._time(lambda: module(*inputs)))

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        loaded, image, detections = probe(model, image_size, seed=seed)
        loaded = self._prepare(loaded)
        image = image.to(self.device, torch.float16 if self.precision == "fp16" else torch.float32)
        with self._threads(), torch.inference_mode():
            return summarise(self._time(lambda: loaded([image])), detections=detections)
