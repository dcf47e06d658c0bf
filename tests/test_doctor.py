"""``jdnas doctor``'s report: here (no GPU, no TensorRT) it says so and which targets can only be
modelled; with a GPU and a TensorRT it says which targets it can profile, from the compatibility rules."""

from __future__ import annotations

import pytest
import torch

from jdnas_sdk.doctor import _target_status, doctor, format_report
from jdnas_sdk.latency.backends.tensorrt_backend import tensorrt_available
from jdnas_sdk.latency.gpu import GpuInfo
from jdnas_sdk.latency.table import LatencyTable, table_path

V100 = GpuInfo("Tesla V100-SXM2-16GB", "535.104.05", (7, 0), 1530, 877, 1530, 877)


@pytest.mark.skipif(
    torch.cuda.is_available() or tensorrt_available() is None, reason="this machine has a GPU or TensorRT"
)
def test_here_it_says_no_gpu_no_tensorrt_and_what_is_modelled_only() -> None:
    report = doctor()
    text = format_report(report)
    assert report.gpu is None and report.tensorrt is None
    assert "GPU          none: " in text and "TensorRT     none: not importable" in text
    assert {"v100-trt", "t4-trt", "a100-trt"} <= set(report.modelled_only)
    assert "can only be modelled or interpolated here" in text
    assert "Volta support was removed in TensorRT 10.5" in text  # the v100-trt line names its TensorRT range
    assert "CPUExecutionProvider" in report.ort_providers and report.cores >= 1


def test_target_rules_with_a_gpu() -> None:
    table = LatencyTable.load(table_path("v100-trt"))
    assert _target_status(table, V100, "10.4.0").measurable
    too_new = _target_status(table, V100, "10.5.0")
    assert not too_new.measurable and "TensorRT 10.5.0 here is outside that range" in too_new.how
    other_gpu = _target_status(table, GpuInfo("NVIDIA T4", "535.0", (7, 5)), "10.4.0")
    assert not other_gpu.measurable and "this GPU is NVIDIA T4 (SM 7.5)" in other_gpu.how
    assert _target_status(
        LatencyTable.load(table_path("t4-trt")), GpuInfo("NVIDIA T4", "535.0", (7, 5)), "11.4.0"
    ).measurable


def test_jdnas_doctor_prints_one_screen(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from jdnas_sdk.cli import main

    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("CPU ") and "targets:" in text and "v100-trt" in text
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {t["target"] for t in data["targets"]} >= {"v100-trt", "t4-trt", "a100-trt", "cpu-ort"}


def test_a_cpu_table_measured_on_another_cpu_is_measured_here_by_name() -> None:
    """``cpu-ort`` shipped from another CPU resolves, by name, to this machine's own table (as
    ``jdnas latency`` uses it): doctor says so instead of "misses are interpolated"."""
    from dataclasses import replace

    table = LatencyTable.load(table_path("cpu-ort"))
    table.fingerprint = replace(table.fingerprint, device="Some Other CPU 9000")
    status = _target_status(table, None, None)
    assert status.measurable and "this machine's own table answers" in status.how
    assert "Some Other CPU 9000" in status.how
    from jdnas_sdk.latency.backends import local_fingerprint
    from jdnas_sdk.latency.local import local_table_path

    assert str(local_table_path("cpu-ort", local_fingerprint(table.fingerprint))) in status.how  # resolve_local's
