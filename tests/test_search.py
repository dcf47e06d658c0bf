"""The joint search and compress(): bounds honoured, same seed same search, resume, fast failures."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from jdnas_sdk import (
    Arch,
    DataError,
    JdnasError,
    LatencyTableError,
    SearchError,
    UnsupportedModelError,
    build,
    load_detector,
    save_detector,
)
from jdnas_sdk.compress import Recipe, compress, parse_budget, smallest_arch
from jdnas_sdk.data import CocoDetection, load_split
from jdnas_sdk.errors import OtherSettingsError
from jdnas_sdk.latency import DeviceModel, Estimator, load_table, open_table
from jdnas_sdk.latency.backends import RooflineBackend
from jdnas_sdk.morph import apply_action
from jdnas_sdk.search import (
    Archive,
    Candidate,
    SearchConfig,
    joint_search,
    latency_bound,
    moves,
    pareto_front,
    pipeline_search,
    propose,
)
from jdnas_sdk.space import SearchSpace
from jdnas_sdk.teachers import TeacherPool
from jdnas_sdk.train import TrainConfig

from .conftest import tiny_spec

BASE = Arch.parse("basic:16|16:16x2|32:32x2|64:64x2|128:128x2")
SPACE = SearchSpace(BASE, width_ratios=(0.5, 0.75, 1.0))
FAST = SearchConfig(
    candidates=2, finetune_steps=2, train=TrainConfig(batch_size=2, optimizer="adamw", lr=1e-4, warmup_steps=0)
)


@pytest.fixture(scope="module")
def slow_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A modelled device slow enough that the tiny backbone dominates (misses are modelled on demand)."""
    slow = DeviceModel(
        "a slow test device",
        "fp32",
        peak_tflops=0.002,
        bandwidth_gbs=2.0,
        launch_us=0.0,
        postprocess_ms=0.5,
        fixed_kernels=0,
    )
    path = tmp_path_factory.mktemp("tables") / "slow.json"
    open_table(path, "slow", RooflineBackend(slow)).save()
    return path


def _estimator(path: Path) -> Estimator:
    return Estimator(load_table(str(path)), tiny_spec(), (96, 96))


def _cand(i: int, ms: float, ap: float) -> Candidate:
    return Candidate(i, str(BASE), None, (), None, ms, ap, ap, ap, f"{i}.pt")


def test_archive_front_best_and_resume_checks(tmp_path: Path) -> None:
    archive = Archive.open(tmp_path / "a.json", {"seed": 0})
    for c in [_cand(0, 10, 0.5), _cand(1, 8, 0.4), _cand(2, 9, 0.3), _cand(3, 6, 0.45)]:
        archive.add(c)
    assert [c.index for c in archive.front()] == [3, 0]
    assert archive.best(8.5).index == 3 and archive.best(5) is None
    again = Archive.open(tmp_path / "a.json", {"seed": 0})
    assert again.candidates == archive.candidates
    with pytest.raises(OtherSettingsError, match="other settings"):  # a refused call: no sitting of the run
        Archive.open(tmp_path / "a.json", {"seed": 1})
    assert pareto_front([]) == []


def test_a_search_resumed_at_another_learning_rate_is_refused(slow_table: Path) -> None:
    """The candidates' rate is a setting of the archive (probe46: a search killed and called again with
    another --base-lr went on, one archive holding candidates trained at two rates); the default
    recipe's rate is left out, so archives made before it was a setting still resume."""
    from jdnas_sdk.prepare import search_config
    from jdnas_sdk.search.joint import DEFAULT_SEARCH_LR, search_settings

    estimator = _estimator(slow_table)

    def settings(recipe: Recipe) -> dict[str, object]:
        return search_settings("joint", BASE, 10.0, estimator, SPACE, search_config(4, 2, 0, 1, recipe))

    assert Recipe().search_train_config().lr == DEFAULT_SEARCH_LR and "lr" not in settings(Recipe())
    slower, unrewound = settings(Recipe(base_lr=5e-4)), settings(Recipe(lr_rewind=False))
    assert slower["lr"] == 5e-4 and unrewound["lr"] == pytest.approx(2e-4)
    assert settings(Recipe(search_lr_ratio=0.5))["lr"] == pytest.approx(5e-4)


