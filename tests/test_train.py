from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jdnas_sdk import NonFiniteLossError, TrainingError, build_detector
from jdnas_sdk.data import CocoDetection
from jdnas_sdk.detectors import read_detector_file
from jdnas_sdk.train import TrainConfig, learning_rate, train

from .conftest import assert_loss_falls, tiny_spec


def test_schedule_warms_up_then_decays() -> None:
    cfg = TrainConfig(steps=100, lr=0.1, warmup_steps=10, min_lr_ratio=0.0)
    rates = [learning_rate(cfg, s) for s in range(100)]
    assert rates[0] < 0.001 and rates[10] == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:11]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 0.001
    assert learning_rate(TrainConfig(steps=100, lr=0.1, warmup_steps=0, schedule="constant"), 99) == 0.1


def test_bad_options_are_named() -> None:
    with pytest.raises(TrainingError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(TrainingError, match="schedule"):
        TrainConfig(schedule="poly")


def test_loss_falls_on_a_repeated_batch(train_set: CocoDetection) -> None:
    torch.manual_seed(0)
    assert_loss_falls(build_detector(tiny_spec("fasterrcnn")), train_set)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly_where_it_stopped(train_set: CocoDetection, tmp_path: Path) -> None:
    cfg = TrainConfig(steps=4, batch_size=2, lr=0.01, warmup_steps=1, checkpoint_every=2)
    torch.manual_seed(1)
    straight = build_detector(tiny_spec())
    init = _state(straight)
    train(straight, train_set, config=cfg, progress=False)

    ckpt = tmp_path / "run.ckpt"
    interrupted = build_detector(tiny_spec())
    interrupted.load_state_dict(init)
    first = train(
        interrupted, train_set, config=TrainConfig(**{**cfg.__dict__, "steps": 2}), checkpoint=ckpt, progress=False
    )
    assert first.resumed_from == 0 and ckpt.is_file()
    resumed = build_detector(tiny_spec())  # fresh weights: everything must come from the checkpoint
    second = train(resumed, train_set, config=cfg, checkpoint=ckpt, progress=False)
    assert second.resumed_from == 2 and [s for s, _ in second.history] == [1, 2, 3, 4]
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-6), key


def test_stop_after_trains_the_start_of_the_schedule_and_the_same_call_finishes_it(
    train_set: CocoDetection, tmp_path: Path
) -> None:
    """The final race's contract: stopped after 2 of 4 steps, then resumed, equals 4 straight steps
    (the schedule is the 4-step one throughout); a stop needs a checkpoint and a step within it."""
    cfg = TrainConfig(steps=4, batch_size=2, lr=0.01, warmup_steps=1, checkpoint_every=50)
    torch.manual_seed(3)
    straight = build_detector(tiny_spec())
    init = _state(straight)
    train(straight, train_set, config=cfg, progress=False)
    ckpt = tmp_path / "race.ckpt"
    raced = build_detector(tiny_spec())
    raced.load_state_dict(init)
    first = train(raced, train_set, config=cfg, checkpoint=ckpt, progress=False, stop_after=2)
    assert first.steps == 2 and [s for s, _ in first.history] == [1, 2] and ckpt.is_file()
    resumed = build_detector(tiny_spec())
    second = train(resumed, train_set, config=cfg, checkpoint=ckpt, progress=False)
    assert second.resumed_from == 2 and second.steps == 4
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-6), key
    for bad in ({"stop_after": 5, "checkpoint": ckpt}, {"stop_after": 0, "checkpoint": ckpt}, {"stop_after": 2}):
        with pytest.raises(TrainingError, match="stop_after"):
            train(build_detector(tiny_spec()), train_set, config=cfg, progress=False, **bad)  # type: ignore[arg-type]


def test_checkpoint_of_another_run_is_refused(train_set: CocoDetection, tmp_path: Path) -> None:
    ckpt = tmp_path / "run.ckpt"
    train(
        build_detector(tiny_spec()),
        train_set,
        config=TrainConfig(steps=1, batch_size=1),
        checkpoint=ckpt,
        progress=False,
    )
    with pytest.raises(TrainingError, match="different run"):
        train(
            build_detector(tiny_spec()),
            train_set,
            config=TrainConfig(steps=2, batch_size=1, lr=0.5),
            checkpoint=ckpt,
            progress=False,
        )
    ckpt.write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="cannot be read"):
        train(
            build_detector(tiny_spec()),
            train_set,
            config=TrainConfig(steps=2, batch_size=1),
            checkpoint=ckpt,
            progress=False,
        )


