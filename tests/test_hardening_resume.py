"""Resuming after a kill reads files a crash, a disk or a hand may have damaged: a training
checkpoint (``*.ckpt``) and a convergence curve (``*.curve.json``). Each damaged field is refused in
one line naming the file and the fix, before any of it is used or any step is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from jdnas_sdk import TrainingError, build_detector
from jdnas_sdk.converge import ConvergeConfig, train_until_converged
from jdnas_sdk.data import CocoDetection
from jdnas_sdk.train import TrainConfig, train

from .conftest import tiny_spec

CONFIG = TrainConfig(steps=2, batch_size=1, checkpoint_every=1)


def _edit(state: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    edited = dict(state)
    if value is KeyError:
        edited.pop(key)
    else:
        edited[key] = value
    return edited


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("step", "abc", "step 'abc' is not a step count"),
        ("step", KeyError, "step None is not a step count"),
        ("step", 10**30, "beyond this run's 2 steps"),
        ("history", [[1]], "damaged"),
        ("history", [[1, float("nan")]], "loss history is not finite"),
        ("model", [1], "model weights are a list, not a state_dict"),
        ("model", {"x": torch.tensor([float("nan")])}, "model weights are not finite"),  # not "lower the rate"
        ("optimizer", KeyError, "damaged \\(KeyError: 'optimizer'\\)"),
    ],
)
def test_a_damaged_checkpoint_field_is_named_and_nothing_is_trained(
    train_set: CocoDetection, tmp_path: Path, key: str, value: Any, problem: str
) -> None:
    ckpt = tmp_path / "run.ckpt"
    train(build_detector(tiny_spec()), train_set, config=CONFIG, checkpoint=ckpt, progress=False, stop_after=1)
    torch.save(_edit(torch.load(ckpt, weights_only=True), key, value), ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(TrainingError, match=problem):
        train(build_detector(tiny_spec()), train_set, config=CONFIG, checkpoint=ckpt, progress=False)
    assert ckpt.read_bytes() == before  # refused, not overwritten: the user decides what to do with it


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "damaged \\(Expecting value"),
        ("[]", "holds a list, not an object"),
        ('{"steps": 2, "surprise": 1}', "unknown keys: \\['surprise'\\]"),
        ('{"best_ap": NaN}', "NaN is not a number JSON allows"),
        ('{"best_ap": 1e308}', "field 'best_ap' is malformed"),
        ('{"curve": [{"step": -1, "select_ap": 0.5}]}', "field 'curve' is malformed"),
        ('{"cooldown": {"steps": 3}}', "field 'cooldown' is malformed"),
        ('{"steps": "4"}', "field 'steps' is malformed"),
        (b"\xff\xfe{}", "damaged \\('utf-8' codec"),
        (None, "damaged \\(\\[Errno 21\\] Is a directory"),
        ('{"steps": 4, "converged": false}', "records 4 steps, but neither base.pt nor its checkpoint"),
    ],
)
def test_a_damaged_or_orphaned_curve_file_is_refused_before_any_training(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, text: str | bytes | None, problem: str
) -> None:
    out, curve = tmp_path / "base.pt", tmp_path / "base.pt.curve.json"
    if text is None:
        curve.mkdir()
    elif isinstance(text, bytes):
        curve.write_bytes(text)
    else:
        curve.write_text(text, encoding="utf-8")
    converge = ConvergeConfig(eval_every=1, patience=1, max_steps=2, trend_window=0)
    with pytest.raises(TrainingError, match=problem):
        train_until_converged(
            build_detector(tiny_spec()), train_set, val_set, out, config=CONFIG, converge=converge, progress=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.pt.curve.json"]  # nothing trained or written


@pytest.mark.parametrize(
    ("outcome", "reused"),
    [
        ({"index": 3, "ap": 0.4, "ap50": 0.6, "ap75": 0.3, "worker": "h:1", "started": 1.0, "ended": 2.0}, True),
        ({"index": 3, "ap": 1e308, "ap50": 0.6, "ap75": 0.3}, False),  # would rank first as "AP inf"
        ({"index": 3, "ap": "high"}, False),
        ({"index": 3, "surprise": 1}, False),
        ([], False),
        ({"index": 3, "ap": 0.4, "started": -5.0}, False),
        ({"index": 3, "error": 7}, False),
    ],
)
def test_a_damaged_candidate_result_is_trained_again_never_ranked(
    tmp_path: Path, outcome: Any, reused: bool, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from jdnas_sdk.distill import KDConfig
    from jdnas_sdk.search.executor import CandidateJob, finished

    job = CandidateJob(3, str(tmp_path / "000.pt"), str(tmp_path / "003.pt"), 1, CONFIG, KDConfig())
    Path(job.out_file).write_bytes(b"student")
    job.result_file.write_text(json.dumps({"key": job.key(), "outcome": outcome}), encoding="utf-8")
    found = finished(job)
    assert (found is not None) == reused
    assert reused or "is damaged" in caplog.text and "training candidate 3 again" in caplog.text
    job.result_file.write_text('{"key": 1, "outcome": NaN', encoding="utf-8")  # truncated, or not JSON's
    assert finished(job) is None


def test_a_damaged_teacher_pool_checkpoint_is_named_too(tmp_path: Path) -> None:
    from jdnas_sdk import Arch, build
    from jdnas_sdk.teachers import ShrinkConfig, TeacherPool, shrink

    pool = TeacherPool.from_base(build(tiny_spec(), Arch.parse("basic:16|16:16x1|32:32x1|64:64x1|128:128x1")),
                                 widths=(1.0,), depth_delta=0)  # fmt: skip
    config, optimizer = ShrinkConfig(), torch.optim.SGD(pool.model.parameters(), lr=0.1)
    identity = shrink._identity(pool, config)
    state = {"format": shrink.CHECKPOINT_FORMAT, "version": 1, "step": "abc", "identity": identity,
             "model": pool.model.state_dict(), "optimizer": optimizer.state_dict(), "history": []}  # fmt: skip
    torch.save(state, tmp_path / "pool.ckpt")
    with pytest.raises(TrainingError, match="pool.ckpt is damaged \\(ValueError: step 'abc' is not a step count"):
        shrink._load(tmp_path / "pool.ckpt", pool, optimizer, config)
    torch.save({**state, "step": 0}, tmp_path / "pool.ckpt")
    _flip_middle(tmp_path / "pool.ckpt")
    with pytest.raises(TrainingError, match="pool.ckpt cannot be read .*fails its checksum"):
        shrink._load(tmp_path / "pool.ckpt", pool, optimizer, config)


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside a tensor's record: the archive's structure stays intact
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("shape", "optimizer state 'momentum_buffer' has shape \\(3,\\) for a parameter of"),  # failed steps later
        ("nan", "optimizer state 'momentum_buffer' is not finite"),  # was "lower the learning rate"
        ("flip", "fails its checksum"),  # loaded as other weights without a word
    ],
)
def test_a_damaged_optimizer_state_or_a_flipped_bit_is_refused_before_any_step(
    train_set: CocoDetection, tmp_path: Path, change: str, problem: str
) -> None:
    ckpt = tmp_path / "run.ckpt"
    train(build_detector(tiny_spec()), train_set, config=CONFIG, checkpoint=ckpt, progress=False, stop_after=1)
    if change == "flip":
        _flip_middle(ckpt)
    else:
        state = torch.load(ckpt, weights_only=True)
        buffers = next(iter(state["optimizer"]["state"].values()))  # the first parameter's
        momentum = buffers["momentum_buffer"]
        buffers["momentum_buffer"] = torch.zeros(3) if change == "shape" else torch.full_like(momentum, float("nan"))
        torch.save(state, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(TrainingError, match=problem):
        train(build_detector(tiny_spec()), train_set, config=CONFIG, checkpoint=ckpt, progress=False)
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (b"PK\x03\x04 truncated", "corrupt or truncated|not a zip"),
        ([1, 2], "not the finite weights"),
        ("nan", "not the finite weights"),  # was saved as the detector without a word
    ],
)
def test_a_damaged_best_weights_file_is_refused_before_the_resumed_run_trains(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, damage: Any, problem: str
) -> None:
    out, best = tmp_path / "base.pt", tmp_path / "base.pt.best"
    first = ConvergeConfig(eval_every=1, patience=9, max_steps=1, trend_window=0)
    train_until_converged(
        build_detector(tiny_spec()), train_set, val_set, out, config=CONFIG, converge=first, progress=False
    )
    if isinstance(damage, bytes):
        best.write_bytes(damage)
    elif damage == "nan":
        weights = torch.load(out, weights_only=True)["state_dict"]
        next(v for v in weights.values() if v.is_floating_point()).fill_(float("nan"))
        torch.save(weights, best)
    else:
        torch.save(damage, best)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    again = ConvergeConfig(eval_every=1, patience=9, max_steps=2, trend_window=0)
    with pytest.raises(TrainingError, match=f"base.pt.best, the best weights so far, cannot be read .*({problem})"):
        train_until_converged(
            build_detector(tiny_spec()), train_set, val_set, out, config=CONFIG, converge=again, progress=False
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # nothing trained or saved


def test_a_final_training_file_is_reused_only_whole_for_the_chosen_candidate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """final.pt was trusted on its metadata alone (another family's detector became the student); a truncated
    one stopped the run naming no fix. Either is trained again, with a warning saying why."""
    from jdnas_sdk import save_detector
    from jdnas_sdk.finish import _is_final_of

    chosen, done = tmp_path / "005.pt", tmp_path / "final.pt"
    wanted = {"candidate": 5, "final_steps": 4}
    save_detector(build_detector(tiny_spec()), chosen)
    save_detector(build_detector(tiny_spec()), done, metadata=wanted)
    assert _is_final_of(done, chosen, wanted)
    assert not _is_final_of(done, chosen, {**wanted, "final_steps": 8}) and "4 final steps" in caplog.text
    save_detector(build_detector(tiny_spec("retinanet")), done, metadata=wanted)
    assert not _is_final_of(done, chosen, wanted) and "holds another detector" in caplog.text
    done.write_bytes(done.read_bytes()[:1000])
    assert not _is_final_of(done, chosen, wanted) and "final.pt is corrupt" in caplog.text
