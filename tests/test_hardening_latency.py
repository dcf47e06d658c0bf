"""Latency tables (issue 16, items 4 and 9): damaged tables are a LatencyTableError naming file and
field; ``cpu-ort`` on a machine that is not the shipped table's answers from this machine's own
cached table, measuring only the handful of kernels it lacks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from jdnas_sdk import build_detector, standard_arch
from jdnas_sdk.errors import LatencyTableError, UnsupportedModelError
from jdnas_sdk.latency import (
    DeviceMismatchWarning,
    Entry,
    Fingerprint,
    LatencyTable,
    OrtBackend,
    estimate_latency,
    fixed_key,
    load_table,
    lower,
    op_macs,
)
from jdnas_sdk.latency.backends.base import Timing
from jdnas_sdk.latency.local import cache_dir, describe_table

from .conftest import tiny_spec

SIZE = (64, 64)


def _fast_backend() -> OrtBackend:
    """ONNX Runtime on this CPU with a short timing: the fingerprint (what a table records) is the standard one."""
    return OrtBackend(flush_mib=1, timing=Timing(warmup=1, min_runs=3, max_runs=5, min_time_s=0.0))


@pytest.fixture
def foreign_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 'shipped' cpu-ort table measured on another CPU, found first by name; a fresh user cache."""
    tables = tmp_path / "tables"
    here = OrtBackend().fingerprint()
    other = Fingerprint(**{**here.__dict__, "device": "Another CPU (the table's own)"})
    reference = LatencyTable(target="cpu-ort", source="measured", fingerprint=other)
    reference.put(fixed_key(tiny_spec(), SIZE), Entry(5.0, source="residual"))
    reference.save(tables / "cpu-ort.json")
    monkeypatch.setenv("JDNAS_LATENCY_TABLES", str(tables))
    monkeypatch.setenv("JDNAS_CACHE", str(tmp_path / "cache"))
    return tables / "cpu-ort.json"