def test_the_bound_tightens_from_the_base_to_the_target() -> None:
    config = SearchConfig(candidates=10, tighten=0.5)
    bounds = [latency_bound(i, config, 100.0, 60.0) for i in range(1, 11)]
    assert bounds[0] == pytest.approx(92.0) and bounds[4:] == [60.0] * 6
    assert all(a >= b for a, b in zip(bounds, bounds[1:]))


def test_proposals_stay_in_the_space_and_under_the_bound(slow_table: Path) -> None:
    estimator = _estimator(slow_table)
    base_ms = estimator.total_ms(BASE)
    rng = random.Random(0)
    assert all(SPACE.why_not(apply_action(BASE, a)) is None for a in moves(BASE, SPACE))
    for _ in range(10):
        actions, arch, ms, _ = propose(BASE, SPACE, estimator.total_ms, base_ms * 0.9, rng)
        assert arch in SPACE and ms <= base_ms * 0.9 and 1 <= len(actions) <= 43
    floor = estimator.total_ms(smallest_arch(SPACE))
    with pytest.raises(SearchError, match="no proposal"):
        propose(BASE, SPACE, estimator.total_ms, floor * 0.5, rng, tries=20)


def test_joint_search_is_reproducible_resumable_and_keeps_its_bounds(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path
) -> None:
    torch.manual_seed(0)
    base = build(tiny_spec(), BASE)
    pool = TeacherPool.from_base(base, widths=(0.75, 1.0), depth_delta=1)
    estimator = _estimator(slow_table)
    target = 0.85 * estimator.total_ms(BASE)
    kwargs = dict(
        estimator=estimator,
        target_ms=target,
        train_data=train_set,
        val_data=val_set,
        space=SPACE,
        pool=pool,
        config=FAST,
        progress=False,
        log=lambda _: None,
    )
    first = joint_search(base, workdir=tmp_path / "a", **kwargs)
    assert len(first.candidates) == 3 and first.candidates[0].arch == str(BASE)
    for c in first.candidates[1:]:
        assert c.latency_ms <= c.bound_ms and c.teacher and (tmp_path / "a" / c.file).is_file()
        assert Arch.parse(c.arch) in SPACE
    assert first.candidates[-1].latency_ms <= target  # the bound reached the target by the end
    second = joint_search(base, workdir=tmp_path / "b", **kwargs)
    assert [(c.arch, c.teacher, c.actions) for c in second.candidates] == [
        (c.arch, c.teacher, c.actions) for c in first.candidates
    ]
    # a kill before the last candidate was recorded: the same call redoes only that one
    data = json.loads((tmp_path / "b" / "archive.json").read_text())
    data["candidates"] = data["candidates"][:2]
    (tmp_path / "b" / "archive.json").write_text(json.dumps(data))
    resumed = joint_search(base, workdir=tmp_path / "b", **kwargs)
    assert [c.arch for c in resumed.candidates] == [c.arch for c in first.candidates]


def test_pipeline_prunes_distils_then_searches(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path
) -> None:
    torch.manual_seed(0)
    base = build(tiny_spec(), BASE)
    estimator = _estimator(slow_table)
    target = 0.85 * estimator.total_ms(BASE)
    config = SearchConfig(candidates=3, finetune_steps=2, train=FAST.train)
    archive = pipeline_search(
        base,
        estimator=estimator,
        target_ms=target,
        train_data=train_set,
        val_data=val_set,
        workdir=tmp_path,
        space=SPACE,
        teacher=base,
        config=config,
        progress=False,
        log=lambda _: None,
    )
    assert [c.actions[0] for c in archive.candidates] == ["base", "prune+finetune", "distil", "search"]
    assert all(c.latency_ms <= target for c in archive.candidates[1:])
    assert all((tmp_path / c.file).is_file() for c in archive.candidates)
    assert not list((tmp_path / "candidates").glob("*.ckpt"))  # each removed once its stage's file was written


