"""Search latency on a table this machine measures: proposals are guessed, candidates confirmed by
measuring what the table lacks (issue 13: a student guessed at 0.47x ran at 0.91x)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from jdnas_sdk import build_detector, standard_arch
from jdnas_sdk.data import CocoDetection
from jdnas_sdk.errors import SearchError
from jdnas_sdk.latency import ConfirmedLatency, Entry, Estimator, LatencyTable, OrtBackend, fixed_key, lower
from jdnas_sdk.latency.backends.base import Timing
from jdnas_sdk.latency.misses import interpolate_ms
from jdnas_sdk.search import SearchConfig, joint_search
from jdnas_sdk.search.moves import PINNED_TABLE, propose
from jdnas_sdk.space import SearchSpace
from jdnas_sdk.student import Heads, Student
from jdnas_sdk.train import TrainConfig

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


def test_a_confirmed_student_is_measured_and_later_guesses_use_the_measurement(
    seeded_table: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    table, spec, arch = seeded_table
    confirmed = ConfirmedLatency(table, spec, SIZE, _backend(), progress=True)
    base = Student.of(spec, arch)
    assert confirmed.confirm(base) == pytest.approx(confirmed.guess(base)) and confirmed.measured == 0
    student = Student(arch, replace(Heads.of(spec), proposals=20, pre=20, box=16))
    student_spec = student.spec(spec)
    assert fixed_key(student_spec, SIZE) not in table
    guessed = confirmed.guess(student)  # the fixed entry and the box head's kernels interpolated
    ms = confirmed.confirm(student)
    assert fixed_key(student_spec, SIZE) in table and table.get(fixed_key(student_spec, SIZE)).source == "residual"
    assert confirmed.measured >= 2 and confirmed.confirmed == 2 and confirmed.seconds > 0
    # the kernels were measured under a bar that counts them (a Python caller sees no log)
    assert f"measuring {confirmed.measured - 1} cpu-ort kernels on this machine" in capsys.readouterr().err
    record = confirmed.to_json()  # what compress writes to result.json
    assert record["confirmed"] == 2 and record["entries_measured"] == confirmed.measured and not record["pinned"]
    assert ms != pytest.approx(guessed)
    # everything the student runs is in the table now: the guess is the confirmed sum, and it was saved
    assert confirmed.guess(student) == pytest.approx(ms)
    assert fixed_key(student_spec, SIZE) in LatencyTable.load(table.path)


def test_a_joint_search_on_a_measured_table_holds_candidates_to_confirmed_times(
    seeded_table: tuple, train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path
) -> None:
    table, spec, arch = seeded_table
    confirmed = ConfirmedLatency(table, spec, SIZE, _backend())
    torch.manual_seed(0)
    base = build_detector(spec, arch)
    confirmed.estimator.calibrate_fixed(base)  # the base's fixed entry measured over its (placeholder) kernels
    grid = {"fpn": (1.0,), "size": (1.0,), "proposals": (20, 50, 1000), "box": (0.5, 1.0)}
    space = SearchSpace(arch, width_ratios=(1.0,), depth=(1.0, 1.0), spec=spec, heads=grid)
    config = SearchConfig(candidates=2, finetune_steps=1, train=TrainConfig(batch_size=2, lr=1e-4, warmup_steps=0))
    common = dict(
        estimator=confirmed.estimator,
        target_ms=2 * confirmed.guess(Student.of(spec, arch)),
        train_data=train_set,
        val_data=val_set,
        workdir=tmp_path / "search",
        space=space,
        config=config,
        progress=False,
        log=lambda _: None,
    )
    archive = joint_search(base, confirmed=confirmed, **common)
    assert len(archive.candidates) == 3 and confirmed.confirmed >= 2
    for candidate in archive.candidates[1:]:
        student = Student.parse(candidate.arch)
        assert fixed_key(student.spec(spec), SIZE) in table  # measured, not interpolated
        assert candidate.latency_ms == pytest.approx(confirmed.measuring.total_ms(student))
    # the guesses come from the table pinned at the search's start, which lacks what it measured
    pinned = LatencyTable.load(tmp_path / "search" / PINNED_TABLE)
    assert confirmed.estimator.table.path == tmp_path / "search" / PINNED_TABLE and len(pinned) < len(table)
    assert confirmed.to_json()["pinned"] is True
    # an archive made without confirmation is not resumed as if its latencies were measured
    with pytest.raises(SearchError, match="belongs to a search with other settings"):
        joint_search(base, **common)


def test_a_negative_residual_is_clamped_when_confirming(seeded_table: tuple) -> None:
    table, spec, arch = seeded_table
    for key in list(table.entries):  # kernels that add up to far more than the detector takes
        if key.kind != "fixed":
            table.put(key, Entry(50.0, samples=1))
    confirmed = ConfirmedLatency(table, spec, SIZE, _backend())
    student = Student(arch, replace(Heads.of(spec), proposals=20, pre=20))
    ms = confirmed.confirm(student)
    entry = table.get(fixed_key(student.spec(spec), SIZE))
    assert entry.median_ms == 0.0 and "clamped" in entry.info
    assert ms == pytest.approx(confirmed.measuring.ops_ms(student))
    # the estimator's own on-demand path (jdnas latency --measure, --floor) clamps too: it raised, naming a busy
    # machine, when a tiny detector's kernels timed alone added up to more than the whole
    other = Student(arch, replace(Heads.of(spec), proposals=30, pre=30))
    estimator = Estimator(table, spec, SIZE, on_miss="measure", save=False)
    assert estimator.total_ms(other) == pytest.approx(estimator.ops_ms(other))
    assert "clamped" in table.get(fixed_key(other.spec(spec), SIZE)).info
    # and so does the fixed entry compress measures on the user's own detector (it raised there, refusing the
    # detector before any search)
    estimator.calibrate_fixed(build_detector(spec, arch))
    assert "clamped" in table.get(fixed_key(spec, SIZE)).info and table.get(fixed_key(spec, SIZE)).median_ms == 0.0


def _size(student: Student) -> float:
    """A stand-in guess that falls as a student shrinks: its stages' width x depth."""
    return float(sum(stage.width * stage.depth for stage in student.arch.stages))