def test_cpu_ort_on_a_new_machine_measures_a_handful_of_kernels_and_caches_them(
    foreign_reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = load_table("cpu-ort")
    assert table.fingerprint == OrtBackend().fingerprint() and len(table) == 0
    assert table.path is not None and cache_dir() in table.path.parents and not table.path.exists()
    spec, arch = tiny_spec(min_size=64, max_size=64), standard_arch("resnet18")
    ops = sorted({k for _, stage in lower(spec, arch, SIZE).stages for k, _ in stage}, key=str)
    left = sorted(ops, key=lambda k: (op_macs(k), str(k)))[:3]  # the three smallest kernels
    for key in ops:  # seed the cache with all but a handful (a whole detector takes minutes)
        if key not in left:
            table.put(key, Entry(0.01, samples=1))
    table.put(fixed_key(spec, SIZE), Entry(1.0, samples=1, source="residual"))
    table.save()
    model = build_detector(spec, arch)
    first = estimate_latency(model, target="cpu-ort", input_size=SIZE, backend=_fast_backend())
    assert "this machine's cached table" in first.table and str(table.path) in first.table
    assert "measuring 3 cpu-ort kernels on this machine" in capsys.readouterr().err
    cached = LatencyTable.load(table.path)
    assert all(cached.get(k).samples >= 3 for k in left)
    second = estimate_latency(model, target="cpu-ort", input_size=SIZE, on_miss="error")
    assert not second.misses and second.total_ms == pytest.approx(first.total_ms)
    assert "Another CPU" not in second.table and "table: cpu-ort: measured" in str(second)


def test_the_shipped_table_answers_on_its_own_cpu_and_is_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = tmp_path / "tables"
    spec, arch = tiny_spec(min_size=64, max_size=64), standard_arch("resnet18")
    ops = sorted(
        {k for _, stage in lower(spec, arch, SIZE).stages for k, _ in stage}, key=lambda k: (op_macs(k), str(k))
    )
    mine = LatencyTable(target="cpu-ort", source="measured", fingerprint=OrtBackend().fingerprint())
    for key in ops[2:]:  # shipped: all but the two smallest kernels, with a mark no measurement gives
        mine.put(key, Entry(0.0123, samples=1))
    mine.put(fixed_key(spec, SIZE), Entry(1.0, samples=1, source="residual"))
    shipped = mine.save(tables / "cpu-ort.json").read_bytes()
    monkeypatch.setenv("JDNAS_LATENCY_TABLES", str(tables))
    monkeypatch.setenv("JDNAS_CACHE", str(tmp_path / "cache"))
    table = load_table("cpu-ort")
    assert len(table) == len(mine) and table.get(ops[-1]).median_ms == 0.0123  # the shipped entries answer
    assert table.path is not None and cache_dir() in table.path.parents and not table.path.exists()
    model = build_detector(spec, arch)
    first = estimate_latency(model, target="cpu-ort", input_size=SIZE, backend=_fast_backend())
    assert "measuring 2 cpu-ort kernels on this machine" in capsys.readouterr().err  # the two it lacks, once
    assert str(tables / "cpu-ort.json") in first.table and str(table.path) in first.table  # both named
    assert (tables / "cpu-ort.json").read_bytes() == shipped  # the shipped file is only ever read
    cached = LatencyTable.load(table.path)
    assert all(cached.get(k).samples >= 3 for k in ops[:2]) and cached.get(ops[-1]).median_ms == 0.0123
    again = estimate_latency(model, target="cpu-ort", input_size=SIZE, on_miss="error")  # the cache joins in
    assert not again.misses and again.total_ms == pytest.approx(first.total_ms)


def test_a_table_file_from_another_cpu_is_used_as_given_and_warns(foreign_reference: Path) -> None:
    with pytest.warns(DeviceMismatchWarning):
        table = load_table(str(foreign_reference))
    assert table.path == foreign_reference and "Another CPU" in describe_table(table)


def test_estimate_latency_of_a_string_is_unsupported_model() -> None:
    with pytest.raises(UnsupportedModelError, match="str 'fasterrcnn'"):
        estimate_latency("fasterrcnn")


def _table_file(tmp_path: Path, edit: Any) -> Path:
    path = tmp_path / "t.json"
    LatencyTable(
        target="t", source="measured", fingerprint=Fingerprint(device="cpu", backend="onnxruntime", backend_version="1")
    ).save(path)
    data = json.loads(path.read_text())
    data["entries"]["relu(c=8,h=4,w=4)"] = {"median_ms": 0.1}
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d.update(schema_version=True), "schema_version True"),
        (lambda d: d["device"].update(threads="1"), "device.threads"),
        (lambda d: d["device"].update(batch=10**30), "device.batch"),
        (lambda d: d["device"].update(device=None), "field 'device'"),
        (lambda d: d.update(notes=["x"]), "field 'notes'"),
        (lambda d: d["entries"]["relu(c=8,h=4,w=4)"].update(median_ms=10**400), "relu(c=8,h=4,w=4)"),
        (lambda d: d["entries"]["relu(c=8,h=4,w=4)"].update(samples=2**70), "samples"),
        (
            lambda d: d.update(
                source="modelled",
                model={
                    "name": "m",
                    "precision": "fp16",
                    "peak_tflops": 1,
                    "bandwidth_gbs": 1,
                    "postprocess_ms": -4_000_000,
                },
            ),
            "postprocess_ms",
        ),
        (
            lambda d: d.update(
                source="modelled", model={"name": "m", "precision": "fp16", "peak_tflops": "fast", "bandwidth_gbs": 1}
            ),
            "peak_tflops",
        ),
        *(
            (
                lambda d, f=field, v=value: d.update(
                    source="modelled",
                    model={"name": "m", "precision": "fp16", "peak_tflops": 10, "bandwidth_gbs": 100, f: v},
                ),
                f"{field} must be within",
            )  # numbers no device has, where the roofline's estimates overflow to infinity
            for field, value in (("peak_tflops", 1e-320), ("launch_us", 1e308), ("fixed_kernels", 1e300))
        ),
        (
            lambda d: d["entries"].update(
                {
                    "fixed(family=fasterrcnn,classes=9,fpn=16,levels=1234,rep=32,dets=0,h=64,w=64,rh=0,rw=64)": {
                        "median_ms": 1.0,
                        "source": "residual",
                    }
                }
            ),
            "sizes h, w, rh, rw",
        ),
    ],
)
def test_a_damaged_table_names_file_and_field(tmp_path: Path, edit: Any, field: str) -> None:
    path = _table_file(tmp_path, edit)
    with pytest.raises(LatencyTableError, match=None) as info:
        LatencyTable.load(path)
    assert str(path) in str(info.value) and field in str(info.value), str(info.value)


