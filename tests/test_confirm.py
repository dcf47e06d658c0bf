"""Search latency on a table this machine measures: proposals are guessed, candidates confirmed by
measuring what the table lacks (issue 13: a student guessed at 0.47x ran at 0.91x)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from jdnas_sdk import standard_arch
from jdnas_sdk.latency import ConfirmedLatency, Entry, LatencyTable, OrtBackend, fixed_key, lower
from jdnas_sdk.latency.backends.base import Timing
from jdnas_sdk.latency.misses import interpolate_ms
from jdnas_sdk.search.joint import propose
from jdnas_sdk.space import SearchSpace
from jdnas_sdk.student import Heads, Student

from .conftest import tiny_spec

SIZE = (64, 64)


def _backend() -> OrtBackend:
    return OrtBackend(flush_mib=1, timing=Timing(warmup=1, min_runs=3, max_runs=5, min_time_s=0.0))


@pytest.fixture
def seeded_table(tmp_path: Path) -> tuple[LatencyTable, object, object]:
    """This machine's table holding the base's kernels (placeholders) and its fixed entry."""
    backend = _backend()
    spec, arch = tiny_spec(min_size=64, max_size=64), standard_arch("resnet18")
    table = LatencyTable(target="cpu-ort", source="measured", fingerprint=backend.fingerprint())
    for key in {k for _, stage in lower(spec, arch, SIZE).stages for k, _ in stage}:
        table.put(key, Entry(0.01, samples=1))
    table.put(fixed_key(spec, SIZE), Entry(1.0, samples=1, source="residual"))
    table.save(tmp_path / "cpu-ort.json")
    return table, spec, arch


def test_a_confirmed_student_is_measured_and_later_guesses_use_the_measurement(seeded_table: tuple) -> None:
    table, spec, arch = seeded_table
    confirmed = ConfirmedLatency(table, spec, SIZE, _backend())
    base = Student.of(spec, arch)
    assert confirmed.confirm(base) == pytest.approx(confirmed.guess(base)) and confirmed.measured == 0
    student = Student(arch, replace(Heads.of(spec), proposals=20, pre=20, box=16))
    student_spec = student.spec(spec)
    assert fixed_key(student_spec, SIZE) not in table
    guessed = confirmed.guess(student)  # the fixed entry and the box head's kernels interpolated
    ms = confirmed.confirm(student)
    assert fixed_key(student_spec, SIZE) in table and table.get(fixed_key(student_spec, SIZE)).source == "residual"
    assert confirmed.measured >= 2 and confirmed.confirmed == 2 and confirmed.seconds > 0
    assert ms != pytest.approx(guessed)
    # everything the student runs is in the table now: the guess is the confirmed sum, and it was saved
    assert confirmed.guess(student) == pytest.approx(ms)
    assert fixed_key(student_spec, SIZE) in LatencyTable.load(table.path)


def test_propose_keeps_only_what_confirm_admits() -> None:
    spec, arch = tiny_spec(), standard_arch("resnet18")
    space = SearchSpace(arch, spec=spec)
    start = Student.of(spec, arch)
    seen: list[object] = []

    def confirm(student: object) -> float:  # rejects the first proposal the guess admits
        seen.append(student)
        return 50.0 if len(seen) == 1 else 7.0

    actions, chosen, ms, rejected = propose(start, space, lambda s: 5.0, 10.0, random.Random(0), confirm=confirm)
    assert ms == 7.0 and rejected == 1 and chosen == seen[-1] and len(seen) == 2 and actions


def test_a_missing_rcnn_fixed_entry_follows_the_proposal_count_not_the_image_area() -> None:
    spec = tiny_spec(min_size=64, max_size=64)
    table = LatencyTable(target="t", source="measured", fingerprint=_backend().fingerprint())
    at = {p: fixed_key(replace(Heads.of(spec), proposals=p, pre=p).apply(spec), SIZE) for p in (50, 300, 1000)}
    table.put(at[1000], Entry(125.0, source="residual"))
    only_one = LatencyTable(target="t", source="measured", fingerprint=table.fingerprint)
    only_one.put(at[1000], Entry(125.0, source="residual"))
    assert interpolate_ms(only_one, at[300]) == pytest.approx(125.0 * 300 / 1000)  # scaled by proposals
    table.put(at[300], Entry(23.0, source="residual"))
    assert interpolate_ms(table, at[50]) == pytest.approx(23.0 * 50 / 300)  # the line goes below 0 there
    bigger = fixed_key(replace(spec, min_size=128, max_size=128), (128, 128))
    assert interpolate_ms(only_one, bigger) == pytest.approx(125.0)  # same proposals: area does not scale it


def test_a_missing_one_stage_fixed_entry_scales_with_the_image_area() -> None:
    spec = tiny_spec("retinanet", min_size=64, max_size=64)
    table = LatencyTable(target="t", source="measured", fingerprint=_backend().fingerprint())
    table.put(fixed_key(spec, SIZE), Entry(4.0, source="residual"))
    bigger = fixed_key(replace(spec, min_size=128, max_size=128), (128, 128))
    assert interpolate_ms(table, bigger) == pytest.approx(16.0)
