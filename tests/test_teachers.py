"""The elastic teacher pool: slices are exact, sampling needs no training, shrinking trains and resumes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jdnas_sdk import Arch, ArchError, DetectorFileError, build, describe, save_detector
from jdnas_sdk.data import CocoDetection
from jdnas_sdk.detectors import read_detector_file
from jdnas_sdk.report import pool_report
from jdnas_sdk.teachers import ShrinkConfig, TeacherConfig, TeacherPool, phase_of, train_pool
from jdnas_sdk.train import TrainConfig, wall_path

from .conftest import tiny_spec

BASE = Arch.parse("basic:16|16:16x2|32:32x2|64:64x2|128:128x2")


def _outputs(model: torch.nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model.eval().backbone(image[None])


@pytest.fixture(scope="module")
def pool() -> TeacherPool:
    torch.manual_seed(0)
    return TeacherPool.from_base(build(tiny_spec(), BASE).eval(), widths=(0.5, 1.0, 1.5), depth_delta=1)


def test_the_pool_is_larger_than_the_base_and_holds_it_exactly(pool: TeacherPool) -> None:
    assert pool.max_arch.depths == (3, 3, 3, 3) and pool.max_arch.widths == (24, 48, 96, 192)
    torch.manual_seed(0)
    base = build(tiny_spec(), BASE).eval()
    image = torch.rand(3, 96, 96)
    extracted = pool.extract(pool.base_config())
    assert describe(extracted)[1] == BASE
    for key, value in _outputs(base, image).items():
        assert torch.allclose(value, _outputs(extracted, image)[key], atol=1e-5)
    with torch.no_grad():  # the grown largest network still computes the base's function
        grown = pool.model.eval()([image])[0]["scores"]
        assert torch.allclose(grown, base([image])[0]["scores"], atol=1e-4)


def test_a_sampled_teacher_equals_its_slice_of_the_pool(pool: TeacherPool) -> None:
    image = torch.rand(3, 96, 96)
    largest = pool.extract(pool.largest())
    for key, value in _outputs(pool.model, image).items():
        assert torch.equal(value, _outputs(largest, image)[key])
    config = TeacherConfig((2, 3, 1, 2), (0.5, 1.5, 1.0, 0.5))
    teacher = pool.extract(config)
    assert describe(teacher)[1] == pool.arch_of(config)
    state = dict(pool.model.state_dict())
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, state[name][tuple(slice(0, s) for s in value.shape)] if value.dim() else state[name])


def test_sampling_recalibrates_batchnorm_without_training(pool: TeacherPool, train_set: CocoDetection) -> None:
    config = TeacherConfig((1, 2, 1, 1), (0.5, 0.5, 1.0, 1.0))
    before = pool.extract(config).backbone.body.bn1.running_var.clone()
    teacher = pool.sample(config, calibration=train_set, batches=2, batch_size=2)
    after = teacher.backbone.body.bn1.running_var
    assert not teacher.training and not torch.allclose(before, after)
    weights = dict(pool.model.named_parameters())
    assert torch.equal(teacher.backbone.body.conv1.weight, weights["backbone.body.conv1.weight"][:8])


def test_configs_parse_mutate_and_are_checked(pool: TeacherPool) -> None:
    config = TeacherConfig((2, 3, 1, 2), (0.5, 1.5, 1.0, 0.5))
    assert TeacherConfig.parse(str(config)) == config and str(config) == "d2.3.1.2-w0.5,1.5,1,0.5"
    assert sum(1 for _ in pool.configs()) == 3**4 * 3**4
    rng = random.Random(0)
    for _ in range(20):
        neighbour = pool.mutate(config, rng)
        pool.check(neighbour)
        changed = sum(a != b for a, b in zip(neighbour.depths + neighbour.widths, config.depths + config.widths))
        assert changed == 1
    with pytest.raises(ArchError, match="depth must be one of"):
        pool.check(TeacherConfig((5, 2, 2, 2), (1.0,) * 4))
    with pytest.raises(ArchError, match="d2.2.2.2-w1,1,1.25,1"):
        TeacherConfig.parse("big")


def test_gradients_of_a_teacher_land_in_its_slices(pool: TeacherPool) -> None:
    teacher = pool.extract(pool.smallest())
    for p in teacher.parameters():
        p.grad = torch.ones_like(p)
    pool.model.zero_grad(set_to_none=True)
    pool.accumulate_grads(teacher)
    grad = dict(pool.model.named_parameters())["backbone.body.conv1.weight"].grad
    assert grad is not None and grad[:8].eq(1).all() and grad[8:].eq(0).all()


def test_progressive_shrinking_trains_every_phase(train_set: CocoDetection, tmp_path: Path) -> None:
    torch.manual_seed(0)
    pool = TeacherPool.from_base(build(tiny_spec(), BASE), widths=(0.5, 1.0), depth_delta=1)
    config = ShrinkConfig(
        train=TrainConfig(steps=4, batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=0), phases=(0.25, 0.25, 0.5)
    )
    assert [phase_of(config, s) for s in range(4)] == [0, 1, 2, 2]
    before = {k: v.clone() for k, v in pool.model.state_dict().items()}
    result = train_pool(pool, train_set, config=config, checkpoint=tmp_path / "pool.ckpt", progress=False)
    assert len(result.history) == 4 and all(torch.isfinite(torch.tensor(v)) for _, v in result.history)
    changed = [
        k for k, v in pool.model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    assert "backbone.body.layer4.2.conv2.weight" in changed  # the added block trains too
    pool.save(tmp_path / "pool.pt")
    loaded = TeacherPool.load(tmp_path / "pool.pt")
    assert loaded.max_arch == pool.max_arch and loaded.widths == pool.widths
    save_detector(build(tiny_spec(), BASE), tmp_path / "plain.pt")
    with pytest.raises(DetectorFileError, match="not a teacher pool"):
        TeacherPool.load(tmp_path / "plain.pt")


def test_pool_report_lists_accuracy_and_modelled_latency(
    pool: TeacherPool, train_set: CocoDetection, val_set: CocoDetection
) -> None:
    report = pool_report(pool, val_data=val_set, calibration=train_set, target="v100-trt", count=3, split="test")
    assert f"`test` split ({len(val_set)} images)" in report.to_markdown() and report.to_dict()["split"] == "test"
    assert [r.config for r in report.rows] == [str(pool.largest()), str(pool.base_config()), str(pool.smallest())]
    assert all(r.latency_ms > 0 and 0 <= r.ap <= 1 for r in report.rows)
    assert report.rows[0].latency_ms > report.rows[2].latency_ms and report.rows[0].params > report.rows[2].params
    assert report.modelled and "MODELLED" in report.to_markdown()
    assert "`basic:" in report.to_markdown() and "\\|" in report.to_markdown()  # arch codes escaped in their cells
    single = TeacherPool.from_base(build(tiny_spec(), BASE).eval(), widths=(1.0,), depth_delta=0)  # one teacher only
    lone = pool_report(single, val_data=val_set, calibration=train_set, target="v100-trt", count=6)
    assert [r.config for r in lone.rows] == [str(single.largest())]
    two = pool_report(pool, val_data=val_set, calibration=train_set, target="v100-trt", count=2)
    assert [r.config for r in two.rows] == [str(pool.largest()), str(pool.base_config())]  # --count 2: two


def test_kill_9_during_teacher_training_then_the_same_command_resumes(synth_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    base_file = tmp_path / "base.pt"
    save_detector(build(tiny_spec(), BASE), base_file)
    out = tmp_path / "pool.pt"
    ckpt = Path(str(out) + ".ckpt")
    args = [
        sys.executable,
        "-m",
        "jdnas_sdk.cli",
        "teachers",
        "train",
        "--data",
        str(synth_root),
        "--base",
        str(base_file),
        "--out",
        str(out),
        "--steps",
        "8",
        "--batch-size",
        "1",
        "--checkpoint-every",
        "2",
        "--widths",
        "0.5,1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ckpt.exists(), first.communicate()[0]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not out.exists()
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed at step" in second.stdout and not ckpt.exists()
    assert TeacherPool.load(out).max_arch.depths == (3, 3, 3, 3)
    # the pool's training time counts both sittings, as a detector file's does (test_cli's kill -9)
    assert read_detector_file(out)["metadata"]["sittings"] == 2 and not wall_path(out).exists()
