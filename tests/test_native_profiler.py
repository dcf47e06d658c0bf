"""The native TensorRT profiler: its CMake configure (here, without TensorRT: succeeds and says
what it skipped), the mapping of its JSON to op entries, and (where built, on a GPU) a run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from jdnas_sdk.errors import LatencyTableError
from jdnas_sdk.latency.backends.tensorrt_native import entry_from_report, find_profiler, profiler_status
from jdnas_sdk.latency.kernels import WARM_NAME
from jdnas_sdk.latency.ops import OpKey

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_configure_succeeds_without_tensorrt_and_says_why(tmp_path: Path) -> None:
    run = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"), "-DTensorRT_ROOT=" + str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "native TensorRT profiler SKIPPED: TensorRT was not found" in run.stdout
    assert "-DTensorRT_ROOT=" in run.stdout and "TensorRT's Python API instead" in run.stdout
    assert not list((tmp_path / "build").glob("jdnas_trt_profiler*"))


def _report(layers: list[str], runs: list[dict[str, float]]) -> dict:
    return {
        "tensorrt": "10.3.0",
        "device": "NVIDIA T4",
        "sm": "7.5",
        "precision": "fp16",
        "runs": len(runs),
        "engine": {"Layers": [{"Name": n} for n in layers], "Bindings": ["x", "y"]},
        "wall_ms": [0.5] * len(runs),
        "layer_ms": runs,
        "clocks": {"sm_clock_mhz": 1590},
    }


def test_report_maps_to_the_ops_layers_only() -> None:
    producer, op, reformat = (
        f"/{WARM_NAME}_0/Conv",
        "/op/conv/Conv + /op/Relu",
        "Reformatting CopyNode for Input Tensor 0",
    )
    runs = [
        {producer: 0.1, op: 0.3, reformat: 0.05},
        {producer: 0.1, op: 0.5, reformat: 0.05},
        {producer: 0.1, op: 0.4, reformat: 0.05},
    ]
    entry = entry_from_report(json.loads(json.dumps(_report([producer, reformat, op], runs))))
    assert entry.median_ms == pytest.approx(0.4) and entry.samples == 3
    assert entry.info["wall_median_ms"] == 0.5 and entry.info["clocks"] == {"sm_clock_mhz": 1590}
    with pytest.raises(LatencyTableError, match="did not list"):
        entry_from_report(_report([producer, op], [{op: 0.3, "mystery": 1.0}]))
    with pytest.raises(LatencyTableError, match="no layer of the op"):
        entry_from_report(_report([producer], [{producer: 0.1}]))
    with pytest.raises(LatencyTableError, match="rebuild"):
        entry_from_report({"engine": {"Layers": []}})


def test_status_says_how_to_build_it() -> None:
    if find_profiler() is None:
        assert "cmake -S . -B build -DTensorRT_ROOT=" in profiler_status()
    else:
        assert str(find_profiler()) in profiler_status()


@pytest.mark.tensorrt
@pytest.mark.skipif(
    find_profiler() is None or not torch.cuda.is_available(),
    reason="the native profiler is not built here, or there is no CUDA device",
)
def test_native_profiler_measures_an_op(tmp_path: Path) -> None:
    from jdnas_sdk.latency.backends.tensorrt_native import NativeTensorRTBackend

    backend = NativeTensorRTBackend(find_profiler(), precision="fp16")  # type: ignore[arg-type]
    backend.use_cache(tmp_path / "c.trt-timing-cache")
    entry = backend.measure_op(OpKey.parse("conv(n=1,cin=64,cout=64,k=3,s=1,g=1,h=64,w=64,norm=bn,act=relu,add=1)"))
    assert 0 < entry.median_ms <= entry.info["wall_median_ms"]
    assert (tmp_path / "c.trt-timing-cache").stat().st_size > 0
