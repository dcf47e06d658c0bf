"""Profiling a tiny search space for real (ONNX Runtime), estimating from it, and every miss policy."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from jdnas_sdk import Arch, LatencyTableError, build, load_detector, save_detector
from jdnas_sdk.latency import (
    Entry,
    Estimator,
    LatencyTable,
    OpKey,
    OrtBackend,
    TorchBackend,
    estimate_latency,
    open_table,
    profile,
    reachable_ops,
)
from jdnas_sdk.latency.backends import RooflineBackend, Timing, make_backend, tensorrt_available
from jdnas_sdk.latency.lower import fixed_key, lower
from jdnas_sdk.latency.nms_load import nms_load
from jdnas_sdk.latency.ops import op_macs
from jdnas_sdk.latency.places import TABLES_ENV
from jdnas_sdk.latency.reach import fixed_specs
from jdnas_sdk.latency.roofline import GPU_MODELS
from jdnas_sdk.space import SearchSpace

from .conftest import tiny_spec

BASE = Arch.parse("basic:16|16:16x1|32:32x1|64:64x1|128:128x1")
SPACE = SearchSpace(BASE, width_ratios=(0.5, 1.0))
SIZE = (96, 96)
FAST = Timing(warmup=1, min_runs=3, max_runs=5, min_time_s=0.0)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> LatencyTable:
    path = tmp_path_factory.mktemp("tables") / "tiny.json"
    backend = OrtBackend(timing=FAST)
    table = open_table(path, "tiny", backend)
    return profile(table, backend, tiny_spec(), base=BASE, input_sizes=[SIZE], space=SPACE, progress=False)


def test_profile_measures_every_reachable_op_and_the_fixed_residual(profiled: LatencyTable) -> None:
    spec = tiny_spec()
    reachable = reachable_ops(spec, SPACE, SIZE)
    assert set(reachable) | {fixed_key(spec, SIZE)} == set(profiled.entries)
    assert all(
        e.median_ms > 0 and e.samples >= 3 and e.source == "measured"
        for k, e in profiled.entries.items()
        if k.kind != "fixed"
    )
    fixed = profiled.get(fixed_key(spec, SIZE))
    assert fixed is not None and fixed.source == "residual"
    assert fixed.info["detections"] == spec.detections_per_img  # full load: NMS saw real candidates
    at_ops_speed = fixed.info["end_to_end_ms"] / fixed.info.get("speed", 1.0)  # scaled to the ops' speed
    assert at_ops_speed == pytest.approx(fixed.median_ms + fixed.info["ops_ms"], rel=1e-4)
    reloaded = LatencyTable.load(profiled.path)  # type: ignore[arg-type]
    assert reloaded.entries == profiled.entries


def test_fast_and_detailed_estimates_agree_and_cover_the_space(profiled: LatencyTable) -> None:
    estimator = Estimator(profiled, tiny_spec(), SIZE, on_miss="error")
    for seed in range(20):
        arch = SPACE.sample(seed)
        detailed = estimator.estimate(arch)
        assert detailed.misses == ()
        assert detailed.total_ms == pytest.approx(estimator.total_ms(arch), rel=1e-9)
        assert detailed.total_ms == pytest.approx(sum(detailed.by_stage.values()), rel=1e-9)
        assert detailed.by_stage["fixed"] > 0 and detailed.by_stage["layer1"] > 0
    small = Arch.parse("basic:8|8:8x1|16:16x1|32:32x1|64:64x1")
    # Half the base's widths: never slower beyond timing noise (at 96 px and 8-16 channels each
    # conv is a few microseconds, so the two totals differ by less than the kernels' own spread).
    noise = sum(e.spread_ms for e in profiled.entries.values())
    assert estimator.total_ms(small) <= estimator.total_ms(BASE) + noise
    model = build(tiny_spec(), BASE)
    via_model = estimate_latency(model, target=profiled, input_size=96, on_miss="error")
    assert via_model.total_ms == pytest.approx(estimator.total_ms(BASE)) and "measured table" in str(via_model)


def _without(table: LatencyTable, key: OpKey) -> LatencyTable:
    copy_ = copy.deepcopy(table)
    del copy_.entries[key]
    copy_.path = None
    return copy_


def test_a_miss_is_measured_here_interpolated_elsewhere_or_refused_never_zero(
    profiled: LatencyTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_spec()
    key = next(k for k in profiled.entries if k.kind == "conv" and k["cin"] == 16 and k["cout"] == 16 and k["add"] == 1)
    with pytest.raises(LatencyTableError, match=str(key).replace("(", r"\(").replace(")", r"\)")):
        Estimator(_without(profiled, key), spec, SIZE, on_miss="error").estimate(BASE)
    # a table file the user named by path is profiled by that path (its name would reach another table, or
    # none), and the CLI's flag is named beside the argument (probe44: only on_miss='auto' and the name)
    copied = _without(profiled, key)
    copied.path = tmp_path / "copy-hw.json"
    with pytest.raises(LatencyTableError, match=f"--target {copied.path} ...` .*\\(`--on-miss auto`\\)"):
        Estimator(copied, spec, SIZE, on_miss="error").estimate(BASE)
    monkeypatch.setenv(TABLES_ENV, str(tmp_path / "tables"))
    copied.path = tmp_path / "tables" / "tiny.json"  # where the name finds it: the name
    copied.save()
    with pytest.raises(LatencyTableError, match="profile --target tiny ...`"):
        Estimator(copied, spec, SIZE, on_miss="error").estimate(BASE)
    estimate = Estimator(_without(profiled, key), spec, SIZE, on_miss="interpolate").estimate(BASE)
    [miss] = estimate.misses
    assert miss.key == key and miss.how == "interpolated" and miss.ms > 0
    # on times that are a known line in MACs (measured ones move with the host's load), the
    # interpolation recovers the missing op's time from its neighbours
    linear = _without(profiled, key)  # a copy
    for k, e in linear.entries.items():
        if k.kind == "conv":
            linear.entries[k] = replace(e, median_ms=0.3 + 1e-7 * op_macs(k))
    [miss] = Estimator(linear, spec, SIZE, on_miss="interpolate").estimate(BASE).misses
    assert miss.ms == pytest.approx(0.3 + 1e-7 * op_macs(key), rel=0.02)
    local = _without(profiled, key)
    local.save(tmp_path / "local.json")
    estimate = Estimator(local, spec, SIZE, backend=OrtBackend(timing=FAST)).estimate(BASE)
    assert [m.how for m in estimate.misses] == ["measured"]
    assert key in LatencyTable.load(tmp_path / "local.json").entries  # cached into the file
    bare = copy.deepcopy(profiled)
    bare.entries = {k: e for k, e in bare.entries.items() if k.kind != "conv"}
    with pytest.raises(LatencyTableError, match="no entry of the same kind"):
        Estimator(bare, spec, SIZE, on_miss="interpolate").estimate(BASE)


def test_a_missing_fixed_entry_is_measured_on_this_machine(profiled: LatencyTable) -> None:
    spec = tiny_spec()
    table = _without(profiled, fixed_key(spec, SIZE))
    estimate = Estimator(table, spec, SIZE, backend=OrtBackend(timing=FAST)).estimate(BASE)
    fixed = [m for m in estimate.misses if m.stage == "fixed"]
    assert len(fixed) == 1 and fixed[0].how == "measured" and fixed[0].ms > 0
    assert table.get(fixed_key(spec, SIZE)).source == "residual"  # type: ignore[union-attr]


def test_another_head_settings_fixed_entry_times_the_detectors_given_and_refuses_other_heads(
    profiled: LatencyTable, tmp_path: Path
) -> None:
    from jdnas_sdk.latency.reach import in_setting
    from jdnas_sdk.morph import morph_to
    from jdnas_sdk.student import Heads, Student

    spec = tiny_spec()
    grid = {"fpn": (1.0,), "size": (1.0,), "proposals": (50, 1000), "box": (0.5, 1.0), "mask": (1.0,)}
    space = SearchSpace(BASE, width_ratios=(0.5, 1.0), spec=spec, heads=grid)
    [fewer] = [v for v in fixed_specs(spec, space) if v != spec]
    backend = OrtBackend(timing=FAST)
    table = open_table(tmp_path / "t.json", "tiny", backend)
    for key, entry in profiled.entries.items():
        table.put(key, entry)
    model = build(spec, BASE)
    narrow = SPACE.sample(1)
    half_box = Student(narrow, replace(Heads.of(spec), box=spec.representation_size // 2))
    asked = []

    def trained(variant: object) -> list[torch.nn.Module]:
        asked.append(variant)
        heads = Heads.of(variant)  # type: ignore[arg-type]
        return [
            morph_to(model, Student(BASE, heads)),
            morph_to(model, Student(narrow, heads)),
            morph_to(model, in_setting(half_box, variant)),  # type: ignore[arg-type]
        ]

    with pytest.raises(LatencyTableError, match="runs other head settings"):
        profile(table, backend, spec, base=BASE, input_sizes=[SIZE], space=space, progress=False,
                variant_models=lambda v: [model])  # fmt: skip
    assert fixed_key(fewer, SIZE) not in table  # nothing half-made
    profile(table, backend, spec, base=BASE, input_sizes=[SIZE], space=space, model=model, variant_models=trained,
            progress=False)  # fmt: skip
    assert asked == [fewer]  # the base setting's entry was already there; only the missing one is built
    entry = table.get(fixed_key(fewer, SIZE))
    assert entry is not None and entry.info["detectors"] == 3 and len(entry.info["residuals_ms"]) == 3
    assert entry.median_ms == pytest.approx(sum(entry.info["residuals_ms"]) / 3, rel=1e-4)
    assert entry.info["nms_tests"] == [nms_load(m, SIZE) for m in trained(fewer)]  # each one's NMS load beside it
    assert "nms_load" not in entry.info  # a timing's own load is in the list, not left in the entry
    # a detector with another box head (a kernel the table times) belongs to the same fixed entry, and
    # its residual subtracts its own box head's kernels, not the setting's
    estimator = Estimator(table, fewer, SIZE, on_miss="error")
    own_ops = estimator.ops_ms(in_setting(half_box, fewer))
    setting_ops = estimator.ops_ms(Student(narrow, Heads.of(fewer)))
    # (which of the two is faster is the kernels' timing, not asserted: tiny box heads can tie)
    ops_each = entry.info["detector_ops_ms"]
    assert ops_each[1] == pytest.approx(setting_ops, rel=1e-5) and ops_each[2] == pytest.approx(own_ops, rel=1e-5)


def test_a_fixed_entry_is_scaled_to_the_speed_its_ops_were_measured_at(profiled: LatencyTable, tmp_path: Path) -> None:
    from dataclasses import replace as replace_entry

    from jdnas_sdk.latency.drift import machine_speed, reference_ops

    spec = tiny_spec()
    refs = reference_ops(profiled, spec, BASE, SIZE, count=4)
    work = Counter[OpKey]()
    for _, ops in lower(spec, BASE, SIZE).stages:
        for k, n in ops:
            work[k] += op_macs(k) * n
    assert len(refs) == 4 and sorted((work[k] for k, _ in refs), reverse=True) == sorted(work.values())[::-1][:4]
    # a table whose ops were measured while this machine ran 1000x slower (at 96 px this tiny detector's
    # kernels are a small part of its time, so only a large factor makes the unscaled residual negative;
    # 100x did not, once, with the end-to-end timing inflated by a busy machine)
    backend = OrtBackend(timing=FAST)
    slow = open_table(tmp_path / "slow.json", "tiny", backend)
    for key, entry in profiled.entries.items():
        if key.kind != "fixed":
            slow.put(key, replace_entry(entry, median_ms=1000 * entry.median_ms))
    assert machine_speed(slow, backend, refs) < 0.05  # now runs much faster than that table says
    with pytest.raises(LatencyTableError, match="inflated"):  # unscaled, the residual would be negative
        profile(slow, backend, spec, base=BASE, input_sizes=[SIZE], space=SPACE, progress=False, reference_count=0)
    profile(slow, backend, spec, base=BASE, input_sizes=[SIZE], space=SPACE, progress=False)
    entry = slow.get(fixed_key(spec, SIZE))
    assert entry is not None and entry.median_ms > 0 and entry.info["speed"] < 0.05
    residual = entry.info["end_to_end_ms"] / entry.info["speed"] - entry.info["ops_ms"]
    assert entry.median_ms == pytest.approx(residual, rel=1e-4)


def test_every_fixed_entry_reads_the_machine_speed_on_the_base_own_largest_ops(
    profiled: LatencyTable, tmp_path: Path
) -> None:
    """A head setting at half the input size still reads the machine's speed on the base's largest
    ops at the base's size (small ops read it badly): made 100x slow in the table, those two ops
    scale both fixed entries, the half-size one included, whose own ops are untouched."""
    from dataclasses import replace as replace_entry

    from jdnas_sdk.latency.drift import reference_ops

    spec = tiny_spec()
    one = {"fpn": (1.0,), "proposals": (1000,), "box": (1.0,)}  # only the input size varies
    space = SearchSpace(BASE, spec=spec, width_ratios=(1.0,), heads={**one, "size": (0.5, 1.0)})
    refs = dict(reference_ops(profiled, spec, BASE, SIZE, count=2))
    backend = OrtBackend(timing=FAST)
    table = open_table(tmp_path / "refs.json", "tiny", backend)
    for key, entry in profiled.entries.items():
        if key.kind != "fixed":
            table.put(key, replace_entry(entry, median_ms=entry.median_ms * (100 if key in refs else 1)))
    profile(table, backend, spec, base=BASE, input_sizes=[SIZE], space=space, progress=False, reference_count=2)
    fixed = {k: e for k, e in table.entries.items() if k.kind == "fixed"}
    assert len(fixed) == 2 and min(k.values[-2] for k in fixed) < 96 == max(k.values[-2] for k in fixed)
    assert all(e.info["speed"] < 0.05 for e in fixed.values()), {k: e.info.get("speed") for k, e in fixed.items()}


def test_a_speed_reading_within_the_tolerance_is_not_applied() -> None:
    from jdnas_sdk.latency.drift import SPEED_TOLERANCE, applied_speed

    assert SPEED_TOLERANCE == 0.10
    assert applied_speed(0.93) == applied_speed(1.08) == 1.0  # a reading's own error on a quiet machine
    assert applied_speed(0.85) == 0.85 and applied_speed(1.2) == 1.2 and applied_speed(0.01) == 0.01


def test_profiling_into_a_table_of_another_device_is_refused(profiled: LatencyTable) -> None:
    with pytest.raises(LatencyTableError, match="threads: 1 != 2"):
        open_table(profiled.path, "tiny", OrtBackend(threads=2))  # type: ignore[arg-type]
    with pytest.raises(LatencyTableError, match="not 'other'"):
        open_table(profiled.path, "other", OrtBackend())  # type: ignore[arg-type]


def test_a_modelled_table_models_its_misses_and_says_so(tmp_path: Path) -> None:
    backend = RooflineBackend(GPU_MODELS["v100-trt"])
    table = profile(
        open_table(tmp_path / "v100.json", "v100-trt", backend),
        backend,
        tiny_spec(),
        base=BASE,
        input_sizes=[SIZE],
        space=SPACE,
        progress=False,
    )
    loaded = LatencyTable.load(tmp_path / "v100.json")
    assert loaded.modelled and loaded.model == GPU_MODELS["v100-trt"].to_dict()
    assert {e.source for e in loaded.entries.values()} == {"modelled"}
    wide = Arch.parse("basic:32|32:32x3|64:64x2|128:128x2|256:256x2")  # outside the profiled grid
    estimate = Estimator(table, tiny_spec(), SIZE).estimate(wide)
    assert estimate.modelled and "MODELLED" in str(estimate) and estimate.misses
    assert {m.how for m in estimate.misses} == {"modelled"}
    assert Estimator(table, tiny_spec(), SIZE).total_ms(wide) > Estimator(table, tiny_spec(), SIZE).total_ms(BASE)


def test_the_torch_backend_measures_ops_and_detectors() -> None:
    backend = TorchBackend(timing=FAST)
    entry = backend.measure_op(OpKey.parse("conv(n=1,cin=16,cout=32,k=3,s=2,g=1,h=24,w=24,norm=bn,act=relu,add=0)"))
    assert entry.median_ms > 0 and entry.samples >= 3
    whole = backend.measure_detector(build(tiny_spec(), BASE), SIZE)
    assert whole.median_ms > entry.median_ms and whole.info["detections"] > 0
    assert backend.fingerprint().backend == "torch"
    with pytest.raises(LatencyTableError, match="unknown backend"):
        make_backend("tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_torch_backend_times_cuda_with_events() -> None:
    backend = TorchBackend(device="cuda", precision="fp16", timing=FAST)
    entry = backend.measure_op(OpKey.parse("conv(n=1,cin=64,cout=64,k=3,s=1,g=1,h=64,w=64,norm=bn,act=relu,add=1)"))
    assert entry.median_ms > 0 and backend.fingerprint().provider == "cuda"


@pytest.mark.tensorrt
@pytest.mark.skipif(tensorrt_available() is not None, reason=str(tensorrt_available()))
def test_tensorrt_builds_one_engine_per_op_and_times_the_detector() -> None:
    backend = make_backend("tensorrt", precision="fp16", timing=FAST)
    entry = backend.measure_op(OpKey.parse("conv(n=1,cin=64,cout=64,k=3,s=1,g=1,h=64,w=64,norm=bn,act=relu,add=1)"))
    assert entry.median_ms > 0
    whole = backend.measure_detector(build(tiny_spec(), BASE), SIZE)
    assert whole.median_ms > 0


def _jdnas(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jdnas_sdk.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_kill_9_during_profile_then_the_same_command_resumes(tmp_path: Path) -> None:
    model_file = tmp_path / "tiny.pt"
    save_detector(build(tiny_spec(), BASE), model_file)
    out = tmp_path / "tiny.json"
    heads = {
        "fpn": (0.5, 1.0),
        "size": (1.0,),
        "proposals": (1000,),
        "box": (1.0,),
        "mask": (1.0,),
        "convs": (4,),
        "width": (1.0,),
    }  # the detector-level space, on a grid small enough for a test
    args = [
        "profile",
        "--target",
        "tiny",
        "--model",
        str(model_file),
        "--input-size",
        "96",
        "--out",
        str(out),
        "--width-ratios",
        "1",
        "--min-runs",
        "3",
        "--min-time",
        "0",
        "--fixed-students",
        "1",  # few kernels: minutes
        "--variant-students",
        "1",
        "--reference-ops",
        "2",
        "--heads",
        *(f"{k}={','.join(str(v) for v in vs)}" for k, vs in heads.items()),
    ]  # on a large-cache CPU otherwise
    first = _jdnas(*args)
    deadline = time.monotonic() + 120
    while first.poll() is None and time.monotonic() < deadline:
        if out.exists() and len(LatencyTable.load(out)) >= 20:
            break
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = LatencyTable.load(out)
    assert 20 <= len(before) and fixed_key(tiny_spec(), SIZE) not in before, "the first run finished before the kill"
    second = _jdnas(*args)
    text, _ = second.communicate(timeout=300)
    assert second.returncode == 0, text
    assert f"({len(before)} entries already there)" in text
    after = LatencyTable.load(out)
    assert fixed_key(tiny_spec(), SIZE) in after
    assert all(after.entries[k] == e for k, e in before.entries.items())  # nothing re-measured
    space = SearchSpace(BASE, width_ratios=(1,), spec=tiny_spec(), heads=heads)
    fixed = {fixed_key(s, SIZE) for s in fixed_specs(tiny_spec(), space)}
    assert len(fixed) == 2 and fixed <= set(after.entries)  # one per FPN width
    # every fixed entry averages the trained model and one student, each given that head setting
    assert all(after.entries[k].info["detectors"] == 2 for k in fixed)
    assert len(after) == len(reachable_ops(tiny_spec(), space, SIZE)) + len(fixed)


def test_latency_command_estimates_measures_and_reports_misses(profiled: LatencyTable, tmp_path: Path) -> None:
    model_file = tmp_path / "tiny.pt"
    save_detector(build(tiny_spec(), BASE), model_file)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "jdnas_sdk.cli",
            "latency",
            "--model",
            str(model_file),
            "--target",
            str(profiled.path),
            "--measure",
            "--json",
            str(tmp_path / "e.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "estimated latency on tiny" in run.stdout and "measured on this machine" in run.stdout
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "jdnas_sdk.cli",
            "latency",
            "--model",
            str(model_file),
            "--target",
            str(profiled.path),
            "--arch",
            "basic:40|40:40x1|64:64x1|128:128x1|256:256x1",
            "--on-miss",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "has no entry for conv(" in run.stderr and "jdnas profile" in run.stderr


def test_profile_refit_data_makes_the_fixed_entries_students_as_the_search_does(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--refit-data``: the students a fixed entry is timed on have their cut towers refit (their
    scores, and so NMS's work, are the search's candidates'); the others are the plain morphs."""
    from jdnas_sdk.cli import build_parser, main
    from jdnas_sdk.cli.profile import _fixed_models
    from jdnas_sdk.detectors import describe

    spec = tiny_spec("retinanet")
    model_file = save_detector(build(spec, BASE), tmp_path / "tiny.pt")
    model = load_detector(model_file)
    spec, base = describe(model)
    space = SearchSpace(BASE, width_ratios=(1,), spec=spec)
    common = ["profile", "--target", "t", "--model", str(model_file), "--fixed-students", "4"]
    plain, _ = _fixed_models(build_parser().parse_args(common), model, spec, base, space)
    refit, _ = _fixed_models(
        build_parser().parse_args([*common, "--refit-data", str(synth_root)]), model, spec, base, space
    )
    depths = [len(m.head.classification_head.conv) for m in plain]
    assert sorted(depths) == [1, 2, 3, 4]  # spread over every tower depth
    for a, b, depth in zip(plain, refit, depths, strict=True):
        same = all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
        assert same == (depth == 4), depth
    argv = [
        "profile",
        "--target",
        "t",
        "--refit-data",
        str(synth_root),
        "--family",
        "retinanet",
        "--backbone",
        "resnet18",
    ]
    assert main(argv) == 2
    assert "give --model too" in capsys.readouterr().err


