"""The evaluation protocol: disjoint train/select/test splits, adaptive BatchNorm, a converged base."""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from jdnas_sdk import Arch, DataError, TrainingError, build, load_detector, save_detector
from jdnas_sdk.data import (
    check_disjoint,
    load_any_split,
    load_protocol_splits,
    load_split,
    make_synthetic_dataset,
    split_val,
)
from jdnas_sdk.detectors import read_detector_file
from jdnas_sdk.finish import split_images
from jdnas_sdk.train import TrainConfig, recalibrate_bn

from .conftest import tiny_spec

ARCH = Arch.parse("basic:16|16:16x1|32:32x1|64:64x1|128:128x1")


def test_synth_writes_three_disjoint_splits_and_they_load(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d", train=4, val=0, select=3, test=3, size=64, seed=1, progress=False)
    train, select, test = load_protocol_splits(root)
    assert (len(train), len(select), len(test)) == (4, 3, 3)
    assert not (root / "annotations" / "instances_val.json").exists()
    pixels = [{bytes(d[i][0].flatten()[:300].numpy().tobytes()) for i in range(len(d))} for d in (train, select, test)]
    assert not (pixels[0] & pixels[1] or pixels[0] & pixels[2] or pixels[1] & pixels[2])  # other images, not renames
    # what a result file records to show it: the files, as ids repeat across split files (each numbers from 1)
    assert set(select.image_ids()) & set(test.image_ids())
    files = split_images((train, select, test))
    assert [len(files[k]) for k in ("train", "select", "test")] == [4, 3, 3]
    assert not (set(files["train"]) & set(files["select"]) or set(files["select"]) & set(files["test"]))
    assert all((root / name).is_file() for name in files["test"])  # relative to the dataset's folder
    os.symlink(root, tmp_path / "linked")  # loaded through a relative path to a link: the same names
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert split_images(load_protocol_splits(Path("linked"))) == files


def test_an_old_folder_has_its_val_cut_into_select_and_test_halves_by_image_id(
    synth_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO"):
        _, select, test = load_protocol_splits(synth_root)
    assert "cut in two by image id" in caplog.text
    val = load_split(synth_root, "val")
    assert sorted(select.image_ids() + test.image_ids()) == sorted(val.image_ids())
    assert not set(select.image_ids()) & set(test.image_ids()) and abs(len(select) - len(test)) <= 1
    assert select.image_ids() == split_val(val)[0].image_ids()  # deterministic
    kept = set(test.image_ids())
    assert {a["image_id"] for a in test.coco_ground_truth()["annotations"]} <= kept  # ground truth follows
    # one split by name (jdnas eval --split test): the same halves, so a result's test AP can be reproduced
    assert load_any_split(synth_root, "test").image_ids() == test.image_ids()
    assert load_any_split(synth_root, "select").image_ids() == select.image_ids()
    assert load_any_split(synth_root, "train").image_ids() == load_split(synth_root, "train").image_ids()
    with pytest.raises(DataError, match="no 'nope' split"):
        load_any_split(synth_root, "nope")


def test_one_split_by_name_follows_the_protocols_rule_in_a_folder_with_select_but_no_test(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d", train=2, val=4, select=3, test=0, size=64, seed=1, progress=False)
    _, select, test = load_protocol_splits(root)  # no test split: val's halves, as compress uses them
    assert load_any_split(root, "select").image_ids() == select.image_ids() and len(select) == 2
    assert load_any_split(root, "test").image_ids() == test.image_ids()


def test_overlapping_splits_and_folders_without_held_out_images_are_refused(synth_root: Path, tmp_path: Path) -> None:
    train = load_split(synth_root, "train")
    with pytest.raises(DataError, match="train and select splits share 12"):
        check_disjoint(train=train, select=train)
    # the same files spelled another way ('./a.png', 'sub/../a.png') are the same images: they passed as disjoint
    respelled = copy.copy(train)
    respelled.images = [{**img, "file_name": f"x/../{img['file_name']}"} for img in train.images[:2]]
    respelled.images[1]["file_name"] = "./" + train.images[1]["file_name"]
    with pytest.raises(DataError, match="train and test splits share 2"):
        check_disjoint(train=train, test=respelled)
    make_synthetic_dataset(tmp_path / "t", train=2, val=0, size=64, progress=False)
    with pytest.raises(DataError, match="--select 100 --test 100"):
        load_protocol_splits(tmp_path / "t")


def test_recalibrating_bn_fixes_deliberately_wrong_statistics(train_set: object) -> None:
    torch.manual_seed(0)
    model = build(tiny_spec(), ARCH)
    images = [train_set[i][0] for i in range(4)]  # type: ignore[index]
    batch = model.transform(images)[0].tensors

    def error() -> float:
        """How far eval-mode features (running statistics) are from batch-statistics features."""
        model.eval()
        with torch.no_grad():
            running = model.backbone(batch)["0"]
            model.train()
            live = model.backbone(batch)["0"]
        return float((running - live).pow(2).mean() / live.pow(2).mean())

    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.running_mean.add_(3.0)
            m.running_var.mul_(50.0)
    before, stats = error(), norms[0].running_mean.clone()
    assert recalibrate_bn(model, train_set, images=4) == 4
    assert not torch.equal(stats, norms[0].running_mean)
    after = error()
    assert after < 0.05 * before and after < 0.01, (before, after)
    # a last batch of one image at a 32 px student (1x1 maps in stage 4): torch refused it mid-search
    small = build(tiny_spec(min_size=32, max_size=32), ARCH)
    for count in (1, 5):
        assert recalibrate_bn(small, train_set, images=count) == count


def test_train_until_converged_stops_by_patience_keeps_the_best_and_records_the_curve(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    from jdnas_sdk.converge import ConvergeConfig, _stalled, curve_path, train_until_converged

    torch.manual_seed(0)
    model = build(tiny_spec(), ARCH)
    out = tmp_path / "base.pt"
    config = TrainConfig(batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=1)
    result = train_until_converged(
        model,
        train_set,
        val_set,
        out,
        config=config,
        converge=ConvergeConfig(eval_every=2, patience=1, max_steps=8),
        progress=False,
    )
    steps = [p["step"] for p in result.curve]
    assert steps == list(range(2, result.steps + 1, 2)) and result.steps <= 8
    assert result.converged == _stalled(result, ConvergeConfig(eval_every=2, patience=1, max_steps=8))
    assert result.converged or result.steps == 8
    assert result.rule == {"patience": 1, "min_delta": 0.002, "trend_window": 8, "min_trend": 0.01}
    assert result.best_ap == max(p["select_ap"] for p in result.curve)
    saved = json.loads(curve_path(out).read_text())
    assert saved["curve"] == result.curve and json.loads(read_detector_file(out)["metadata"]["curve"]) == result.curve
    again = train_until_converged(
        build(tiny_spec(), ARCH),
        train_set,
        val_set,
        out,
        config=config,
        converge=ConvergeConfig(eval_every=2, patience=1, max_steps=8),
        progress=False,
    )
    assert again.curve == result.curve  # done: nothing trained again


def test_training_that_never_beats_the_starting_ap_returns_the_starting_weights_exactly(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    from jdnas_sdk.converge import ConvergeConfig, train_until_converged
    from jdnas_sdk.evaluate import evaluate

    torch.manual_seed(0)
    model = build(tiny_spec(), ARCH)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start_ap = evaluate(copy.deepcopy(model), val_set, progress=False).ap
    result = train_until_converged(
        model,
        train_set,
        val_set,
        tmp_path / "grown.pt",
        config=TrainConfig(batch_size=2, optimizer="sgd", lr=1e4, warmup_steps=0),  # a rate that wrecks them
        converge=ConvergeConfig(eval_every=1, patience=2, max_steps=4),
        progress=False,
        keep_start=True,
    )
    assert result.curve[0] == {"step": 0, "select_ap": start_ap} and len(result.curve) == 3  # 0, 2 without a gain
    assert result.best_step == 0 and result.best_ap == start_ap and result.converged
    for state in (model.state_dict(), load_detector(tmp_path / "grown.pt").state_dict()):
        assert all(torch.equal(v, before[k]) for k, v in state.items())


def test_a_base_stopped_at_max_steps_continues_exactly_with_a_larger_max_steps(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    from jdnas_sdk.converge import ConvergeConfig, train_until_converged

    config = TrainConfig(batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=1)

    def run(out: Path, max_steps: int) -> object:
        torch.manual_seed(0)
        converge = ConvergeConfig(eval_every=2, patience=9, max_steps=max_steps)
        return train_until_converged(
            build(tiny_spec(), ARCH), train_set, val_set, out, config=config, converge=converge, progress=False
        )

    straight = run(tmp_path / "straight.pt", 4)
    first = run(tmp_path / "base.pt", 2)
    assert not first.converged and (tmp_path / "base.pt.ckpt").is_file()  # kept: the limit, not a plateau
    assert run(tmp_path / "base.pt", 2).curve == first.curve  # the same limit: done, nothing trained
    more = run(tmp_path / "base.pt", 4)
    assert [p["step"] for p in more.curve] == [2, 4]
    assert more.curve == straight.curve and more.best_ap == straight.best_ap  # as if never stopped
    other = val_set.head(len(val_set) - 1)  # type: ignore[attr-defined]
    for max_steps in (4, 6):  # done before (reused as it is) and continued (from its checkpoint)
        with pytest.raises(TrainingError, match="other select data"):
            train_until_converged(
                build(tiny_spec(), ARCH),
                train_set,
                other,
                tmp_path / "base.pt",
                config=config,
                converge=ConvergeConfig(eval_every=2, patience=9, max_steps=max_steps),
                progress=False,
            )


# select AP curves of the benchmark bases (benchmarks/results/train_base.md, steps 2200-2900 and
# 3000-3700): patience 3 stopped both, on noise, while each curve still rose
_FRCNN_TAIL = [60.2, 61.9, 64.4, 65.7, 66.7, 64.3, 64.9, 64.6]
_RETINA_TAIL = [33.2, 36.5, 37.5, 40.1, 41.0, 41.1, 40.4, 38.1]


def _curve(aps: list[float], start: int = 100, every: int = 100) -> list[dict[str, float]]:
    return [{"step": start + every * i, "select_ap": ap / 100} for i, ap in enumerate(aps)]


def test_patience_does_not_stop_a_curve_whose_trend_still_climbs() -> None:
    from jdnas_sdk.converge import ConvergeConfig, ConvergeResult, _stalled, trend_rise

    for tail, start in ((_FRCNN_TAIL, 2200), (_RETINA_TAIL, 3000)):
        curve = _curve(tail, start=start)
        # the last gain by min_delta (0.2 AP): 66.7 and 41.0 (RetinaNet's 41.1 after it gained only 0.1)
        improved = curve[4]["step"]
        result = ConvergeResult(curve=curve, best_step=improved, improved_step=improved)
        assert trend_rise(curve, 8) > 0.02  # both rose more than 2 AP across the window
        assert _stalled(result, ConvergeConfig(trend_window=0))  # what stopped them: patience alone
        assert not _stalled(result, ConvergeConfig())  # the default goes on
    # a plateau with evaluation noise (+-1 AP around 65) stops once patience is spent
    flat = _curve([65.0, 66.1, 64.2, 65.4, 66.3, 64.8, 65.9, 64.6, 65.2, 65.0], start=2000)
    assert abs(trend_rise(flat, 8)) < 0.01
    plateau = ConvergeResult(curve=flat, best_step=2400, improved_step=2400)
    assert _stalled(plateau, ConvergeConfig()) and not _stalled(plateau, ConvergeConfig(patience=6))
    # a falling curve stops; fewer than three points leave patience alone to judge
    falling = ConvergeResult(curve=_curve([50.0, 48.0, 46.0, 45.0]), best_step=100, improved_step=100)
    assert trend_rise(falling.curve, 8) < 0 and _stalled(falling, ConvergeConfig())
    short = ConvergeResult(curve=_curve([10.0, 20.0]), best_step=200, improved_step=0)
    assert trend_rise(short.curve, 8) is None and _stalled(short, ConvergeConfig(patience=2))


def test_the_kept_weights_are_named_with_the_steps_after_the_plateau_that_were_kept() -> None:
    from jdnas_sdk.converge import ConvergeResult

    # session 32's base: its starting weights (step 0) won the plateau, then one 4,800-step cycle was kept
    cycled = ConvergeResult(best_step=0, best_ap=0.785, cooldown=None)
    cycled.cycles = [{"steps": 4800, "select_ap": 0.785, "gain": 0.011, "kept": True}]
    assert cycled.best_text() == "best select AP 78.5 at step 0, then 4800 steps of cool-down and cycles"
    cycled.cooldown = {"steps": 300, "select_ap": 0.70, "kept": False}  # a cool-down select refused
    cycled.cycles.append({"steps": 4800, "select_ap": 0.780, "gain": -0.005, "kept": False})
    assert cycled.best_text().endswith("then 4800 steps of cool-down and cycles")
    assert ConvergeResult(best_step=300, best_ap=0.5).best_text() == "best select AP 50.0 at step 300"


@pytest.mark.parametrize("window", [-1, 1, 2])
def test_a_trend_window_that_cannot_fit_a_line_is_refused(window: int) -> None:
    from jdnas_sdk.converge import ConvergeConfig
    from jdnas_sdk.errors import TrainingError

    with pytest.raises(TrainingError, match="trend_window 0 \\(off\\) or >= 3"):
        ConvergeConfig(trend_window=window)


def test_a_cool_down_after_convergence_is_kept_only_where_select_says_it_is_better(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    from jdnas_sdk.converge import ConvergeConfig, curve_path, train_until_converged
    from jdnas_sdk.evaluate import evaluate

    torch.manual_seed(0)
    out = tmp_path / "base.pt"
    config = TrainConfig(batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=1)
    plain = ConvergeConfig(eval_every=2, patience=1, max_steps=4)
    first = train_until_converged(build(tiny_spec(), ARCH), train_set, val_set, out, config=config, converge=plain)
    assert first.cooldown is None
    best_before = first.best_ap
    # the same call asking for a cool-down: the converged file gets one, its steps trained from the best weights
    model = build(tiny_spec(), ARCH)
    cooled = train_until_converged(
        model, train_set, val_set, out, config=config, converge=replace(plain, cooldown_steps=3), progress=False
    )
    assert cooled.curve == first.curve and cooled.cooldown is not None and cooled.cooldown["steps"] == 3
    assert cooled.cooldown["kept"] == (cooled.cooldown["select_ap"] > best_before)
    assert cooled.best_ap == max(best_before, cooled.cooldown["select_ap"])
    # the file holds what the rule kept: its select AP is the best one recorded
    assert evaluate(load_detector(out), val_set, progress=False).ap == pytest.approx(cooled.best_ap, abs=1e-9)
    meta = read_detector_file(out)["metadata"]
    assert json.loads(meta["cooldown"]) == cooled.cooldown and json.loads(curve_path(out).read_text())["cooldown"]
    assert not list(tmp_path.glob("*.cooldown.ckpt"))  # the cool-down's checkpoint is not left behind
    # done: a third call trains nothing
    again = train_until_converged(
        build(tiny_spec(), ARCH), train_set, val_set, out, config=config, converge=replace(plain, cooldown_steps=3)
    )
    assert again.cooldown == cooled.cooldown


def test_rewound_cycles_run_while_one_gains_are_kept_by_select_and_resume_after_a_crash(
    train_set: object,
    val_set: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import jdnas_sdk.settle as settle_module
    from jdnas_sdk.converge import ConvergeConfig, train_until_converged
    from jdnas_sdk.evaluate import evaluate

    config = TrainConfig(batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=1)
    plain = ConvergeConfig(eval_every=2, patience=1, max_steps=4)
    torch.manual_seed(0)
    base = tmp_path / "a" / "base.pt"
    base.parent.mkdir()
    first = train_until_converged(build(tiny_spec(), ARCH), train_set, val_set, base, config=config, converge=plain)
    for name in ("b", "c"):
        (tmp_path / name).mkdir()
        for f in base.parent.iterdir():
            (tmp_path / name / f.name).write_bytes(f.read_bytes())
    # a gain of 100 AP is never reached: exactly one cycle runs, kept only where select beats the best
    once = replace(plain, cycle_steps=3, cycle_min_gain=1.0)
    model = build(tiny_spec(), ARCH)
    result = train_until_converged(model, train_set, val_set, base, config=config, converge=once, progress=False)
    assert result.curve == first.curve and len(result.cycles) == 1
    cycle = result.cycles[0]
    assert cycle["steps"] == 3 and cycle["gain"] == pytest.approx(cycle["select_ap"] - first.best_ap)
    assert cycle["kept"] == (cycle["select_ap"] > first.best_ap) and result.best_ap == max(
        cycle["select_ap"], first.best_ap
    )
    meta = read_detector_file(base)["metadata"]
    assert json.loads(meta["cycles"]) == result.cycles
    assert meta["steps"] == first.best_step + (3 if cycle["kept"] else 0)
    assert evaluate(load_detector(base), val_set, progress=False).ap == pytest.approx(result.best_ap, abs=1e-9)
    assert not list(base.parent.glob("*.ckpt"))
    # no gain asked: cycles go on to max_cycles unless one loses (a loss always stops them)
    two = replace(plain, cycle_steps=3, cycle_min_gain=0.0, max_cycles=2)
    caplog.set_level("WARNING", logger="jdnas_sdk.converge")
    more = train_until_converged(
        build(tiny_spec(), ARCH),
        train_set,
        val_set,
        tmp_path / "b" / "base.pt",
        config=config,
        converge=two,
        progress=False,
    )
    assert 1 <= len(more.cycles) <= 2 and (len(more.cycles) == 2 or more.cycles[0]["gain"] <= 0)
    still = len(more.cycles) == 2 and more.cycles[-1]["gain"] >= 0  # the most cycles ran and the last gained
    assert ("still gained" in caplog.text) == still
    # killed after a cycle trained but before it was scored: the same call finishes it from its checkpoint
    crashed = tmp_path / "c" / "base.pt"

    def killed(*_: object, **__: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(settle_module, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        train_until_converged(
            build(tiny_spec(), ARCH), train_set, val_set, crashed, config=config, converge=once, progress=False
        )
    assert (tmp_path / "c" / "base.pt.cycle1.ckpt").is_file()
    monkeypatch.undo()
    resumed = train_until_converged(
        build(tiny_spec(), ARCH), train_set, val_set, crashed, config=config, converge=once, progress=False
    )
    assert resumed.cycles == result.cycles and not list(crashed.parent.glob("*.ckpt"))


class _Watched:
    """Records which image ids a dataset's images were loaded for (a CocoDetection, really read)."""

    @staticmethod
    def wrap(dataset: object, seen: list[int]) -> object:
        from jdnas_sdk.data import CocoDetection

        class Watched(CocoDetection):
            def load_image(self, index: int) -> torch.Tensor:
                seen.append(self.images[index]["id"])
                return super().load_image(index)

        watched = object.__new__(Watched)
        watched.__dict__.update(dataset.__dict__)  # type: ignore[attr-defined]
        return watched


def test_compress_chooses_on_select_reads_test_only_for_the_final_numbers_and_trains_a_fair_control(
    synth_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The search's evaluations never load a test image: test images are read exactly three times
    each for numbers (base, student, control), besides the decode check before any work. The control
    trained as many steps as the student received.
    Candidates are recalibrated (adaptive BN) and each removes at most its share of latency."""
    import jdnas_sdk
    from jdnas_sdk.compress import Recipe
    from jdnas_sdk.space import SearchSpace

    from .test_compress import BASE, _slow_table

    train, select, test = load_protocol_splits(synth_root)  # the fixture's val, cut in halves
    select_seen: list[int] = []
    test_seen: list[int] = []
    torch.manual_seed(0)
    base = build(tiny_spec(), BASE)
    run: dict[str, Any] = dict(
        target=str(_slow_table(tmp_path / "slow.json")),
        train_data=train,
        latency=0.85,
        budget=3,
        workdir=tmp_path / "w",
        teacher="none",
        finetune_steps=2,
        recipe=Recipe(bn_images=4, max_step_share=0.3),
        space=SearchSpace(BASE),
        progress=False,
    )
    result = jdnas_sdk.compress(
        base,
        select_data=_Watched.wrap(select, select_seen),
        test_data=_Watched.wrap(test, test_seen),
        final_steps=3,
        **run,
    )
    # once each by the check before any work (decoded, seen by no model), then base, student and control
    assert sorted(test_seen) == sorted(list(test.image_ids()) * 4)
    assert set(select_seen) == set(select.image_ids()) and len(select_seen) >= 5 * len(select)  # check, base, 3 more
    m = result.metrics
    lineage = [c for c in result.history if c["index"] != 0]
    chosen = next(c for c in result.history if c["arch"] == str(result.arch) and c["index"] != 0)
    generations, at = 0, chosen
    while at["parent"] is not None:
        generations, at = generations + 1, result.history[at["parent"]]
    assert m["student"]["steps"] == m["control"]["steps"] == 2 * generations + 3
    assert read_detector_file(tmp_path / "w" / "control.pt")["metadata"]["control_steps"] == m["student"]["steps"]
    for name in ("base", "student", "control"):
        assert 0 <= m[name]["test_ap"] <= 1 and 0 <= m[name]["select_ap"] <= 1
    assert "claim: student test AP" in result.summary() and "control" in result.summary()
    assert f"{result.arch}@{m['student']['heads']}" in result.summary()  # the whole student, heads too
    for c in lineage:
        parent = result.history[c["parent"]]
        assert c["latency_ms"] >= 0.7 * parent["latency_ms"] - 1e-9  # gradual: at most 30% per step
        meta = read_detector_file(tmp_path / "w" / "search" / c["file"])["metadata"]
        assert meta["bn_images"] == 4
    report = (tmp_path / "w" / "report.md").read_text()
    assert "## Protocol" in report and "| control |" in report

    # called again with more final steps: the final training is redone, and says so; the control follows
    def rerun() -> Any:
        return jdnas_sdk.compress(base, select_data=select, test_data=test, final_steps=4, **run)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jdnas_sdk"):
        again = rerun()
    assert "3 final steps; this run asks" in caplog.text and "training it again" in caplog.text
    assert again.arch == result.arch and again.metrics["student"]["steps"] == m["student"]["steps"] + 1
    assert again.metrics["control"]["steps"] == again.metrics["student"]["steps"]
    # another detector's file under final.pt's name, even with the right metadata, is not adopted as the student
    final = tmp_path / "w" / "final.pt"
    forged = build(tiny_spec("retinanet"), BASE)
    save_detector(forged, final, metadata=read_detector_file(final)["metadata"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jdnas_sdk"):
        third = rerun()
    assert "holds another detector" in caplog.text and third.arch == result.arch
    assert type(load_detector(tmp_path / "w" / "student.pt")).__name__ == "FasterRCNN"


def test_the_capacity_gap_gives_a_smaller_student_a_smaller_teacher() -> None:
    import random

    from jdnas_sdk.cost import detector_cost
    from jdnas_sdk.search.teachers import gap_teacher
    from jdnas_sdk.teachers import TeacherPool

    from .test_compress import BASE

    pool = TeacherPool.from_base(build(tiny_spec(), BASE))
    small, large = Arch.parse("basic:16|16:16x1|16:16x1|32:32x1|32:32x1"), BASE
    macs = lambda arch: sum(v for k, v in detector_cost(pool.spec, arch).macs.items() if k != "heads")  # noqa: E731
    chosen = {
        name: gap_teacher(pool, arch, 2.0, random.Random(0)) for name, arch in (("small", small), ("large", large))
    }
    assert macs(pool.arch_of(chosen["small"])) < macs(pool.arch_of(chosen["large"]))
    assert chosen["large"] == pool.largest() or macs(pool.arch_of(chosen["large"])) >= macs(large)


def test_reordering_by_importance_keeps_the_function_and_leads_with_the_important_channels(train_set: object) -> None:
    from jdnas_sdk.detectors import thaw
    from jdnas_sdk.teachers import reorder_by_importance

    torch.manual_seed(0)
    model = thaw(build(tiny_spec(), Arch.parse("basic:16|16:16x2|32:32x1|64:64x1|128:128x1"))).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.1, 2.0)
                m.running_mean.uniform_(-0.5, 0.5)
    batch = model.transform([train_set[0][0]])[0].tensors  # type: ignore[index]
    before = model.backbone(batch)
    assert reorder_by_importance(model) == 5
    after = model.backbone(batch)
    assert all(torch.allclose(before[k], after[k], rtol=1e-4, atol=1e-4) for k in before)  # float reordering only
    bn1 = model.backbone.body.layer1[0].bn1
    score = bn1.weight.abs() + bn1.bias.abs()
    assert torch.equal(score, score.sort(descending=True).values)


def test_the_final_training_and_the_control_are_kept_only_where_select_says_they_gained(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    """keep_better judges the student's final training and the extra-steps control's by one rule:
    trained weights that score below their start on select give way to the start (the candidate's
    file, the base's numbers); trained weights that score at least as well are kept."""
    from jdnas_sdk.compress import Recipe
    from jdnas_sdk.detectors import save_detector
    from jdnas_sdk.finish import finish_student, run_controls
    from jdnas_sdk.prepare import CompressRun
    from jdnas_sdk.search import Candidate, SearchConfig
    from jdnas_sdk.student import Student

    torch.manual_seed(0)
    base = build(tiny_spec(), ARCH)
    save_detector(base, tmp_path / "search" / "candidates" / "000.pt")
    config = SearchConfig(candidates=1, finetune_steps=1, train=TrainConfig(batch_size=2, optimizer="adamw"))
    run = CompressRun(
        tmp_path, "joint", "none", None, None, train_set, val_set, val_set, config, False, Recipe(base_lr=1e-3)
    )
    start = {k: v.clone() for k, v in base.state_dict().items()}

    def best(ap: float) -> Candidate:
        return Candidate(0, str(ARCH), None, (), None, 1.0, ap, ap, ap, "candidates/000.pt")

    for ap, kept in ((2.0, "start"), (-1.0, "trained")):  # a start no training can beat / any training beats
        (tmp_path / "final.pt").unlink(missing_ok=True)
        row: dict[str, object] = {}
        student = finish_student(run, best(ap), 3, row)
        assert row["final_kept"] == kept
        same = all(torch.equal(start[k], v) for k, v in student.state_dict().items())
        assert same == (kept == "start")
        (tmp_path / "control.pt").unlink(missing_ok=True)
        metrics = {"base": {"select_ap": ap, "test_ap": 0.123, "ap": 0.123, "ap50": 0.2, "ap75": 0.1}}
        run_controls(run, metrics, Student.of(tiny_spec(), ARCH), 3, control=True, arch_control=False)
        assert metrics["control"]["kept"] == kept and metrics["control"]["steps"] == 3
        assert (metrics["control"]["test_ap"] == 0.123) == (kept == "start")
    off = replace(run, recipe=Recipe(keep_better=False))
    (tmp_path / "final.pt").unlink()
    row = {}
    finish_student(off, best(2.0), 3, row)
    assert "final_kept" not in row


def test_a_one_stage_student_that_only_keeps_fewer_boxes_trains_as_its_control(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    """``topk_candidates`` is read by inference alone: a candidate that is the base with fewer boxes
    kept before NMS trains step for step as the control; one that also takes another input does not."""
    from jdnas_sdk.compress import Recipe
    from jdnas_sdk.detectors import save_detector
    from jdnas_sdk.finish import final_is_control
    from jdnas_sdk.prepare import CompressRun
    from jdnas_sdk.search import Candidate, SearchConfig

    base = build(tiny_spec("retinanet"), ARCH)
    folder = tmp_path / "search" / "candidates"
    save_detector(base, folder / "000.pt")
    for index, edits in ((1, dict(topk_candidates=300)), (2, dict(topk_candidates=300, min_size=64))):
        student = build(replace(tiny_spec("retinanet"), **edits), ARCH)
        student.load_state_dict(base.state_dict())
        save_detector(student, folder / f"{index:03d}.pt")
    save_detector(base, tmp_path / "final.pt")  # the final training's output (only its presence is read)
    config = SearchConfig(candidates=1, finetune_steps=1, train=TrainConfig(batch_size=2, optimizer="adamw"))
    run = CompressRun(tmp_path, "joint", "none", None, None, train_set, val_set, val_set, config, False, Recipe())

    def chosen(index: int) -> Candidate:
        return Candidate(index, str(ARCH), 0, (), None, 1.0, 0.1, 0.1, 0.1, f"candidates/{index:03d}.pt")

    assert final_is_control(run, chosen(1), {"final_steps": 3}, 3)
    assert not final_is_control(run, chosen(2), {"final_steps": 3}, 3)  # the input size: training reads it


def test_a_control_that_would_repeat_the_final_training_takes_the_final_weights(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    """The base at fewer proposals (a free move), trained with no teacher, trains step for step as the
    extra-steps control does: the control then takes the final student's weights on the base's
    settings, and they are bit for bit what training the control would have made. A candidate that
    changes the input size (training sees it) or has other weights is trained on its own."""
    from jdnas_sdk.compress import Recipe
    from jdnas_sdk.detectors import save_detector
    from jdnas_sdk.finish import final_is_control, final_schedule, finish_student, run_controls
    from jdnas_sdk.prepare import CompressRun
    from jdnas_sdk.protocol import train_control
    from jdnas_sdk.search import Candidate, SearchConfig
    from jdnas_sdk.student import Student

    torch.manual_seed(0)
    base = build(tiny_spec(), ARCH)
    save_detector(base, tmp_path / "search" / "candidates" / "000.pt")
    for index, edits in ((1, dict(rpn_pre_nms_top_n_test=20, rpn_post_nms_top_n_test=20)), (2, dict(min_size=64))):
        free = build(replace(tiny_spec(), **edits), ARCH)
        free.load_state_dict(base.state_dict())
        save_detector(free, tmp_path / "search" / "candidates" / f"{index:03d}.pt")
    trained = load_detector(tmp_path / "search" / "candidates" / "001.pt")
    with torch.no_grad():
        trained.backbone.body.conv1.weight[0, 0, 0, 0] += 1e-3  # candidate 3: fewer proposals, other weights
    save_detector(trained, tmp_path / "search" / "candidates" / "003.pt")
    config = SearchConfig(candidates=1, finetune_steps=1, train=TrainConfig(batch_size=2, optimizer="adamw"))
    run = CompressRun(
        tmp_path, "joint", "none", None, None, train_set, val_set, val_set, config, False, Recipe(keep_better=False)
    )

    def chosen(index: int) -> Candidate:
        return Candidate(index, str(ARCH), 0, (), None, 1.0, 0.1, 0.1, 0.1, f"candidates/{index:03d}.pt")

    row: dict[str, object] = {}
    student = finish_student(run, chosen(1), 3, row)
    assert final_is_control(run, chosen(1), row, 3)
    assert not final_is_control(run, chosen(1), row, 4)  # a lineage that trained before the final steps
    assert not final_is_control(run, chosen(2), row, 3)  # another input size: training differs
    assert not final_is_control(run, chosen(3), row, 3)  # not the base's weights
    assert not final_is_control(run, chosen(1), {**row, "final_teacher": "base"}, 3)
    metrics: dict[str, dict[str, object]] = {}
    run_controls(run, metrics, Student.of(tiny_spec(), ARCH), 3, control=True, arch_control=False, same_as_final=True)
    assert metrics["control"]["trained_as"] == "final"
    shared = load_detector(tmp_path / "control.pt")
    assert shared.rpn._post_nms_top_n["testing"] == base.rpn._post_nms_top_n["testing"]  # the base's settings
    alone = train_control(
        tmp_path / "alone.pt",
        load_detector(tmp_path / "search" / "candidates" / "000.pt"),
        train_set,
        3,
        final_schedule(run.recipe, run.config),
        progress=False,
    )
    trained = alone.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in shared.state_dict().items())
    assert all(torch.equal(v, trained[k]) for k, v in student.state_dict().items())


def test_the_final_race_trains_the_best_candidates_and_the_winner_finishes_its_own_schedule(
    train_set: object, val_set: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race's contenders are the most accurate within the target, one per arch; each trains the
    first race steps of the final schedule and is scored on select alone (never test); the winner
    is the best on select after them, here the search's second (the race's scores are set, the
    training and evaluation are real); its checkpoint seeds the final training, which then equals
    training the winner straight through (the student receives exactly the final steps); losers'
    checkpoints go; a rerun trains nothing; a race with other steps starts over; a final checkpoint
    another candidate left is not resumed."""
    import jdnas_sdk.race as race_module
    from jdnas_sdk.compress import Recipe
    from jdnas_sdk.detectors import save_detector
    from jdnas_sdk.distill import finetune
    from jdnas_sdk.finish import final_schedule, finish_student
    from jdnas_sdk.prepare import CompressRun
    from jdnas_sdk.race import final_race, race_steps
    from jdnas_sdk.search import Candidate, SearchConfig
    from jdnas_sdk.search.archive import Archive
    from jdnas_sdk.student import Heads, Student

    torch.manual_seed(0)
    spec = tiny_spec()
    base = build(spec, ARCH)
    folder = tmp_path / "search" / "candidates"
    save_detector(base, folder / "000.pt")
    fewer = replace(Heads.of(spec), proposals=20, pre=20)
    free = build(fewer.apply(spec), ARCH)  # the base at fewer proposals (a free move)
    free.load_state_dict(base.state_dict())
    save_detector(free, folder / "001.pt")
    save_detector(build(spec, ARCH), folder / "002.pt")  # other weights: another lineage's student
    full, cut = str(Student.of(spec, ARCH)), str(Student(ARCH, fewer))

    def cand(index: int, arch: str, latency: float, ap: float, file: str) -> Candidate:
        return Candidate(index, arch, 0 if index else None, (), None, latency, ap, ap, ap, file)

    archive = Archive(path=tmp_path / "search" / "archive.json", settings={})
    archive.candidates = [
        cand(0, full, 10.0, 0.30, "candidates/000.pt"),  # the base: over the target
        cand(1, cut, 4.0, 0.20, "candidates/001.pt"),
        cand(2, full, 4.5, 0.25, "candidates/002.pt"),  # (latencies as the test needs them)
        cand(3, cut, 4.0, 0.10, "candidates/001.pt"),  # the same student reached again, scored lower
    ]
    assert [c.index for c in archive.top(5.0, 3)] == [2, 1]  # within 5 ms, best first, one per arch
    test_seen: list[int] = []
    test = _Watched.wrap(val_set, test_seen)
    config = SearchConfig(candidates=1, finetune_steps=1, train=TrainConfig(batch_size=2, optimizer="adamw"))
    recipe = Recipe(final_race=3, race_share=0.5, keep_better=False)
    run = CompressRun(tmp_path, "joint", "none", None, None, train_set, val_set, test, config, False, recipe)
    trained: list[int] = []
    real_finetune, real_evaluate = race_module.finetune, race_module.evaluate

    def counted(student: torch.nn.Module, **kw: object) -> object:
        trained.append(kw["stop_after"])  # type: ignore[arg-type]
        return real_finetune(student, **kw)  # type: ignore[arg-type]

    set_scores = iter([0.05, 0.40])  # candidate 2, then 1: the search's second wins

    def scored(model: torch.nn.Module, dataset: object, **kw: object) -> object:
        assert dataset is val_set
        return replace(real_evaluate(model, dataset, **kw), ap=next(set_scores))  # type: ignore[arg-type]

    monkeypatch.setattr(race_module, "finetune", counted)
    monkeypatch.setattr(race_module, "evaluate", scored)
    final_steps = 4
    race = final_race(run, archive, archive.best(5.0), 5.0, final_steps)
    steps = race_steps(final_steps, 0.5)
    assert steps == 2 and trained == [2, 2] and [r["candidate"] for r in race.contenders] == [2, 1]
    assert race.winner.index == 1 and [r["won"] for r in race.contenders] == [False, True]
    assert [r["race_select_ap"] for r in race.contenders] == [0.05, 0.40]
    assert race.checkpoint == tmp_path / "race" / "001.ckpt" and race.checkpoint.is_file()
    assert sorted(p.name for p in (tmp_path / "race").glob("*.ckpt")) == ["001.ckpt"]
    assert torch.load(race.checkpoint, weights_only=True)["step"] == steps
    again = final_race(run, archive, archive.best(5.0), 5.0, final_steps)  # a rerun: nothing trains again
    assert again.winner.index == 1 and trained == [2, 2]

    checkpoint = tmp_path / "final.pt.ckpt"  # left by a final training of candidate 2, killed
    checkpoint.write_bytes((tmp_path / "race" / "001.ckpt").read_bytes())
    (tmp_path / "final.pt.ckpt.json").write_text(json.dumps({"candidate": 2, "final_steps": final_steps}))
    row: dict[str, object] = {}
    student = finish_student(run, race.winner, final_steps, row, started=race.checkpoint)
    assert read_detector_file(tmp_path / "final.pt")["metadata"]["resumed_from"] == steps
    assert not race.checkpoint.exists() and not checkpoint.exists()  # served, and the final's own removed
    straight = load_detector(tmp_path / "search" / race.winner.file)
    finetune(straight, data=train_set, steps=final_steps, config=final_schedule(recipe, config), progress=False)
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), student.state_dict()[key].float(), atol=1e-5), key
    assert test_seen == []  # the race and the final training never read a test image

    monkeypatch.setattr(race_module, "evaluate", real_evaluate)
    longer = final_race(run, archive, archive.best(5.0), 5.0, 6)  # another schedule: raced again, 3 steps each
    assert trained == [2, 2, 3, 3] and all(r["race_steps"] == 3 for r in longer.contenders)
    assert torch.load(longer.checkpoint, weights_only=True)["step"] == 3
    single = final_race(replace(run, recipe=Recipe()), archive, archive.best(5.0), 5.0, final_steps)
    assert single.checkpoint is None and single.contenders == () and single.winner.index == 2


def test_a_failed_claim_with_a_smaller_input_names_the_cap_and_the_fix() -> None:
    from jdnas_sdk.protocol import claim, size_hint

    def row(ap: float, heads: str) -> dict:
        return {"test_ap": ap, "estimated_ms": 10.0, "heads": heads}

    base = row(0.749, "fpn64,in256x256,c4,w64")
    small, same = row(0.694, "fpn64,in192x192,c4,w64"), row(0.716, "fpn32,in256x256,c4,w48")
    control = {"test_ap": 0.764}
    hint = size_hint({"base": base, "student": small, "control": control})
    assert hint is not None and "192 px" in hint and "256 px" in hint and "--sizes 1.0" in hint
    assert "LESS accurate than the best of base and control" in claim(
        {"base": base, "student": small, "control": control}
    )
    alone = claim({"base": base, "student": small})  # control=False: no control to have been beaten
    assert "LESS accurate than the base (no control trained)" in alone and "control (" not in alone
    assert "says nothing" not in alone
    zeros = claim({"base": row(0.0, ""), "student": row(0.0, ""), "control": {"test_ap": 0.0}})
    assert "at least as accurate" in zeros and "every test AP is 0, so the tie says nothing" in zeros
    hair = claim({"base": row(4.2e-5, ""), "student": row(0.0, ""), "control": {"test_ap": 0.0}})
    assert "LESS accurate" in hair and "(base, 0.0; -0.0042)" in hair  # it read "-0.0" beside "LESS"
    assert size_hint({"base": base, "student": same, "control": control}) is None  # the input is the base's
    winner = row(0.77, "fpn64,in192x192,c4,w64")
    assert size_hint({"base": base, "student": winner, "control": control}) is None  # the claim holds
    assert size_hint({"base": {"test_ap": 0.7}, "student": {"test_ap": 0.6}}) is None  # no head codes: backbone only


def test_a_failed_claim_against_a_control_that_beat_the_base_names_a_longer_trained_base() -> None:
    from jdnas_sdk.protocol import Recipe, base_hint, hints

    base = {"test_ap": 0.749, "select_ap": 0.742, "estimated_ms": 32.0, "heads": "fpn64,in256x256,c4,w64"}
    student = {
        "test_ap": 0.748,
        "select_ap": 0.750,
        "estimated_ms": 15.0,
        "steps": 4890,
        "heads": "fpn48,in256x256,c4,w64",
    }
    improving = {"test_ap": 0.777, "select_ap": 0.774}  # the stop-31 row: +3.2 select AP from 4,890 steps
    hint = base_hint({"base": base, "student": student, "control": improving})
    assert hint is not None and "gained 3.2 select AP" in hint and "--cycle-steps 4890" in hint
    assert "--optimizer adamw --lr 0.001 --weight-decay 0.05" in hint  # the control's schedule, repeated
    slower = Recipe(base_lr=2e-4).train_config()
    slow = base_hint({"base": base, "student": student, "control": improving}, train=slower)
    assert slow is not None and "--lr 0.0002" in slow
    assert hints({"base": base, "student": student, "control": improving}) == [hint]  # the input was kept
    flat = {"test_ap": 0.755, "select_ap": 0.748}  # +0.6: the base had stopped improving
    assert base_hint({"base": base, "student": student, "control": flat}) is None
    assert base_hint({"base": base, "student": {**student, "test_ap": 0.78}, "control": improving}) is None  # held
    assert base_hint({"base": base, "student": {**student, "test_ap": 0.70}}) is None  # no control to read
