"""Modelled latency for devices this machine cannot reach: a roofline with efficiency factors.

An op takes ``max(FLOPs / (peak x compute_efficiency), bytes / (bandwidth x memory_efficiency))``
plus a fixed launch cost. Peaks and bandwidths are the vendors' published figures; the
efficiency factors and the fixed post-processing time are *assumptions*, written into every
modelled table. A modelled table is a placeholder until ``jdnas profile`` runs on the device,
and everything that uses one says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import LatencyTableError
from .ops import OpKey, op_bytes, op_macs

__all__ = ["DeviceModel", "GPU_MODELS"]


def finite_number(value: object) -> bool:
    """A finite int or float (an int too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


#: What a device model's numbers may be: beyond these no device is, and the roofline's arithmetic
#: overflows (a peak of 1e-320 TFLOP/s made every estimate infinite).
_DEVICE_BOUNDS = {
    "peak_tflops": (1e-6, 1e6),
    "bandwidth_gbs": (1e-3, 1e7),
    "compute_efficiency": (1e-3, 1.0),
    "memory_efficiency": (1e-3, 1.0),
    "launch_us": (0.0, 1e6),
    "postprocess_ms": (0.0, 1e6),
    "fixed_kernels": (0, 10**6),
}


@dataclass(frozen=True)
class DeviceModel:
    """A device as a roofline: peak compute (TFLOP/s at ``precision``), memory bandwidth (GB/s),
    the fractions of each that kernels reach, a per-kernel launch cost (µs), and the time of
    the fixed pre/post-processing (NMS, decoding) per image (ms)."""

    name: str
    precision: str
    peak_tflops: float
    bandwidth_gbs: float
    compute_efficiency: float = 0.5
    memory_efficiency: float = 0.7
    launch_us: float = 5.0
    postprocess_ms: float = 1.5
    fixed_kernels: int = 60
    reference: str = ""

    def __post_init__(self) -> None:
        for name in ("name", "precision", "reference"):
            if not isinstance(getattr(self, name), str):
                raise LatencyTableError(f"device model field {name} must be a string, got {getattr(self, name)!r}")
        for name, (low, high) in _DEVICE_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not finite_number(value):
                raise LatencyTableError(f"device model {self.name!r}: {name} must be a finite number, got {value!r}")
            if not low <= value <= high:
                raise LatencyTableError(
                    f"device model {self.name!r}: {name} must be within {low:g}..{high:g}, got {value!r} (a device "
                    "no machine is; check the table's model fields)"
                )
        if self.precision not in ("fp32", "fp16"):
            raise LatencyTableError(f"device model {self.name!r}: precision must be fp32 or fp16")

    @property
    def element_size(self) -> int:
        return 2 if self.precision == "fp16" else 4

    def op_ms(self, key: OpKey) -> float:
        """Modelled time of one op, or of a ``fixed`` entry (image traffic + assumed post-processing)."""
        if key.kind == "fixed":
            h, w, rh, rw = (int(key[x]) for x in ("h", "w", "rh", "rw"))
            traffic = (3 * h * w * 4 + 2 * 3 * rh * rw * self.element_size) / (
                self.bandwidth_gbs * 1e9 * self.memory_efficiency
            )
            return traffic * 1e3 + self.postprocess_ms + self.fixed_kernels * self.launch_us / 1e3
        flops = 2.0 * op_macs(key)
        compute = flops / (self.peak_tflops * 1e12 * self.compute_efficiency)
        memory = op_bytes(key, self.element_size) / (self.bandwidth_gbs * 1e9 * self.memory_efficiency)
        return max(compute, memory) * 1e3 + self.launch_us / 1e3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> DeviceModel:
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise LatencyTableError(f"a device model holds the fields {sorted(known)}, got {data!r}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise LatencyTableError(f"device model is missing fields: {exc}") from exc


_ASSUMED = "efficiencies, launch cost and post-processing time are assumptions, not measurements"

#: Published peaks (NVIDIA data sheets): dense FP16 tensor-core TFLOP/s and memory bandwidth.
GPU_MODELS: dict[str, DeviceModel] = {
    "v100-trt": DeviceModel(
        "NVIDIA Tesla V100 SXM2 (TensorRT, modelled)",
        "fp16",
        125.0,
        900.0,
        compute_efficiency=0.3,
        memory_efficiency=0.7,
        launch_us=4.0,
        postprocess_ms=1.5,
        reference="V100 data sheet: 125 TFLOPS FP16 tensor, 900 GB/s HBM2; " + _ASSUMED,
    ),
    "t4-trt": DeviceModel(
        "NVIDIA T4 (TensorRT, modelled)",
        "fp16",
        65.0,
        320.0,
        compute_efficiency=0.3,
        memory_efficiency=0.7,
        launch_us=5.0,
        postprocess_ms=2.5,
        reference="T4 data sheet: 65 TFLOPS FP16 tensor, 320 GB/s GDDR6; " + _ASSUMED,
    ),
    "a100-trt": DeviceModel(
        "NVIDIA A100 SXM4 40GB (TensorRT, modelled)",
        "fp16",
        312.0,
        1555.0,
        compute_efficiency=0.3,
        memory_efficiency=0.7,
        launch_us=3.0,
        postprocess_ms=1.0,
        reference="A100 data sheet: 312 TFLOPS FP16 tensor (dense), 1555 GB/s HBM2; " + _ASSUMED,
    ),
}
