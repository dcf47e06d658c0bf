"""A teacher stronger than the base: the pool's largest grown on select, frozen, and given when chosen."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from jdnas_sdk import Arch, DetectorFileError, build, describe, load_detector, save_detector
from jdnas_sdk.converge import ConvergeConfig
from jdnas_sdk.data import CocoDetection
from jdnas_sdk.detectors import read_detector_file
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.prepare import teacher_pool
from jdnas_sdk.teachers import TeacherPool, grow_teacher
from jdnas_sdk.train import TrainConfig

from .conftest import tiny_spec

BASE = Arch.parse("basic:16|16:16x2|32:32x2|64:64x2|128:128x2")
FAST = TrainConfig(batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=0)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_grown_teacher_is_the_best_select_weights_frozen_and_given_for_the_largest(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    pool = TeacherPool.from_base(build(tiny_spec(), BASE), widths=(0.5, 1.0), depth_delta=1)
    before = _state(pool.model)
    start = copy.deepcopy(pool.model)
    out = tmp_path / "pool.largest.pt"
    grown = grow_teacher(
        pool,
        train_set,
        val_set,
        out,
        base_select_ap=0.5,
        config=FAST,
        converge=ConvergeConfig(eval_every=1, patience=1, max_steps=3),
        progress=False,
    )
    assert out.is_file() and grown.file == str(out) and 0 <= grown.best_step <= grown.steps <= 3
    assert grown.stronger == (grown.select_ap > 0.5) and grown.to_json()["stronger"] == grown.stronger
    curve = json.loads(read_detector_file(out)["metadata"]["curve"])
    # the starting weights, measured on select, are step 0 of the curve
    assert curve[0] == {"step": 0, "select_ap": evaluate(start, val_set, progress=False).ap}
    # the pool's network holds the best weights, which the file holds too: trained ones where a
    # trained step won, else exactly the starting ones
    frozen = load_detector(out)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in pool.model.state_dict().items())
    changed = any(not torch.equal(v, before[k]) for k, v in pool.model.state_dict().items() if v.is_floating_point())
    assert changed == (grown.best_step > 0)
    assert evaluate(frozen, val_set, progress=False).ap == pytest.approx(grown.select_ap, abs=1e-9)
    # chosen as the largest, the frozen file is what a student gets, even after the pool trains on
    pool.frozen_largest = out
    with torch.no_grad():
        for p in pool.model.parameters():
            p.add_(0.1)
    given = pool.sample(pool.largest())
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in given.state_dict().items())
    assert not given.training
    # another teacher is still a slice of the pool
    small = pool.sample(pool.smallest())
    assert describe(small)[1] != describe(given)[1]


def test_a_pool_trained_with_grow_steps_records_its_frozen_teacher_and_loads_it_back(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    base = build(tiny_spec(), BASE)
    path = tmp_path / "pool.pt"
    pool = teacher_pool(base, train_set, path=path, steps=2, seed=0, progress=False, select_data=val_set, grow_steps=2)
    frozen = tmp_path / "pool.largest.pt"
    assert pool.frozen_largest == frozen and frozen.is_file()
    meta = read_detector_file(path)["metadata"]
    assert meta["frozen_largest"] == "pool.largest.pt"  # a name beside the pool, never a path elsewhere
    assert json.loads(read_detector_file(frozen)["metadata"]["curve"])  # its select curve is kept
    again = TeacherPool.load(path)
    assert again.frozen_largest == frozen.resolve()
    given, kept = again.sample(again.largest()), load_detector(frozen).state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in given.state_dict().items())


@pytest.mark.parametrize("name", ["../elsewhere.pt", "missing.pt", "/etc/passwd"])
def test_a_pool_file_naming_a_frozen_teacher_outside_its_folder_or_missing_is_refused(
    name: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    pool = TeacherPool.from_base(build(tiny_spec(), BASE), widths=(1.0,), depth_delta=0)
    folder = tmp_path / "pools"
    folder.mkdir()
    (tmp_path / "elsewhere.pt").write_bytes(b"x")
    pool.save(folder / "pool.pt", metadata={"frozen_largest": name})
    with pytest.raises(DetectorFileError, match="frozen largest teacher"):
        TeacherPool.load(folder / "pool.pt")


def test_a_pool_file_naming_another_network_as_its_frozen_teacher_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pool = TeacherPool.from_base(build(tiny_spec(), BASE), widths=(1.0, 1.25), depth_delta=0)
    save_detector(build(tiny_spec(), BASE), tmp_path / "base.pt")  # the narrower base, not the largest network
    save_detector(pool.extract(pool.largest()), tmp_path / "largest.pt")
    pool.save(tmp_path / "pool.pt", metadata={"frozen_largest": "base.pt"})
    with pytest.raises(DetectorFileError, match="frozen largest teacher base.pt is not the pool's largest network"):
        TeacherPool.load(tmp_path / "pool.pt")
    pool.save(tmp_path / "pool.pt", metadata={"frozen_largest": "largest.pt"})
    assert TeacherPool.load(tmp_path / "pool.pt").frozen_largest == (tmp_path / "largest.pt").resolve()