def test_propose_keeps_only_what_confirm_admits_and_guesses_lower_after_a_miss() -> None:
    spec, arch = tiny_spec(), standard_arch("resnet18")
    space = SearchSpace(arch, spec=spec)
    start = Student.of(spec, arch)
    bound = 0.99 * _size(start)
    seen: list[Student] = []

    def confirm(student: Student) -> float:  # the first proposal measures 3x its guess, the next as guessed
        seen.append(student)
        return _size(student) * (3.0 if len(seen) == 1 else 1.0)

    actions, chosen, ms, rejected = propose(start, space, _size, bound, random.Random(0), confirm=confirm)
    assert len(seen) == 2 and chosen == seen[-1] and ms == _size(chosen) and rejected >= 1 and actions
    assert 3.0 * _size(chosen) <= bound  # after the miss, guesses were scaled by it: the search shrank further


def test_propose_stops_when_confirmations_keep_missing() -> None:
    spec, arch = tiny_spec(), standard_arch("resnet18")
    space = SearchSpace(arch, spec=spec)
    start = Student.of(spec, arch)
    bound = 0.99 * _size(start)
    with pytest.raises(SearchError, match="12 proposals .* were outside it when measured"):
        propose(start, space, _size, bound, random.Random(0), confirm=lambda s: bound + 1.0)