def test_compress_returns_a_trained_student_and_a_report(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path
) -> None:
    torch.manual_seed(0)
    base = build(tiny_spec(), BASE)
    result = compress(
        base,
        target=str(slow_table),
        train_data=train_set,
        val_data=val_set,
        latency=0.85,
        budget=2,
        workdir=tmp_path,
        teacher="base",
        finetune_steps=2,
        final_steps=3,
        recipe=Recipe(keep_better=False),  # the final steps are kept whatever select says: they must show
        space=SPACE,
        measure=False,
        progress=False,
    )
    assert result.metrics["student"]["estimated_ms"] <= 0.85 * result.metrics["base"]["estimated_ms"]
    student = result.metrics["student"]
    assert student["final_steps"] == 3 and student["final_teacher"] == "base" and (tmp_path / "final.pt").is_file()
    record = json.loads((tmp_path / "result.json").read_text())
    chosen = result.history[record["chosen"]]
    assert student["search_ap"] == chosen["ap"] and str(result.arch) == chosen["arch"]
    files = record["split_images"]  # the held-out claim, readable from the results file: no image in two splits
    assert all(len(files[name]) == record["splits"][name] for name in ("train", "select", "test"))
    assert files["select"] and files["test"] and not set(files["select"]) & set(files["test"])
    assert not set(files["train"]) & (set(files["select"]) | set(files["test"]))
    searched = load_detector(tmp_path / "search" / chosen["file"]).state_dict()  # the final steps changed the weights
    assert any(not torch.equal(v, result.student.state_dict()[k]) for k, v in searched.items() if v.is_floating_point())
    assert not result.student.training and result.arch in SPACE
    assert result.report is not None and result.report.is_file() and (tmp_path / "report.md").is_file()
    text = (tmp_path / "report.md").read_text()
    assert "MODELLED" in text and "Pareto" in text and (tmp_path / "pareto.png").is_file()
    assert "Then trained 3 more steps with teacher `base`" in text
    assert "## Timeline: who trained what" in text and (tmp_path / "timeline.png").is_file()
    assert f"| {result.history[1]['worker']} | 1, 2 |" in text  # both candidates trained in this process
    flops = f"| FLOPs (2 x MACs) | {2 * result.metrics['base']['macs']:,} | {2 * result.metrics['student']['macs']:,} |"
    assert flops in text and result.metrics["student"]["macs"] < result.metrics["base"]["macs"]
    assert len(result.history) == 3 and result.student_file.is_file()