def test_checkpoint_trained_on_other_data_is_refused(train_set: CocoDetection, tmp_path: Path) -> None:
    ckpt, config = tmp_path / "run.ckpt", TrainConfig(steps=2, batch_size=1, checkpoint_every=1)
    fewer = train_set.head(len(train_set) - 1)
    assert fewer.fingerprint() != train_set.fingerprint() == train_set.subset(train_set.image_ids()).fingerprint()
    train(build_detector(tiny_spec()), train_set, config=config, checkpoint=ckpt, progress=False, stop_after=1)
    with pytest.raises(TrainingError, match="trained on other data"):
        train(build_detector(tiny_spec()), fewer, config=config, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["step"] == 1  # refused before any step: the checkpoint is intact
    assert train(build_detector(tiny_spec()), train_set, config=config, checkpoint=ckpt, progress=False).steps == 2


def test_non_finite_loss_is_reported_and_checkpoint_kept(train_set: CocoDetection, tmp_path: Path) -> None:
    ckpt = tmp_path / "run.ckpt"
    model = build_detector(tiny_spec())
    train(model, train_set, config=TrainConfig(steps=1, batch_size=1), checkpoint=ckpt, progress=False)
    saved = ckpt.read_bytes()

    def poison(*_: object) -> dict[str, torch.Tensor]:
        return {"poison": torch.tensor(float("nan"))}

    with pytest.raises(NonFiniteLossError, match=r"step 1 .*poison=nan.*is kept.*Lower the learning rate"):
        train(
            model,
            train_set,
            config=TrainConfig(steps=3, batch_size=1),
            checkpoint=ckpt,
            extra_losses=poison,
            progress=False,
        )
    assert ckpt.read_bytes() == saved


def test_extra_losses_are_optimised(train_set: CocoDetection) -> None:
    model = build_detector(tiny_spec())
    seen: list[str] = []

    def extra(
        model: torch.nn.Module, images: list[torch.Tensor], targets: object, losses: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        seen.append(",".join(sorted(losses)))
        return {"l2": 1e-3 * sum((p**2).sum() for p in model.roi_heads.box_predictor.parameters())}

    before = model.roi_heads.box_predictor.cls_score.weight.detach().clone()
    train(model, train_set, config=TrainConfig(steps=2, batch_size=1), extra_losses=extra, progress=False)
    assert len(seen) == 2 and "loss_classifier" in seen[0]
    assert not torch.equal(before, model.roi_heads.box_predictor.cls_score.weight)


def test_empty_data_and_frozen_models_are_refused(train_set: CocoDetection) -> None:
    with pytest.raises(TrainingError, match="empty"):
        train(build_detector(tiny_spec()), torch.utils.data.Subset(train_set, []), progress=False)
    frozen = build_detector(tiny_spec())
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(TrainingError, match="no trainable parameters"):
        train(frozen, train_set, progress=False)


def test_a_time_file_left_beside_a_finished_file_is_not_counted(train_set: CocoDetection, tmp_path: Path) -> None:
    """Killed between removing the checkpoint and the time file, a finished ``out`` keeps a time file: the
    next training of ``out`` from the start drops it rather than adding a finished training's time."""
    from jdnas_sdk.train import train_to_file, wall_path

    out = tmp_path / "base.pt"
    config = TrainConfig(steps=1, batch_size=1)
    torch.manual_seed(0)
    train_to_file(build_detector(tiny_spec()), train_set, out, config=config, progress=False)
    wall_path(out).write_text(json.dumps({"wall_s": 5000.0, "sittings": 3}))  # what the kill left
    again = train_to_file(build_detector(tiny_spec()), train_set, out, config=config, progress=False)
    meta = read_detector_file(out)["metadata"]
    assert meta["sittings"] == 1 and again.wall_s == meta["train_wall_s"] < 1000
    assert not wall_path(out).exists()