def test_an_estimate_given_a_detectors_nms_load_follows_it(profiled: LatencyTable, tmp_path: Path) -> None:
    from jdnas_sdk.latency.nms_load import LOADS
    from jdnas_sdk.student import Student

    spec = tiny_spec()
    key = fixed_key(spec, SIZE)
    fixed = profiled.get(key)
    assert fixed is not None and len(fixed.info[LOADS]) == 1 and fixed.info[LOADS][0] > 0  # kept when profiled
    table = copy.deepcopy(profiled)
    table.path = None
    loads = [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    for size in (64, 96, 128):  # residuals costing 2 ns a test beyond each entry's own
        own = fixed.median_ms if size == SIZE[0] else 1.0
        residuals = [own + 2e-6 * (x - 2_500_000) for x in loads]
        info = {"residuals_ms": residuals, LOADS: loads}
        entry_key = fixed_key(tiny_spec(min_size=size, max_size=size), (size, size))
        table.put(entry_key, Entry(own, source="residual", info=info))
    assert len([k for k in table.entries if k.kind == "fixed"]) == 3
    estimator = Estimator(table, spec, SIZE, on_miss="error")
    plain = estimator.total_ms(BASE)
    assert estimator.total_ms(BASE, nms_tests=3_500_000) == pytest.approx(plain + 2.0, rel=1e-6)
    assert estimator.total_ms(Student.of(spec, BASE), nms_tests=500_000) == pytest.approx(plain - 4.0, rel=1e-6)
    detailed = estimator.estimate(BASE, nms_tests=3_500_000)
    assert detailed.total_ms == pytest.approx(plain + 2.0, rel=1e-6) and detailed.nms_tests == 3_500_000
    assert "NMS load (3,500,000 IoU tests" in str(detailed) and detailed.to_dict()["nms_tests"] == 3_500_000
    assert estimator.estimate(BASE).nms_tests is None
    model = build(spec, BASE)  # a detector's own load is counted when estimating it
    estimated = estimate_latency(model, target=table, input_size=SIZE, on_miss="error", save=False)
    assert estimated.nms_tests == nms_load(model, SIZE)
    assert estimated.total_ms == pytest.approx(estimator.total_ms(BASE, nms_tests=nms_load(model, SIZE)), rel=1e-6)
    table.save(tmp_path / "loads.json")  # and `jdnas latency --model` says so
    save_detector(model, tmp_path / "m.pt")
    run = subprocess.run(
        [sys.executable, "-m", "jdnas_sdk.cli", "latency", "--model", str(tmp_path / "m.pt"), "--target",
         str(tmp_path / "loads.json"), "--on-miss", "error", "--json", str(tmp_path / "e.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "e.json").read_text())["estimate"]["nms_tests"] == nms_load(model, SIZE)
    assert "NMS load" in run.stdout
    guess = subprocess.run(  # a student that does not exist yet (--arch, not measured) keeps the entry's mean
        [sys.executable, "-m", "jdnas_sdk.cli", "latency", "--model", str(tmp_path / "m.pt"), "--target",
         str(tmp_path / "loads.json"), "--on-miss", "error", "--arch", str(BASE), "--json", str(tmp_path / "g.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert guess.returncode == 0, guess.stderr
    assert json.loads((tmp_path / "g.json").read_text())["estimate"]["nms_tests"] is None


def test_an_entry_that_read_high_by_chance_neither_becomes_a_reference_nor_moves_the_speed(
    profiled: LatencyTable, tmp_path: Path
) -> None:
    """The reference ops are the largest by work, not by the table's times, and the speed is the
    median of their ratios: one entry far off its cost (an outlier read on a busy machine) once read
    the machine 3x faster and scaled a table's fixed entries 3x up (an independent check, stop 45)."""
    from dataclasses import replace as replace_entry

    from jdnas_sdk.latency.drift import machine_speed, reference_ops

    spec = tiny_spec()
    refs = reference_ops(profiled, spec, BASE, SIZE, count=4)
    used = {k for _, ops in lower(spec, BASE, SIZE).stages for k, _ in ops}
    smallest = min((k for k in used if k not in dict(refs)), key=op_macs)
    largest = refs[0][0]
    table = open_table(tmp_path / "outliers.json", "tiny", OrtBackend(timing=FAST))
    for key, entry in profiled.entries.items():
        if key.kind != "fixed":
            scale = 1e6 if key == smallest else 100 if key == largest else 1  # the small op, by its time, the largest
            table.put(key, replace_entry(entry, median_ms=entry.median_ms * scale))
    assert reference_ops(table, spec, BASE, SIZE, count=4) == refs  # the inflated small op is not picked
    # one of four references 100x high: by the sum of their times the machine would read ~100x faster
    assert machine_speed(table, OrtBackend(timing=FAST), refs) > 0.5


def test_latency_times_a_fixed_entry_the_table_lacks_on_the_detector_itself(
    profiled: LatencyTable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``jdnas latency`` on this machine's table: a missing fixed entry of the model's own setting is
    measured on the model (its weights decide post-processing's work, as compress does for its base),
    not on a detector of random weights, whose NMS load is another."""
    from jdnas_sdk.cli import main
    from jdnas_sdk.latency.nms_load import LOADS

    torch.manual_seed(5)
    model = build(tiny_spec(), BASE)
    model_file = save_detector(model, tmp_path / "tiny.pt")
    raw = json.loads(Path(str(profiled.path)).read_text())
    raw["entries"] = {k: v for k, v in raw["entries"].items() if not k.startswith("fixed")}
    table = tmp_path / "no_fixed.json"
    table.write_text(json.dumps(raw))
    assert Estimator(LatencyTable.load(table), tiny_spec(), SIZE).lacks_fixed()  # this machine's, without it
    refused = ["latency", "--model", str(model_file), "--target", str(table), "--on-miss", "error"]
    assert main(refused) == 2 and "fixed(" in capsys.readouterr().err  # not measured where misses are refused
    assert main(["latency", "--model", str(model_file), "--target", str(table), "--measure"]) == 0
    assert "measuring the fixed part (pre/post-processing) of this detector" in capsys.readouterr().out
    entry = LatencyTable.load(table).entries[fixed_key(tiny_spec(), SIZE)]
    assert entry.info[LOADS] == [nms_load(load_detector(model_file), SIZE)]
    assert not Estimator(LatencyTable.load(table), tiny_spec(), SIZE).lacks_fixed()


def test_latency_times_another_settings_missing_fixed_entry_on_the_model_morphed_to_it(
    profiled: LatencyTable, tmp_path: Path
) -> None:
    """``jdnas latency --arch STUDENT`` on this machine's table: the student's head setting has no fixed
    entry, and it is timed on the model morphed to the student (the lineage's weights), not on random ones."""
    from jdnas_sdk.cli import main
    from jdnas_sdk.latency.nms_load import LOADS
    from jdnas_sdk.morph import inherited
    from jdnas_sdk.student import Heads, Student

    torch.manual_seed(5)
    model = build(tiny_spec(), BASE)
    model_file = save_detector(model, tmp_path / "tiny.pt")
    student = Student(BASE, replace(Heads.of(tiny_spec()), fpn=8))
    key = fixed_key(student.spec(tiny_spec()), SIZE)
    table = tmp_path / "table.json"
    table.write_text(Path(str(profiled.path)).read_text())
    assert key not in LatencyTable.load(table).entries
    assert main(["latency", "--model", str(model_file), "--target", str(table), "--arch", str(student), "-q"]) == 0
    entry = LatencyTable.load(table).entries[key]
    assert entry.info[LOADS] == [nms_load(inherited(load_detector(model_file), student), SIZE)]


def test_estimate_latency_of_a_detector_times_its_missing_fixed_entry_on_that_detector(profiled: LatencyTable) -> None:
    """``estimate_latency(model)`` on this machine's table: a missing fixed entry is the model's own
    (its weights give post-processing its load), not a random-weight detector's; a modelled table
    measures nothing here, so it lacks no entry this machine would fill."""
    from jdnas_sdk.latency import load_table
    from jdnas_sdk.latency.nms_load import LOADS

    torch.manual_seed(5)
    model = build(tiny_spec(), BASE).eval()
    table = _without(profiled, fixed_key(tiny_spec(), SIZE))
    estimate_latency(model, target=table, input_size=SIZE, progress=False, backend=OrtBackend(timing=FAST))
    assert table.get(fixed_key(tiny_spec(), SIZE)).info[LOADS] == [nms_load(model, SIZE)]  # type: ignore[union-attr]
    assert not Estimator(load_table("v100-trt"), tiny_spec(), SIZE).lacks_fixed()
