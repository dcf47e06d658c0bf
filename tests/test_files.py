from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from jdnas_sdk import DetectorFileError, build_detector, load_detector, save_detector, spec_of
from jdnas_sdk.detectors.files import FORMAT_VERSION, read_detector_file

from .conftest import tiny_spec


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_detector(tiny_spec("retinanet", num_classes=4, category_ids=(2, 5, 9), class_names=("a", "b", "c")))
    # give BN buffers non-default values so that a lost buffer would show
    model.train()
    with torch.no_grad():
        model.backbone(torch.rand(2, 3, 96, 96))
    path = tmp_path_factory.mktemp("files") / "det.pt"
    save_detector(model, path, metadata={"steps": 3, "note": "x"})
    return model.eval(), path


def test_round_trip_gives_identical_outputs(saved: tuple[torch.nn.Module, Path]) -> None:
    model, path = saved
    loaded = load_detector(path)
    assert spec_of(loaded) == spec_of(model)
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    loaded.score_thresh = model.score_thresh = 0.0
    image = [torch.rand(3, 80, 96)]
    with torch.no_grad():
        a, b = model(image)[0], loaded(image)[0]
    assert a["boxes"].numel() and torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    assert read_detector_file(path)["metadata"] == {"steps": 3, "note": "x"}


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DetectorFileError, match="no such file"):
        load_detector(tmp_path / "nope.pt")
    with pytest.raises(DetectorFileError, match="directory"):
        load_detector(tmp_path)


def test_truncated_and_garbage_files_are_reported(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DetectorFileError, match="corrupt, truncated"):
        load_detector(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 100)
    with pytest.raises(DetectorFileError, match="corrupt, truncated"):
        load_detector(garbage)


def test_a_flipped_bit_inside_the_weights_is_reported_not_loaded(
    saved: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    _, path = saved
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside a weight tensor's record: the archive's structure stays intact
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(DetectorFileError, match="fails its checksum"):
        load_detector(flipped)


class Exploit:
    """Unpickling this would create a file: proof that code ran."""

    marker: Path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = Exploit()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format": "jdnas-detector", "format_version": 1, "payload": evil}, path)
    with pytest.raises(DetectorFileError, match="could run code") as info:
        load_detector(path)
    assert not marker.exists()
    assert "weights_only` set to `False`" not in str(info.value)  # torch's advice to load it unsafely is not repeated
    assert "Path.touch" in str(info.value) or "GLOBAL" in str(info.value)  # what it would have run


def test_a_detector_file_with_nan_weights_is_refused_naming_the_tensor(
    saved: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    """It loaded without a word: eval reported AP 0.0, compress ran its search and blamed the rate."""
    model, _ = saved
    with torch.no_grad():
        next(p for p in model.parameters()).view(-1)[0] = float("nan")
    save_detector(model, tmp_path / "nan.pt")
    with pytest.raises(DetectorFileError, match="nan.pt is damaged: its weights hold NaN or inf \\(backbone"):
        load_detector(tmp_path / "nan.pt")


def test_foreign_files_are_named(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, state)
    with pytest.raises(DetectorFileError, match="bare state_dict"):
        load_detector(state)
    other = tmp_path / "other.pt"
    torch.save([1, 2, 3], other)
    with pytest.raises(DetectorFileError, match="not a jdnas detector file"):
        load_detector(other)
    zipped = tmp_path / "x.pt"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(DetectorFileError):
        load_detector(zipped)


def _rewrite(path: Path, out: Path, **changes: object) -> Path:
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, out)
    return out


def test_newer_format_and_bad_fields(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    _, path = saved
    with pytest.raises(DetectorFileError, match="upgrade jdnas-sdk"):
        load_detector(_rewrite(path, tmp_path / "new.pt", format_version=FORMAT_VERSION + 1))
    with pytest.raises(DetectorFileError, match="invalid detector spec"):
        load_detector(
            _rewrite(path, tmp_path / "spec.pt", spec={"family": "yolo", "backbone": "resnet18", "num_classes": 3})
        )
    payload = torch.load(path, weights_only=True)
    state = dict(payload["state_dict"])
    state.pop(next(iter(state)))
    with pytest.raises(DetectorFileError, match="missing"):
        load_detector(_rewrite(path, tmp_path / "missing.pt", state_dict=state))
    state = dict(payload["state_dict"])
    key = next(k for k in state if k.endswith("weight"))
    state[key] = torch.zeros(3)
    with pytest.raises(DetectorFileError, match="wrong shape"):
        load_detector(_rewrite(path, tmp_path / "shape.pt", state_dict=state))


def test_save_is_atomic_and_rejects_bad_metadata(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    model, _ = saved
    path = tmp_path / "keep.pt"
    save_detector(model, path)
    before = path.read_bytes()
    with pytest.raises(DetectorFileError, match="metadata"):
        save_detector(model, path, metadata={"bad": object()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pt"]