def test_compress_distils_every_student_from_a_teacher_file_of_your_own(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    base, teacher_file = build(tiny_spec(), BASE), tmp_path / "mine.pt"
    save_detector(build(tiny_spec(), Arch.parse("basic:24|24:24x2|48:48x2|96:96x2|192:192x2")), teacher_file)
    common = dict(target=str(slow_table), train_data=train_set, val_data=val_set, latency=0.85, space=SPACE)
    common.update(finetune_steps=2, measure=False, progress=False)
    (damaged := tmp_path / "damaged.pt").write_bytes(teacher_file.read_bytes()[:200])
    for bad, why in (
        (tmp_path / "nowhere.pt", "a detector file that exists"),
        (_other_classes(tmp_path), "num_classes 10 vs 9"),
        (damaged, "damaged.pt"),
    ):
        with pytest.raises(JdnasError, match=why):
            compress(base, budget=1, workdir=tmp_path / "refused", teacher=bad, **common)
        assert not (tmp_path / "refused").exists()  # refused before any work
    work = tmp_path / "w"
    with caplog.at_level(logging.INFO, logger="jdnas_sdk"):
        result = compress(base, budget=2, workdir=work, teacher=teacher_file, final_steps=2, **common)
    copy = json.loads((work / "result.json").read_text())["teacher_file"]
    assert Path(copy).parent == work and Path(copy).read_bytes() == teacher_file.read_bytes()  # kept beside the run
    trained = [c for c in result.history[1:] if not c["free"]]
    assert trained and all(c["teacher"] == "given" for c in trained)
    for c in trained:  # each candidate's training job distilled from the copy of the file given
        key = json.loads((work / "search" / c["file"]).with_suffix(".json").read_text())["key"]
        assert key["teacher"] == Path(copy).name
    assert "more steps with teacher given" in caplog.text  # logged only where a teacher model was loaded
    assert result.metrics["student"]["final_teacher"] == "given"


def _other_classes(tmp_path: Path) -> Path:
    """A detector file of the tiny family with one more class than the tests' detectors."""
    path = tmp_path / "other_classes.pt"
    spec = tiny_spec()
    save_detector(build(replace(spec, num_classes=spec.num_classes + 1), BASE), path)
    return path


def _without_one_class(root: Path, out: Path) -> CocoDetection:
    """The synthetic train split with its last category (and its boxes) removed."""
    shutil.copytree(root, out)
    file = out / "annotations" / "instances_train.json"
    coco = json.loads(file.read_text())
    dropped = coco["categories"].pop()["id"]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != dropped]
    file.write_text(json.dumps(coco))
    return load_split(out, "train")


