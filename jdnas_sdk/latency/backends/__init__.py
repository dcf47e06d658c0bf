"""Profiling backends: ONNX Runtime (CPU), PyTorch (CPU or CUDA), TensorRT (CUDA)."""

from __future__ import annotations

import platform

from ...errors import LatencyTableError
from ...machine import cpu_model
from ..roofline import GPU_MODELS
from ..table import Fingerprint
from .base import Backend, Timing
from .ort import OrtBackend
from .roofline_backend import RooflineBackend
from .tensorrt_backend import tensorrt_available
from .tensorrt_native import find_profiler
from .torch_backend import TorchBackend

__all__ = [
    "Backend",
    "Timing",
    "OrtBackend",
    "TorchBackend",
    "RooflineBackend",
    "make_backend",
    "backend_for",
    "local_fingerprint",
    "BACKENDS",
    "tensorrt_available",
]

BACKENDS: tuple[str, ...] = ("ort", "torch", "tensorrt", "roofline")


def make_backend(
    name: str,
    *,
    threads: int = 1,
    device: str = "cpu",
    precision: str | None = None,
    timing: Timing | None = None,
    native: bool | None = None,
) -> Backend:
    """A backend by name; TensorRT raises with the reason where it cannot run. For ``roofline``,
    ``device`` names the device model (a key of :data:`~jdnas_sdk.latency.roofline.GPU_MODELS`).
    For ``tensorrt``, ``native`` picks the native profiler binary (default: where it is built, see
    :mod:`.tensorrt_native`) or TensorRT's Python API."""
    if threads < 1:
        raise LatencyTableError(f"threads must be at least 1, got {threads} (1 gives repeatable per-op numbers)")
    if name == "ort":
        if precision not in (None, "fp32"):
            raise LatencyTableError("the ort backend measures fp32 only")
        return OrtBackend(threads=threads, timing=timing)
    if name == "torch":
        try:
            return TorchBackend(device=device, threads=threads, precision=precision or "fp32", timing=timing)
        except (RuntimeError, ValueError) as exc:  # no CUDA here, an unknown device, fp16 on a CPU
            raise LatencyTableError(f"the torch backend cannot run as asked: {exc}") from exc
    if name == "tensorrt":
        binary = find_profiler() if native is not False else None
        if native and binary is None:
            raise LatencyTableError(
                "the native TensorRT profiler is not built: cmake -S . -B build -DTensorRT_ROOT=... "
                "&& cmake --build build (or set $JDNAS_TRT_PROFILER)"
            )
        if binary is not None:
            from .tensorrt_native import NativeTensorRTBackend

            return NativeTensorRTBackend(binary, precision=precision or "fp16", timing=timing)
        reason = tensorrt_available()
        if reason:
            raise LatencyTableError(f"the tensorrt backend cannot run here: {reason}")
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(precision=precision or "fp16", timing=timing)
    if name == "roofline":
        if device not in GPU_MODELS:
            raise LatencyTableError(
                f"the roofline backend models one of {', '.join(GPU_MODELS)} (pass it as --device), got {device!r}"
            )
        return RooflineBackend(GPU_MODELS[device])
    raise LatencyTableError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def local_fingerprint(fingerprint: Fingerprint) -> Fingerprint:
    """What this machine would record for a table made with ``fingerprint``'s backend settings."""
    backend = _backend_like(fingerprint)
    if backend is not None:
        return backend.fingerprint()
    return Fingerprint(
        device=f"{cpu_model()} (no {fingerprint.backend} device here)",
        backend=fingerprint.backend,
        backend_version="unavailable",
        precision=fingerprint.precision,
        batch=fingerprint.batch,
        threads=fingerprint.threads,
        machine=platform.machine(),
    )


def _backend_like(fingerprint: Fingerprint) -> Backend | None:
    try:
        if fingerprint.backend == "onnxruntime":
            return OrtBackend(threads=fingerprint.threads, optimization=fingerprint.optimization or "all")
        if fingerprint.backend == "torch":
            device = "cuda" if fingerprint.provider == "cuda" else "cpu"
            return TorchBackend(device=device, threads=fingerprint.threads, precision=fingerprint.precision)
        if fingerprint.backend == "tensorrt" and tensorrt_available() is None:
            from .tensorrt_backend import TensorRTBackend

            return TensorRTBackend(precision=fingerprint.precision)
    except (RuntimeError, ValueError):
        return None
    return None


def backend_for(fingerprint: Fingerprint) -> Backend | None:
    """The backend that reproduces ``fingerprint`` on this machine, or ``None`` when this machine
    is not the table's device (then misses cannot be measured here)."""
    backend = _backend_like(fingerprint)
    if backend is None:
        return None
    return backend if fingerprint == backend.fingerprint() else None
