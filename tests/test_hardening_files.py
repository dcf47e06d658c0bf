"""Damaged detector and pool files (issue 16, item 4): a DetectorFileError naming the file and
field, before anything is allocated."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest
import torch

from jdnas_sdk import build_detector, load_detector, save_detector, standard_arch
from jdnas_sdk.errors import DetectorFileError
from jdnas_sdk.teachers import TeacherPool

from .conftest import tiny_spec


def _edited(source: Path, target: Path, section: str, **changes: Any) -> Path:
    payload = torch.load(source, weights_only=True)
    payload[section].update(changes)
    torch.save(payload, target)
    return target


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "d.pt"
    save_detector(build_detector(tiny_spec(), standard_arch("resnet18")), path)
    return path


@pytest.mark.parametrize(
    "changes",
    [
        {"num_classes": 10**9},  # a 1e9-class box predictor: hundreds of GB
        {"representation_size": 10**6, "num_classes": 10**4},
        {"fpn_channels": 2**20},
    ],
)
def test_absurd_sizes_are_refused_without_allocating_them(
    detector_file: Path, tmp_path: Path, changes: dict[str, int]
) -> None:
    bad = _edited(detector_file, tmp_path / "bad.pt", "spec", **changes)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DetectorFileError, match=str(bad)):
        load_detector(bad)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 512, grown_mib


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "pool.pt"
    base = build_detector(tiny_spec(), standard_arch("resnet18"))
    TeacherPool.from_base(base, widths=(1.0, 1.25), depth_delta=1).save(path)
    return path


@pytest.mark.parametrize(
    "changes",
    [
        {"teacher_widths": "0,1.25"},
        {"teacher_widths": "nan,1"},
        {"teacher_widths": "1,inf"},
        {"depth_delta": "inf"},
        {"depth_delta": -1},
        {"multiple": 0},
        {"multiple": 1e308},
        {"teacher_widths": 7},
    ],
)
def test_pool_metadata_with_zero_nan_or_inf_is_a_detector_file_error(
    pool_file: Path, tmp_path: Path, changes: dict[str, Any]
) -> None:
    bad = _edited(pool_file, tmp_path / "pool.pt", "metadata", **changes)
    with pytest.raises(DetectorFileError, match="teacher-pool metadata") as info:
        TeacherPool.load(bad)
    assert str(bad) in str(info.value)


def test_an_intact_pool_still_loads(pool_file: Path) -> None:
    assert TeacherPool.load(pool_file).widths == (1.0, 1.25)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda p: p["state_dict"].update({"extra": [1, 2]}), "other than named tensors"),
        (lambda p: p["state_dict"].update({7: torch.zeros(1)}), "other than named tensors"),
        (lambda p: p["metadata"].update(note=torch.zeros(2)), "metadata is not plain data"),
        (lambda p: p["spec"].update(family=5), "invalid detector spec"),
    ],
)
def test_jdnas_info_on_a_damaged_file_says_so_in_one_line(
    detector_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, problem: str
) -> None:
    from jdnas_sdk.cli import main

    payload = torch.load(detector_file, weights_only=True)
    edit(payload)
    torch.save(payload, tmp_path / "bad.pt")
    assert main(["info", "--model", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jdnas info: error: ") and problem in err and len(err.strip().splitlines()) == 1
    payload = torch.load(detector_file, weights_only=True)
    del payload["sdk_version"]  # written by older versions: shown as unknown, not a KeyError
    torch.save(payload, tmp_path / "old.pt")
    assert main(["info", "--model", str(tmp_path / "old.pt")]) == 0
    assert '"sdk_version": null' in capsys.readouterr().out