def test_fixed_entries_at_one_proposal_count_but_other_fpn_widths_do_not_divide_by_zero() -> None:
    spec = tiny_spec(min_size=64, max_size=64)
    table = LatencyTable(target="t", source="measured", fingerprint=_backend().fingerprint())

    def key(props: int, fpn: int = 16) -> object:
        return fixed_key(replace(Heads.of(spec), proposals=props, pre=props, fpn=fpn).apply(spec), SIZE)

    table.put(key(1000), Entry(125.0, source="residual"))
    table.put(key(1000, fpn=8), Entry(100.0, source="residual"))
    table.put(key(300), Entry(23.0, source="residual"))
    assert interpolate_ms(table, key(700, fpn=8)) == pytest.approx(100.0 * 700 / 1000)  # scaled from its own fpn
    assert interpolate_ms(table, key(700)) == pytest.approx(23.0 + (125.0 - 23.0) * (700 - 300) / 700)


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


def test_a_new_head_settings_fixed_entry_is_timed_on_the_base_morphed_to_the_candidate(seeded_table: tuple) -> None:
    """compress's confirmations time a candidate's new fixed entry (pre/post-processing) on its base
    morphed to the candidate: the inherited weights decide how many boxes reach NMS, where a detector of
    random weights makes another load (a trained Faster R-CNN ran 53% off such an entry, stop 45)."""
    from jdnas_sdk.compress import _search_estimator
    from jdnas_sdk.latency.nms_load import LOADS, nms_load
    from jdnas_sdk.morph import inherited

    table, spec, arch = seeded_table
    torch.manual_seed(5)
    model = build_detector(spec, arch).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimator, confirmed = _search_estimator(table, model, SIZE, False)
    assert confirmed is not None and estimator is confirmed.estimator
    student = Student(arch, replace(Heads.of(spec), proposals=20, pre=20, fpn=8))
    confirmed.confirm(student)
    entry = table.get(fixed_key(student.spec(spec), SIZE))
    assert entry is not None and entry.source == "residual"
    inheriting = inherited(model, student)
    assert entry.info[LOADS] == [nms_load(inheriting, SIZE)]
    torch.manual_seed(6)  # what a detector of random weights would have shown NMS
    assert nms_load(build_detector(student.spec(spec), arch).eval(), SIZE) != entry.info[LOADS][0]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the base is not touched


def test_a_tower_cutting_candidates_fixed_entry_is_timed_on_the_search_own_refit_morph(
    tmp_path: Path, train_set: CocoDetection
) -> None:
    """A candidate that removes a tower conv is made by the search with the conv beside the gap refit
    on training images; its new fixed entry is timed on that detector (closer to a trained student's NMS
    load than the plain morph: benchmarks/fixed_entry_weights.py), not on the plain morph."""
    from jdnas_sdk.compress import _search_estimator
    from jdnas_sdk.latency.nms_load import LOADS, nms_load
    from jdnas_sdk.morph import morph_to
    from jdnas_sdk.morph.refit import depth_refit_hook

    backend = _backend()
    spec, arch = tiny_spec("retinanet", min_size=64, max_size=64), standard_arch("resnet18")
    table = LatencyTable(target="cpu-ort", source="measured", fingerprint=backend.fingerprint())
    for key in {k for _, stage in lower(spec, arch, SIZE).stages for k, _ in stage}:
        table.put(key, Entry(0.01, samples=1))
    table.put(fixed_key(spec, SIZE), Entry(1.0, samples=1, source="residual"))
    table.save(tmp_path / "cpu-ort.json")
    torch.manual_seed(5)
    model = build_detector(spec, arch).eval()
    _, confirmed = _search_estimator(table, model, SIZE, False, train_data=train_set, refit_images=4)
    student = Student(arch, replace(Heads.of(spec), convs=2, fpn=8))  # a new FPN width: a new fixed entry
    confirmed.confirm(student)
    entry = table.get(fixed_key(student.spec(spec), SIZE))
    refit = morph_to(model, student, after_step=depth_refit_hook(train_set, 4, []))
    assert entry is not None and entry.info[LOADS] == [nms_load(refit, SIZE)]
    assert nms_load(morph_to(model, student), SIZE) != entry.info[LOADS][0]  # the refit moved the load