def test_a_deeply_nested_table_is_a_table_error(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"format": "jdnas-latency-table", "entries": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(LatencyTableError, match="nests too deeply"):
        LatencyTable.load(path)


def test_a_modelled_table_never_estimates_below_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = load_table("t4-trt")
    estimate = estimate_latency(build_detector(tiny_spec(), standard_arch("resnet18")), target=table, input_size=96)
    assert estimate.total_ms > 0 and all(op.ms >= 0 for op in estimate.ops)


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "lots", "\u0663"])
def test_a_bad_flush_size_in_the_environment_is_named_before_any_timing(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("JDNAS_FLUSH_MIB", value)
    with pytest.raises(LatencyTableError, match="JDNAS_FLUSH_MIB must be a whole number of MiB"):
        OrtBackend()
    monkeypatch.setenv("JDNAS_FLUSH_MIB", "3")
    assert OrtBackend()._flush.nbytes == 3 * 2**20 and OrtBackend(flush_mib=2)._flush.nbytes == 2 * 2**20
    monkeypatch.delenv("JDNAS_FLUSH_MIB")
    from jdnas_sdk.latency.backends.ort import MAX_FLUSH_MIB, _last_level_cache_mib

    assert OrtBackend()._flush.nbytes == min(2 * _last_level_cache_mib(), MAX_FLUSH_MIB) * 2**20


def test_one_rule_says_whose_table_answers_a_target_here(foreign_reference: Path) -> None:
    """``local_device`` is the rule resolve_local, ``jdnas profile``'s default output and ``jdnas doctor``
    follow (each restated it): another CPU's cpu-ort answers from this machine's table, this machine's
    from its own, a modelled or a GPU table from nowhere here."""
    from jdnas_sdk.latency.local import local_device, local_table_path, resolve_local

    here = OrtBackend().fingerprint()
    foreign = LatencyTable.load(foreign_reference)
    assert foreign.fingerprint != here and local_device(foreign) == here
    assert resolve_local(foreign).path == local_table_path("cpu-ort", here)
    own = LatencyTable(target="cpu-ort", source="measured", fingerprint=here)
    assert local_device(own) == here
    gpu = Fingerprint(device="Tesla V100-SXM2-16GB", backend="tensorrt", backend_version="10.3.0")
    if not torch.cuda.is_available():  # where TensorRT runs, this machine's own GPU would answer
        assert local_device(LatencyTable(target="v100-trt", source="measured", fingerprint=gpu)) is None
    assert local_device(load_table("v100-trt")) is None  # the shipped one is modelled


def test_a_table_with_an_integer_past_pythons_digit_limit_is_a_table_error(tmp_path: Path) -> None:
    path = tmp_path / "t.json"  # a traceback (ValueError from int()) before
    path.write_text('{"format": "jdnas-latency-table", "entries": [{"samples": 1' + "0" * 5000 + "}]}")
    with pytest.raises(LatencyTableError, match="t.json is not valid JSON .*4300"):
        LatencyTable.load(path)
