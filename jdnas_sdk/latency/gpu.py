"""What a GPU measurement depends on beyond the GPU's name: compute capability, the NVIDIA
driver, clocks, and which CUDA major TensorRT's wheels were built for.

``torch.version.cuda`` is the CUDA toolkit torch was built with, not the driver: two machines with
the same torch and different drivers (or TensorRT wheels for CUDA 12 and 13) time differently, so
the fingerprint records the driver from ``nvidia-smi`` and the TensorRT wheel's CUDA variant.
Clocks change under load and with power limits; they are recorded with each entry (``info``),
not in the fingerprint, so that a table stays one device.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["GpuInfo", "gpu_info", "parse_nvidia_smi", "tensorrt_cuda_variant", "NVIDIA_SMI_QUERY"]

#: The fields asked of ``nvidia-smi --query-gpu`` (in this order).
NVIDIA_SMI_QUERY = (
    "name",
    "driver_version",
    "compute_cap",
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "clocks.max.mem",
)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as measurements need it described; clocks in MHz (``None``: unknown)."""

    name: str
    driver: str
    compute_capability: tuple[int, int]
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    max_mem_clock_mhz: int | None = None

    @property
    def sm(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def clocks(self) -> dict[str, int]:
        """The known clocks, for an entry's ``info``."""
        names = ("sm_clock_mhz", "mem_clock_mhz", "max_sm_clock_mhz", "max_mem_clock_mhz")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def describe(self) -> str:
        clocks = f", SM clock {self.sm_clock_mhz}/{self.max_sm_clock_mhz} MHz" if self.sm_clock_mhz else ""
        return f"{self.name} (SM {self.sm}), driver {self.driver or 'unknown'}{clocks}"


def _int(text: str) -> int | None:
    match = re.match(r"\s*(\d+)", text)
    return int(match.group(1)) if match else None


def parse_nvidia_smi(line: str) -> GpuInfo:
    """A :class:`GpuInfo` from one line of ``nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY>
    --format=csv,noheader,nounits``; fields it cannot read are ``None`` ("[N/A]" on some GPUs)."""
    fields = [f.strip() for f in line.strip().split(",")]
    if len(fields) != len(NVIDIA_SMI_QUERY):
        raise ValueError(
            f"expected {len(NVIDIA_SMI_QUERY)} comma-separated fields ({', '.join(NVIDIA_SMI_QUERY)}), got {line!r}"
        )
    name, driver, cap, *clocks = fields
    major, _, minor = cap.partition(".")
    capability = (int(major), int(minor or 0)) if major.isdigit() else (0, 0)
    sm, mem, max_sm, max_mem = (_int(c) for c in clocks)
    return GpuInfo(name, driver, capability, sm, mem, max_sm, max_mem)


def gpu_info(index: int = 0) -> GpuInfo | None:
    """The GPU ``index`` as ``nvidia-smi`` reports it, completed by torch where ``nvidia-smi`` is
    missing (then the driver is the CUDA driver API version); ``None`` without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return None
    smi = shutil.which("nvidia-smi")
    if smi:
        run = subprocess.run(
            [smi, f"--query-gpu={','.join(NVIDIA_SMI_QUERY)}", "--format=csv,noheader,nounits", "-i", str(index)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if run.returncode == 0 and run.stdout.strip():
            return parse_nvidia_smi(run.stdout.strip().splitlines()[0])
    version = torch._C._cuda_getDriverVersion() if hasattr(torch._C, "_cuda_getDriverVersion") else 0
    driver = f"CUDA driver API {version // 1000}.{version % 1000 // 10}" if version else ""
    return GpuInfo(torch.cuda.get_device_name(index), driver, torch.cuda.get_device_capability(index))


def tensorrt_cuda_variant(distributions: list[str] | None = None) -> str:
    """The CUDA major TensorRT's installed wheels target (``cu12``, ``cu13``), from the wheel names
    (``tensorrt-cu12``, ``tensorrt_cu12_libs``); ``""`` when none is installed or they disagree."""
    if distributions is None:
        distributions = [d.metadata["Name"] or "" for d in importlib.metadata.distributions()]
    variants = {m.group(1) for name in distributions if (m := re.match(r"tensorrt[-_](cu\d+)", name.lower()))}
    return variants.pop() if len(variants) == 1 else ""