def test_impossible_requests_fail_fast_with_the_reason(
    train_set: CocoDetection,
    val_set: CocoDetection,
    tmp_path: Path,
    slow_table: Path,
    synth_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = build(tiny_spec(), BASE)
    common = dict(train_data=train_set, val_data=val_set, workdir=tmp_path, space=SPACE)
    with pytest.raises(LatencyTableError, match="no latency table for target 'tpu-v9'"):
        compress(base, target="tpu-v9", **common)
    with pytest.raises(SearchError, match="below anything the search space reaches"):
        compress(base, target=str(slow_table), latency=0.05, **common)
    with pytest.raises(DataError, match="select set is empty"):
        compress(
            base,
            target="v100-trt",
            train_data=train_set,
            select_data=val_set.head(0),
            test_data=val_set,
            workdir=tmp_path,
        )
    with pytest.raises(UnsupportedModelError):
        compress(torch.nn.Conv2d(3, 3, 1), target="v100-trt", **common)
    with pytest.raises(DataError, match="predicts 8 classes, the dataset .* has 7"):
        compress(
            base,
            target="v100-trt",
            train_data=_without_one_class(synth_root, tmp_path_factory.mktemp("d") / "other"),
            val_data=val_set,
            workdir=tmp_path / "w",
        )
    with pytest.raises(SearchError, match="wall time"):
        parse_budget("soon")
    assert parse_budget("2h") == (None, 7200.0) and parse_budget(5) == (5, None)
    assert not list(tmp_path.iterdir())  # nothing was started


def test_kill_9_mid_search_then_the_same_command_resumes(synth_root: Path, tmp_path: Path, slow_table: Path) -> None:
    """A real ``kill -9`` of ``jdnas compress``: candidates recorded before the kill are kept as they
    are (same archive entries, files not rewritten), the rest are searched, nothing is lost."""
    torch.manual_seed(0)
    base_file = tmp_path / "base.pt"
    save_detector(build(tiny_spec(), BASE), base_file)
    work = tmp_path / "work"
    archive = work / "search" / "archive.json"
    args = [
        sys.executable,
        "-m",
        "jdnas_sdk.cli",
        "compress",
        "--model",
        str(base_file),
        "--data",
        str(synth_root),
        "--target",
        str(slow_table),
        "--latency",
        "0.85",
        "--budget",
        "4",
        "--finetune-steps",
        "4",
        "--teacher",
        "base",
        "--val-images",
        "3",
        "--no-free-moves",  # the resume of trained candidates is what this kill tests
        "--final-steps",
        "2",
        "--workdir",
        str(work),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 300

    def recorded() -> list[dict]:
        try:
            return json.loads(archive.read_text())["candidates"]
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet (writes are atomic: never half)
            return []

    while len(recorded()) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = recorded()
    assert 2 <= len(before) < 5, "the search had not started, or had finished, when it was killed"
    stamps = {c["file"]: (work / "search" / c["file"]).stat().st_mtime_ns for c in before}
    second = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"resuming: {len(before) - 1} candidates already on disk" in second.stderr  # the log
    after = recorded()
    assert [c["index"] for c in after] == list(range(5))
    assert after[: len(before)] == before  # no candidate lost or changed
    assert all((work / "search" / f).stat().st_mtime_ns == t for f, t in stamps.items())  # none redone
    assert (work / "student.pt").is_file() and (work / "report.md").is_file()
    assert not list((work / "search" / "candidates").glob("*.ckpt"))


def test_a_candidate_whose_loss_becomes_nan_is_recorded_as_failed_and_the_search_goes_on(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path
) -> None:
    torch.manual_seed(0)
    estimator = _estimator(slow_table)
    target = 0.85 * estimator.total_ms(BASE)
    config = SearchConfig(
        candidates=3,
        finetune_steps=3,
        parallel=2,
        train=TrainConfig(batch_size=2, optimizer="sgd", lr=1e12, warmup_steps=0),
    )
    archive = joint_search(
        build(tiny_spec(), BASE),
        estimator=estimator,
        target_ms=target,
        train_data=train_set,
        val_data=val_set,
        workdir=tmp_path,
        space=SPACE,
        base_teacher=True,
        config=config,
        progress=False,
        log=lambda _: None,
    )
    failed = archive.candidates[1:]
    assert len(failed) == 3 and all(c.error and c.error.startswith("NonFiniteLossError: loss became") for c in failed)
    assert all(c.parent == 0 for c in failed)  # a failed candidate is never a parent
    assert archive.best(1e9).index == 0 and [c.index for c in archive.front()] == [0]  # nor chosen
    left = [p.name for p in (tmp_path / "candidates").iterdir() if not p.name.endswith((".pt", ".json"))]
    assert not left and not list((tmp_path / "candidates").glob("*.train-wall.json")), left  # no litter kept
    again = joint_search(
        build(tiny_spec(), BASE),
        estimator=estimator,
        target_ms=target,
        train_data=train_set,
        val_data=val_set,
        workdir=tmp_path,
        space=SPACE,
        base_teacher=True,
        config=config,
        progress=False,
        log=lambda _: None,
    )
    assert again.candidates == archive.candidates  # resumed: nothing redone, nothing added


def test_the_default_space_can_spend_saved_latency_on_a_larger_input() -> None:
    """The default head grid goes one size above the base's: a free student at fewer proposals and a
    1.25x input holds the base's weights exactly and runs at the larger size."""
    from jdnas_sdk.morph import morph_to
    from jdnas_sdk.search.free import free_students
    from jdnas_sdk.student import Student

    torch.manual_seed(0)
    spec = tiny_spec()
    base = build(spec, BASE).eval()
    space = SearchSpace(BASE, spec=spec)
    up = [s for _, s in free_students(Student.of(spec, BASE), space) if s.heads.min_size > spec.min_size]
    assert {s.heads.proposals for s in up} == set(space.head_values()["proposals"])
    student = morph_to(base, min(up, key=lambda s: s.heads.proposals)).eval()
    assert student.transform.min_size == (128,) and student.roi_heads.box_roi_pool is not None
    assert student.rpn._post_nms_top_n["testing"] == min(space.head_values()["proposals"])
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in student.state_dict().items())
    image = torch.rand(3, 96, 96)
    with torch.no_grad():
        boxes = student([image])[0]["boxes"]
    assert boxes.numel() == 0 or float(boxes.max()) <= 96  # detections in the image's own coordinates


@pytest.mark.parametrize(
    "settings", [dict(min_size=96, max_size=160), dict(rpn_pre_nms_top_n_test=400, rpn_post_nms_top_n_test=200)]
)
def test_head_moves_from_a_non_square_or_uneven_proposals_base_stay_in_its_space(settings: dict) -> None:
    """A size move scaled its parent's max_size (drifting from the space's, snapped from the base's, along a
    lineage: 120x200 -> 160 gave 160x267 where the space has 160x256), and a base keeping other counts
    before and after its RPN's NMS was outside its own space. Every move, every free student and a lineage
    of size moves there and back are the space's students, and the morph building one agrees."""
    from jdnas_sdk.detectors import describe
    from jdnas_sdk.errors import ArchError
    from jdnas_sdk.morph import morph
    from jdnas_sdk.search.free import free_students
    from jdnas_sdk.search.moves import apply_move, moves
    from jdnas_sdk.student import Heads, Student

    spec = tiny_spec(**settings)
    space = SearchSpace(BASE, spec=spec)
    base = Student.of(spec, BASE)
    assert space.why_not_student(base) is None
    head_moves = [m for m in moves(base, space) if hasattr(m, "knob")]
    assert {m.knob for m in head_moves} >= {"size", "proposals"}
    for move in head_moves:
        assert space.why_not_student(apply_move(base, move)) is None, move
    for _, student in free_students(base, space):
        assert space.why_not_student(student) is None, student

    def size_step(student: Student, up: bool) -> object:
        return next(
            m
            for m in moves(student, space)
            if getattr(m, "knob", "") == "size" and (m.value > student.heads.min_size) == up
        )

    grid = space.head_values()["size"]
    down = grid.index(spec.min_size)
    student = base  # down the size grid, up to its top and back to the base's size, one move at a time
    for up in [False] * down + [True] * (len(grid) - 1) + [False] * (len(grid) - 1 - down):
        student = apply_move(student, size_step(student, up))
        assert space.why_not_student(student) is None, student
    assert student == base
    proposals = space.head_values()["proposals"]  # fewer proposals and back: the base's own counts again
    fewer = apply_move(base, next(m for m in head_moves if m.knob == "proposals" and m.value < base.heads.proposals))
    back = next(m for m in moves(fewer, space) if getattr(m, "knob", "") == "proposals" and m.value > fewer.heads.pre)
    assert fewer.heads.pre == min(fewer.heads.proposals, base.heads.pre) and apply_move(fewer, back) == base, proposals
    size_move = next(m for m in head_moves if m.knob == "size")
    assert f"max_size={size_move.max_size}" in str(size_move)  # in a finished job's key: another student, another job
    with pytest.raises(ArchError, match="max_size goes with a size move"):
        type(size_move)("fpn", 32, max_size=160)
    built = morph(build(spec, BASE).eval(), [size_move])
    assert Heads.of(describe(built)[0]) == apply_move(base, size_move).heads


def test_free_moves_are_scored_untrained_before_any_trained_candidate(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path
) -> None:
    """The base's students that change no weight (fewer proposals, a smaller input) and are faster
    are candidates 1..F, each holding the base's weights exactly, untrained; the budget of trained
    candidates follows them; a search resumed after a kill among them redoes the same ones."""
    from dataclasses import replace

    from jdnas_sdk.detectors import read_detector_file
    from jdnas_sdk.search.free import free_students
    from jdnas_sdk.student import Student

    torch.manual_seed(0)
    spec = tiny_spec()
    base = build(spec, BASE)
    space = SearchSpace(BASE, width_ratios=(0.5, 1.0), spec=spec, heads={"proposals": (50, 1000), "size": (0.5, 1.0)})
    estimator = _estimator(slow_table)
    base_ms = estimator.total_ms(BASE)
    expected = [s for _, s in free_students(Student.of(spec, BASE), space) if estimator.total_ms(s) < base_ms]
    assert len(expected) >= 2  # fewer proposals, a smaller input, both
    kwargs = dict(
        estimator=estimator,
        target_ms=0.9 * base_ms,
        train_data=train_set,
        val_data=val_set,
        space=space,
        config=replace(FAST, candidates=1, free_moves=True),
        progress=False,
        log=lambda _: None,
    )
    archive = joint_search(base, workdir=tmp_path, **kwargs)
    free, trained = archive.candidates[1 : 1 + len(expected)], archive.candidates[1 + len(expected) :]
    assert [c.arch for c in free] == [str(s) for s in expected] and len(trained) == 1
    assert all(c.free for c in free) and not any(c.free for c in trained) and not archive.candidates[0].free
    for c in free:
        assert c.parent == 0 and c.latency_ms < base_ms and all(a.startswith("SetHead(") for a in c.actions)
        saved = read_detector_file(tmp_path / c.file)
        assert saved["metadata"]["steps"] == 0
        student = load_detector(tmp_path / c.file)
        assert str(Student.of(spec, BASE)) != c.arch
        for (name, a), b in zip(base.state_dict().items(), student.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    assert read_detector_file(tmp_path / trained[0].file)["metadata"]["steps"] == FAST.finetune_steps
    data = json.loads((tmp_path / "archive.json").read_text())
    data["candidates"] = data["candidates"][:2]  # killed among the free moves
    (tmp_path / "archive.json").write_text(json.dumps(data))
    resumed = joint_search(base, workdir=tmp_path, **kwargs)
    assert [(c.arch, c.ap) for c in resumed.candidates] == [(c.arch, c.ap) for c in archive.candidates]


def test_parent_reach_keeps_a_more_accurate_lineage_a_step_behind_the_bound_alive() -> None:
    from jdnas_sdk.search.archive import Candidate
    from jdnas_sdk.search.joint import _pick_parent

    def cand(index: int, ms: float, ap: float) -> Candidate:
        return Candidate(index, f"a{index}", 0, (), None, ms, ap, ap, ap, f"{index:03d}.pt")

    # the base, a 192 px student (accurate, a step over the bound) and a 128 px one (within, poor)
    base, near, within = cand(0, 31.9, 0.64), cand(1, 20.8, 0.54), cand(2, 11.4, 0.34)
    archive = [base, near, within]
    assert {_pick_parent(archive, 15.9, random.Random(s)).index for s in range(20)} == {2}
    assert {_pick_parent(archive, 15.9, random.Random(s), reach=0.3).index for s in range(20)} == {1}
    assert _pick_parent(archive, 7.0, random.Random(0), reach=0.3).index == 2  # none in reach: the fastest
    with pytest.raises(SearchError, match="parent_reach"):
        SearchConfig(parent_reach=1.0)


def test_compress_sizes_keeps_the_input_size_the_default_space_would_change(
    synth_root: Path, tmp_path: Path, slow_table: Path
) -> None:
    """``jdnas compress --sizes 1.0``: no candidate takes another input size, where the default
    space's free moves start with one (a smaller input can cap what a student reaches)."""
    from jdnas_sdk.cli import main
    from jdnas_sdk.student import Student

    spec = tiny_spec()
    save_detector(build(spec, BASE), base_file := tmp_path / "base.pt")
    args = ["compress", "--model", str(base_file), "--data", str(synth_root), "--target", str(slow_table)]
    args += ["--latency", "0.9", "--budget", "1", "--finetune-steps", "1", "--teacher", "none", "--final-steps", "0"]
    args += ["--select-images", "2", "--no-control", "-q"]

    def sizes(work: Path) -> set[int]:
        history = json.loads((work / "search" / "archive.json").read_text())["candidates"]
        return {Student.parse(c["arch"]).heads.min_size for c in history if "@" in c["arch"]}

    assert main([*args, "--workdir", str(tmp_path / "default")]) == 0
    assert main([*args, "--workdir", str(tmp_path / "kept"), "--sizes", "1.0"]) == 0
    assert sizes(tmp_path / "default") - {spec.min_size}  # the default space tried a smaller input
    assert sizes(tmp_path / "kept") <= {spec.min_size}
