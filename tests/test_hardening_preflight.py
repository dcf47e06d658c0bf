"""Validation before any work (issue 16, items 3 and 6): impossible requests fail in seconds, the
floor check never measures or writes the table, an unwritable or full output folder is found
before training."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest

from jdnas_sdk import build_detector, standard_arch
from jdnas_sdk.errors import SearchError, StorageError
from jdnas_sdk.latency import Entry, LatencyTable, OrtBackend, fixed_key, lower
from jdnas_sdk.preflight import check_floor, check_output_space, parse_budget, smallest_arch, validate_request
from jdnas_sdk.space import SearchSpace

from .conftest import tiny_spec

SIZE = (96, 96)


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        (dict(ms=math.nan), "ms must be a finite"),
        (dict(ms=math.inf), "ms must be a finite"),
        (dict(ms=0.0), "ms must"),
        (dict(latency=math.inf), "latency must be a finite"),
        (dict(latency=math.nan), "latency must"),
        (dict(latency=0), "latency must"),
        (dict(latency=1.0), "must be below 1 .*the base itself already meets"),
        (dict(latency=1.5), "must be below 1"),
        (dict(latency=True), "latency must"),
        (dict(budget="0s"), "out of range"),
        (dict(budget=0), "out of range"),
        (dict(budget="nans"), "budget must"),
        (dict(budget=True), "budget must"),
        (dict(method="greedy"), "method must"),
        (dict(teacher="big"), "teacher must"),
        (dict(final_steps=-1), "final_steps"),
        (dict(finetune_steps=0), "finetune_steps"),
        (dict(seed=-3), "seed"),
        (dict(latency=0.5, ms=100.0), "not both"),  # --latency was silently dropped for --ms
        (dict(method="pipeline", budget="40s"), "pipeline baseline spends its budget in fine-tuning steps"),
    ],
)
def test_impossible_arguments_are_refused_before_any_work(kwargs: dict[str, object], problem: str) -> None:
    args: dict[str, object] = dict(latency=None if "ms" in kwargs else 0.5, ms=None, budget=4)
    args.update(kwargs)
    with pytest.raises(SearchError, match=problem):
        validate_request(**args)  # type: ignore[arg-type]


def test_valid_requests_are_normalised() -> None:
    assert validate_request(latency=0.5, ms=None, budget="2m") == validate_request(latency=0.5, ms=None, budget="120s")
    request = validate_request(latency=None, ms=3, budget=7)
    assert (request.candidates, request.wall_s, request.ratio, request.ms) == (7, None, None, 3.0)
    assert validate_request(latency=None, ms=None, budget=7).ratio == 0.5  # neither given: twice as fast
    assert parse_budget("1.5h") == (None, 5400.0)


def _measurable_table(tmp_path: Path, *, full: bool) -> tuple[LatencyTable, Path]:
    """A table of THIS machine (so an estimator could measure its misses), holding placeholder entries."""
    spec, base = tiny_spec(), standard_arch("resnet18")
    table = LatencyTable(target="local", source="measured", fingerprint=OrtBackend().fingerprint())
    if full:
        for arch in (base, smallest_arch(SearchSpace(base))):
            for _, ops in lower(spec, arch, SIZE).stages:
                for key, _ in ops:
                    table.put(key, Entry(0.05, samples=1))
        table.put(fixed_key(spec, SIZE), Entry(1.0, samples=1, source="residual"))
    path = tmp_path / "local.json"
    table.save(path)
    return LatencyTable.load(path), path


def test_the_floor_check_never_measures_nor_writes_the_table(tmp_path: Path) -> None:
    spec, base = tiny_spec(), standard_arch("resnet18")
    space = SearchSpace(base)
    table, path = _measurable_table(tmp_path, full=True)
    before, entries = path.read_bytes(), len(table)
    with pytest.raises(SearchError, match="below anything the search space reaches"):
        check_floor(table, spec, base, space, SIZE, validate_request(latency=None, ms=0.5, budget=3))
    with pytest.raises(SearchError, match="smallest student runs in") as refused:
        check_floor(table, spec, base, space, SIZE, validate_request(latency=0.01, ms=None, budget=3))
    # the refusal names the least latency (and ms) to ask for, and asking for exactly that is accepted
    least = re.search(r"Ask for latency >= (\d+\.\d+) \(ms >= (\d+\.\d+)\)", str(refused.value))
    ratio, ms = float(least.group(1)), float(least.group(2))
    assert 0.01 < ratio < 1.0
    assert check_floor(table, spec, base, space, SIZE, validate_request(latency=ratio, ms=None, budget=3))
    assert check_floor(table, spec, base, space, SIZE, validate_request(latency=None, ms=ms, budget=3)) == ms
    ok = check_floor(table, spec, base, space, SIZE, validate_request(latency=0.95, ms=None, budget=3))
    assert ok is not None and ok > 1.0
    partial = LatencyTable.load(path)  # misses interpolated from what it has, not measured
    for key in list(partial.entries)[::2]:
        if key.kind != "fixed":
            del partial.entries[key]
    with pytest.raises(SearchError, match=r"estimated from the \d+ entries the table has"):
        check_floor(partial, spec, base, space, SIZE, validate_request(latency=None, ms=0.5, budget=3))
    assert path.read_bytes() == before and len(table) == entries


def test_an_empty_table_of_this_machine_defers_the_floor_without_measuring(tmp_path: Path) -> None:
    spec, base = tiny_spec(), standard_arch("resnet18")
    table, path = _measurable_table(tmp_path, full=False)
    before = path.read_bytes()
    assert (
        check_floor(table, spec, base, SearchSpace(base), SIZE, validate_request(latency=0.5, ms=None, budget=3))
        is None
    )
    assert path.read_bytes() == before and len(table) == 0


def test_an_output_folder_without_room_for_a_checkpoint_is_refused_before_training(tmp_path: Path) -> None:
    model = build_detector(tiny_spec(), standard_arch("resnet18"))
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(StorageError, match=f"cannot write checkpoints to {small / 'run'}: the disk is nearly full"):
            check_output_space(small / "run", model, what="checkpoints")
        subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True, capture_output=True)
        with pytest.raises(StorageError, match="read-only"):
            check_output_space(small, need_bytes=0)
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
    assert check_output_space(tmp_path / "ok", model) == tmp_path / "ok"


def test_a_workdir_without_room_for_the_whole_search_is_warned_of_before_work(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every candidate's detector file is kept: a disk with room for a checkpoint but not for the base's,
    the free moves', every candidate's, the final student's, the control's and a teacher's files is
    named before any work, with the count; a wall-time budget says how many candidate files fit."""
    import importlib
    import shutil
    from dataclasses import replace

    import jdnas_sdk
    from jdnas_sdk.preflight import checkpoint_bytes
    from jdnas_sdk.search import SearchConfig
    from jdnas_sdk.search.files import candidate_files
    from jdnas_sdk.search.free import free_students
    from jdnas_sdk.student import Student

    spec, base = tiny_spec(), standard_arch("resnet18")
    space = SearchSpace(base, spec=spec)
    config = SearchConfig(candidates=3, free_moves=True)
    free = len(free_students(Student.of(spec, base), space))
    assert free > 0 and candidate_files(str(base), space, config, method="joint") == 1 + free + 3
    assert candidate_files(str(base), space, replace(config, free_moves=False), method="joint") == 1 + 3
    assert candidate_files(str(base), space, config, method="pipeline") == 1 + 3 + 1  # prune, distil, 1 searched, final
    assert candidate_files(str(base), space, replace(config, wall_s=60.0), method="joint") is None

    model = build_detector(spec, base)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    room = checkpoint_bytes(model) + 4 * weights  # a checkpoint fits; the search's files do not
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * room, 9 * room, room))

    class Started(Exception):
        pass

    def started(*args: object, **kwargs: object) -> None:
        raise Started  # the search's first step: what is checked before work has been checked

    monkeypatch.setattr(importlib.import_module("jdnas_sdk.compress"), "_search_estimator", started)
    said_for = {3: f"keeps up to {1 + free + 3 + 3} detector files", "2h": "room for about 1 candidate"}
    for budget, expected in said_for.items():
        caplog.clear()
        with caplog.at_level("INFO", logger="jdnas_sdk.preflight"), pytest.raises(Started):
            jdnas_sdk.compress(
                model, data=synth_root, target="v100-trt", latency=0.9, budget=budget, workdir=tmp_path / "w"
            )
        said = " ".join(r.getMessage() for r in caplog.records)
        assert expected in said and str(tmp_path / "w") in said, said
