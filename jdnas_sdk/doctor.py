"""``jdnas doctor``: what this machine can measure, in one screen, before profiling new hardware.

It reports the CPU, the GPU torch sees (with compute capability, driver and clocks), the CUDA
torch was built with, TensorRT (its version and wheel CUDA variant, or why it cannot be
imported), the native profiler, ONNX Runtime's execution providers, and for every target table
it can find whether its misses can be measured here or only modelled/interpolated, and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import onnxruntime as ort
import torch

from .errors import LatencyTableError
from .latency.backends.tensorrt_native import profiler_status
from .latency.backends.trt_compat import TARGET_REQUIREMENTS, target_support, trt_version
from .latency.gpu import GpuInfo, gpu_info, tensorrt_cuda_variant
from .latency.local import local_device, local_table_path
from .latency.table import LatencyTable, tables_dirs
from .machine import cpu_model

__all__ = ["TargetStatus", "DoctorReport", "doctor", "format_report"]


@dataclass(frozen=True)
class TargetStatus:
    """One target table as this machine can use it: ``measurable`` when its misses can be
    measured here (this machine is its device), with ``how`` saying why or why not."""

    target: str
    source: str
    device: str
    measurable: bool
    how: str


@dataclass(frozen=True)
class DoctorReport:
    """Everything ``jdnas doctor`` prints (see :func:`format_report`)."""

    cpu: str
    cores: int
    torch: str
    torch_cuda: str | None
    gpu: GpuInfo | None
    gpu_reason: str
    tensorrt: str | None
    tensorrt_reason: str
    tensorrt_variant: str
    native_profiler: str
    ort_version: str
    ort_providers: tuple[str, ...]
    targets: tuple[TargetStatus, ...] = field(default_factory=tuple)

    @property
    def modelled_only(self) -> list[str]:
        return [t.target for t in self.targets if not t.measurable]


def _tensorrt() -> tuple[str | None, str]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        return None, f"not importable ({exc}): pip install tensorrt on a machine with an NVIDIA GPU"
    except OSError as exc:  # the bindings are there, the libraries not
        return None, f"installed but its libraries do not load ({exc})"
    return str(trt.__version__), ""


def _target_status(table: LatencyTable, gpu: GpuInfo | None, tensorrt: str | None) -> TargetStatus:
    requirement = TARGET_REQUIREMENTS.get(table.target)
    device = table.fingerprint.device
    if requirement is not None:
        needs = requirement.describe()
        missing = []
        if gpu is None:
            missing.append("no GPU here")
        elif gpu.compute_capability != requirement.compute_capability:
            missing.append(f"this GPU is {gpu.name} (SM {gpu.sm})")
        if tensorrt is None:
            missing.append("no TensorRT here")
        elif target_support(table.target, tensorrt):
            missing.append(f"TensorRT {tensorrt} here is outside that range")
        kind = "modelled (roofline)" if table.modelled else "measured elsewhere"
        if missing:
            return TargetStatus(
                table.target, table.source, device, False, f"{kind}; measuring it needs {needs}; {', '.join(missing)}"
            )
        return TargetStatus(table.target, table.source, device, True, f"{kind}; this machine can profile it ({needs})")
    if table.modelled:
        return TargetStatus(table.target, table.source, device, False, "modelled (roofline): no device to measure")
    here = local_device(table)
    if here == table.fingerprint:
        return TargetStatus(
            table.target,
            table.source,
            device,
            True,
            "measured on this machine's device and software: misses are measured here",
        )
    if here is not None:  # by name it resolves to this machine's own table (resolve_local)
        cached = local_table_path(table.target, here)
        return TargetStatus(
            table.target,
            table.source,
            device,
            True,
            f"shipped table measured on [{table.fingerprint.describe()}]; by name, this machine's own table "
            f"answers ({cached}), its ops measured here on demand",
        )
    return TargetStatus(
        table.target,
        table.source,
        device,
        False,
        f"measured on [{table.fingerprint.describe()}], not this machine: misses are interpolated",
    )


def _targets(gpu: GpuInfo | None, tensorrt: str | None) -> tuple[TargetStatus, ...]:
    seen: dict[str, TargetStatus] = {}
    for directory in tables_dirs():
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            if path.stem in seen:
                continue
            try:
                table = LatencyTable.load(path)
            except LatencyTableError as exc:
                seen[path.stem] = TargetStatus(path.stem, "unreadable", "", False, str(exc))
                continue
            seen[path.stem] = _target_status(table, gpu, tensorrt)
    return tuple(seen.values())


def doctor() -> DoctorReport:
    """Inspect this machine (quick: no model is built or timed)."""
    gpu = gpu_info(0)
    gpu_reason = (
        ""
        if gpu
        else (
            "torch was built without CUDA"
            if torch.version.cuda is None
            else f"torch (CUDA {torch.version.cuda}) sees no CUDA device"
        )
    )
    tensorrt, tensorrt_reason = _tensorrt()
    return DoctorReport(
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        gpu=gpu,
        gpu_reason=gpu_reason,
        tensorrt=tensorrt,
        tensorrt_reason=tensorrt_reason,
        tensorrt_variant=tensorrt_cuda_variant(),
        native_profiler=profiler_status(),
        ort_version=ort.__version__,
        ort_providers=tuple(ort.get_available_providers()),
        targets=_targets(gpu, tensorrt),
    )


def format_report(report: DoctorReport) -> str:
    """The report as one screen of text."""
    lines = [
        f"CPU          {report.cpu}, {report.cores} cores",
        f"torch        {report.torch} (built with CUDA {report.torch_cuda or 'none'})",
        f"GPU          {report.gpu.describe() if report.gpu else 'none: ' + report.gpu_reason}",
    ]
    if report.tensorrt:
        major_minor = trt_version(report.tensorrt)
        lines.append(
            f"TensorRT     {report.tensorrt} (wheels for {report.tensorrt_variant or 'unknown CUDA'}), "
            f"major {major_minor[0]}: "
            f"{'strongly typed networks only' if major_minor[0] >= 11 else 'FP16 by builder flag'}"
        )
    else:
        lines.append(f"TensorRT     none: {report.tensorrt_reason}")
    lines += [
        f"native       {report.native_profiler}",
        f"ONNX Runtime {report.ort_version}, providers: {', '.join(report.ort_providers)}",
        "",
        "targets:",
    ]
    width = max((len(t.target) for t in report.targets), default=8)
    for status in report.targets:
        mark = "measure here" if status.measurable else "model only  "
        lines.append(f"  {status.target:<{width}}  {mark}  {status.how}")
    if report.modelled_only:
        names = ", ".join(report.modelled_only)
        lines += ["", f"{len(report.modelled_only)} target(s) can only be modelled or interpolated here: {names}."]
    return "\n".join(lines)
