"""The native TensorRT profiler (``native/trt_profiler.cpp``, built by ``CMakeLists.txt``) as a backend.

Where the binary is found (``$JDNAS_TRT_PROFILER``, ``build/jdnas_trt_profiler`` in the source
tree, or ``jdnas_trt_profiler`` on ``PATH``), ``jdnas profile --backend tensorrt`` measures op
entries with it: C++ timing has no Python callback per layer (TensorRT calls the Python
``IProfiler`` through pybind11 once per layer per run), and it runs where the Python wheels do
not match the installed TensorRT. Whole detectors are still timed through the Python API backend
(R-CNNs need torch between their engines).

The binary's JSON (one object): ``tensorrt`` (version), ``device``, ``sm``, ``cuda_driver_api``,
``cuda_runtime``, ``l2_bytes``, optionally ``driver`` and ``clocks`` (NVML), ``precision``,
``runs``, ``engine`` (the engine inspector's JSON: ``Layers`` with their ``Name``), ``wall_ms``
(one per run, CUDA events around ``enqueueV3``) and ``layer_ms`` (one object per profiled run:
layer name -> ms). :func:`entry_from_report` maps it to an op entry exactly as the Python
backend does: the op's layers summed per run, producers and reformatting layers left out.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ...detectors.onnx_fp16 import to_fp16
from ...errors import LatencyTableError
from ..gpu import gpu_info, tensorrt_cuda_variant
from ..kernels import WARM_NAME, op_onnx
from ..ops import OpKey
from ..table import Entry, Fingerprint
from .base import Timing, summarise
from .trt_compat import check_target, layer_names_from_inspector, split_layers, trt_major, trt_version

__all__ = [
    "PROFILER_ENV",
    "PROFILER_NAME",
    "find_profiler",
    "profiler_status",
    "entry_from_report",
    "NativeTensorRTBackend",
]

PROFILER_ENV = "JDNAS_TRT_PROFILER"
PROFILER_NAME = "jdnas_trt_profiler"


def find_profiler() -> Path | None:
    """The native profiler binary, if built: ``$JDNAS_TRT_PROFILER``, the source tree's ``build/``, or ``PATH``."""
    named = os.environ.get(PROFILER_ENV)
    candidates = [Path(named)] if named else []
    candidates.append(Path(__file__).resolve().parents[3] / "build" / PROFILER_NAME)
    found = shutil.which(PROFILER_NAME)
    if found:
        candidates.append(Path(found))
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def profiler_status() -> str:
    """Where the native profiler is, or how to build it."""
    found = find_profiler()
    if found:
        return f"native TensorRT profiler at {found}"
    return (
        f"native TensorRT profiler not built (cmake -S . -B build -DTensorRT_ROOT=/path/to/TensorRT && cmake --build "
        f"build, or set ${PROFILER_ENV}); the TensorRT Python API is used instead"
    )


def entry_from_report(report: dict[str, Any], *, mark: str = WARM_NAME) -> Entry:
    """An op's entry from the binary's JSON (see the module docstring)."""
    try:
        names = layer_names_from_inspector(json.dumps(report["engine"]))
        runs = report["layer_ms"]
        wall = report["wall_ms"]
    except (KeyError, TypeError, ValueError) as exc:
        raise LatencyTableError(
            f"the native profiler's report lacks {exc}: rebuild jdnas_trt_profiler from this version"
        ) from exc
    split = split_layers(names, mark)
    if not split.op:
        raise LatencyTableError(f"the engine has no layer of the op (layers: {names})")
    known = set(names)
    sums = []
    for run in runs:
        unknown = set(run) - known
        if unknown:
            raise LatencyTableError(f"the profiler reported layers the inspector did not list: {sorted(unknown)}")
        sums.append(sum(ms for name, ms in run.items() if name in split.op))
    info: dict[str, object] = {"wall_median_ms": sorted(wall)[len(wall) // 2]} if wall else {}
    if report.get("clocks"):
        info["clocks"] = report["clocks"]
    return summarise(sums, **info)


class NativeTensorRTBackend:
    """Op entries from the native profiler; detectors through the Python API backend."""

    name = "tensorrt"

    def __init__(self, binary: Path, *, precision: str = "fp16", timing: Timing | None = None) -> None:
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
        self.binary, self.precision, self.timing = binary, precision, timing or Timing()
        self.cache_path: Path | None = None
        self.about = self._run(["--info"])
        self.version = trt_version(str(self.about["tensorrt"]))

    def _run(self, args: list[str]) -> dict[str, Any]:
        run = subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=3600)
        if run.returncode != 0:
            raise LatencyTableError(f"{self.binary} failed: {run.stderr.strip()[-2000:]}")
        return json.loads(run.stdout)

    def use_cache(self, path: str | Path) -> None:
        self.cache_path = Path(path)

    def save_cache(self) -> None:
        """The binary writes the timing cache itself after each build."""

    def check_target(self, target: str) -> None:
        check_target(target, self.version)

    def fingerprint(self) -> Fingerprint:
        gpu = gpu_info(0)
        device = f"{gpu.name} (SM {gpu.sm})" if gpu else f"{self.about['device']} (SM {self.about['sm']})"
        variant = tensorrt_cuda_variant() or f"cu{int(self.about['cuda_runtime']) // 1000}"
        driver = gpu.driver if gpu else str(self.about.get("driver", ""))
        return Fingerprint(
            device=device,
            backend="tensorrt",
            backend_version=str(self.about["tensorrt"]),
            precision=self.precision,
            batch=1,
            threads=1,
            provider=variant,
            driver=driver,
            optimization="builder-default",
            machine=platform.machine(),
        )

    def measure_op(self, key: OpKey) -> Entry:
        onnx = op_onnx(key)
        if self.precision == "fp16" and trt_major(self.version) >= 11:
            onnx = to_fp16(onnx)  # 11.x: strongly typed only, FP16 comes from the graph
        runs = max(self.timing.min_runs, 20)
        with tempfile.TemporaryDirectory(prefix="jdnas-trt-") as tmp:
            path = Path(tmp) / "op.onnx"
            path.write_bytes(onnx)
            args = [
                "--onnx",
                str(path),
                "--precision",
                self.precision,
                "--warmup",
                str(self.timing.warmup),
                "--runs",
                str(runs),
            ]
            if self.cache_path is not None:
                args += ["--timing-cache", str(self.cache_path)]
            return entry_from_report(self._run(args))

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        from .tensorrt_backend import TensorRTBackend, tensorrt_available

        reason = tensorrt_available()
        if reason:
            raise LatencyTableError(f"timing a whole detector needs TensorRT's Python API: {reason}")
        return TensorRTBackend(
            precision=self.precision, timing=self.timing, cache_path=self.cache_path
        ).measure_detector(model, image_size, seed=seed)
