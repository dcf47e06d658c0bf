"""The front door: ``jdnas_sdk.compress`` as the README shows it, ``data=``, and MODELLED targets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import jdnas_sdk
from jdnas_sdk import Arch, ArgumentError, DataError, DetectorFileError, build, save_detector
from jdnas_sdk.compress import WALL_FILE
from jdnas_sdk.data import CocoDetection, check_given_splits, make_synthetic_dataset, split_val
from jdnas_sdk.latency import DeviceModel, open_table
from jdnas_sdk.latency.backends import RooflineBackend
from jdnas_sdk.space import SearchSpace

from .conftest import tiny_spec

ROOT = Path(__file__).resolve().parents[1]
BASE = Arch.parse("basic:16|16:16x2|32:32x2|64:64x2|128:128x2")
#: step counts small enough for a test; everything else as the README writes it
TINY = ", finetune_steps=1, final_steps=1, pool_steps=2, progress=False"


def _readme_example() -> str:
    """The first Python block of the README (its front-door example)."""
    text = (ROOT / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)\n```", text.split("## Python", 1)[1], flags=re.S)[0]
    assert "jdnas_sdk.compress(model, target=" in block and "data=" in block
    return block


def _slow_table(path: Path) -> Path:
    """A modelled device slow enough that a 96 px toy detector's backbone dominates its latency."""
    slow = DeviceModel(
        "a slow test device",
        "fp32",
        peak_tflops=0.002,
        bandwidth_gbs=2.0,
        launch_us=0.0,
        postprocess_ms=0.5,
        fixed_kernels=0,
    )
    open_table(path, "slow", RooflineBackend(slow)).save()
    return path


def test_compress_and_its_result_are_at_the_top() -> None:
    assert jdnas_sdk.compress.__module__ == "jdnas_sdk.compress" and "compress" in jdnas_sdk.__all__
    assert jdnas_sdk.CompressResult.__name__ == "CompressResult" and "CompressResult" in jdnas_sdk.__all__
    import jdnas_sdk.deploy.onnx_export as onnx_export  # the export subpackage; jdnas_sdk.export is the function

    assert jdnas_sdk.export is onnx_export.export and callable(jdnas_sdk.export)


def test_the_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's block, run in a folder holding ``data/shapes`` and ``base.pt`` (both tiny). Two
    edits, said here: the shipped ``cpu-ort`` table cannot time a 96 px toy detector on this
    machine, so the target is a modelled test table; and the step counts are a test's."""
    monkeypatch.chdir(tmp_path)
    make_synthetic_dataset("data/shapes", train=6, val=3, size=96, seed=5, progress=False)
    torch.manual_seed(0)
    save_detector(build(tiny_spec(), BASE), "base.pt")
    table = _slow_table(tmp_path / "slow.json")
    code = _readme_example().replace('target="cpu-ort"', f"target={str(table)!r}")
    code = re.sub(r"(jdnas_sdk\.compress\(.*?)\)", lambda m: m.group(1) + TINY + ")", code, count=1, flags=re.S)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own text
    result = scope["result"]
    assert isinstance(result, jdnas_sdk.CompressResult)
    assert len([c for c in result.history if not c["free"]]) == 9  # base + budget=8 (free moves come on top)
    assert result.metrics["student"]["estimated_ms"] <= 0.8 * result.metrics["base"]["estimated_ms"]
    assert Path("runs/compress/report.md").is_file() and result.student_file.is_file()
    assert result.modelled and "MODELLED" in result.summary()


def test_a_modelled_target_runs_and_says_modelled(synth_root: Path, tmp_path: Path) -> None:
    """``v100-trt`` (a roofline table): nothing is measured, the result and the report say MODELLED.
    On a V100 a toy detector is nearly all fixed cost (pre/post-processing), hence latency=0.99."""
    torch.manual_seed(0)
    base = build(tiny_spec(), BASE)
    # a first sitting killed after 1,000 s left its time beside the run (the stopwatch rewrites it as it goes)
    (tmp_path / WALL_FILE).write_text(json.dumps({"wall_s": 1000.0, "sittings": 1}))
    options = dict(target="v100-trt", data=synth_root, latency=0.99, budget=1, workdir=tmp_path, teacher="none")
    tiny = dict(finetune_steps=1, final_steps=0, space=SearchSpace(BASE), progress=False)
    result = jdnas_sdk.compress(base, **options, **tiny)
    assert result.modelled and result.latency_source == "MODELLED" and result.target == "v100-trt"
    assert "measured_ms" not in result.metrics["base"] and "MODELLED" in result.summary()
    assert "**MODELLED**" in (tmp_path / "report.md").read_text()
    # the run's wall time counts every sitting: result.json and the report say so (it counted the last one)
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["sittings"] == 2 and 1000 < record["wall_s"] < 1600
    wall = json.loads((tmp_path / WALL_FILE).read_text())  # frozen as result.json was written
    assert wall == {"wall_s": record["wall_s"], "sittings": 2, "finished": True}
    assert " min over 2 sittings (resumed after a stop)." in (tmp_path / "report.md").read_text()
    # the finished run called again reports the same: its time is what it took until it finished
    jdnas_sdk.compress(base, **options, **tiny)
    again = json.loads((tmp_path / "result.json").read_text())
    assert (again["wall_s"], again["sittings"]) == (record["wall_s"], 2)


def test_a_pool_file_is_read_before_any_work(synth_root: Path, tmp_path: Path) -> None:
    base = build(tiny_spec(), BASE)
    for bad in (tmp_path / "nopool.pt", save_detector(base, tmp_path / "detector.pt")):  # missing; not a pool
        with pytest.raises(DetectorFileError, match=bad.name):
            jdnas_sdk.compress(base, target="v100-trt", data=synth_root, pool=bad, workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists()  # nothing was started


def test_data_is_asked_for_before_any_work(
    train_set: object, val_set: object, synth_root: Path, tmp_path: Path
) -> None:
    base = build(tiny_spec(), BASE)
    with pytest.raises(
        DataError, match="compress needs data: pass data='FOLDER'.*missing: train_data, select_data, test_data"
    ):
        jdnas_sdk.compress(base, target="v100-trt", workdir=tmp_path)
    with pytest.raises(DataError, match="missing: select_data, test_data"):
        jdnas_sdk.compress(base, target="v100-trt", train_data=train_set, workdir=tmp_path)
    with pytest.raises(DataError, match="not both"):
        jdnas_sdk.compress(base, target="v100-trt", data=synth_root, val_data=val_set, workdir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        jdnas_sdk.compress(base, target="v100-trt", data=tmp_path / "nowhere", workdir=tmp_path / "w")
    assert not list(tmp_path.iterdir())  # nothing was started


def test_datasets_of_another_kind_are_refused_before_any_work(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path
) -> None:
    """What a user hands compress in memory: a Subset or list as select/test data, or a training set of
    PIL images (torchvision's CocoDetection), was a bare AttributeError in the first evaluation or 2 min
    into the search, the workdir written; now one ArgumentError naming the argument and the fix."""
    import torchvision.transforms.functional as F
    from torch.utils.data import Subset

    base = build(tiny_spec(), BASE)
    select, test = split_val(val_set)
    common = dict(target="v100-trt", workdir=tmp_path / "w")
    given = (
        ("select_data", Subset(select, [0]), r"torch\.utils\.data\.dataset\.Subset"),
        ("test_data", [test[0]], r"builtins\.list"),
        ("val_data", [test[0]], r"builtins\.list"),  # the deprecated name, named as given
    )
    for name, bad, kind in given:
        data = {"train_data": train_set, "select_data": select, "test_data": test}
        data = {**data, name: bad} if name != "val_data" else {**data, "select_data": None, "val_data": bad}
        with pytest.raises(ArgumentError, match=f"{name} must be a jdnas_sdk.data.CocoDetection .*got {kind}: "):
            jdnas_sdk.compress(base, **data, **common)
    pil = [(F.to_pil_image(image), target) for image, target in (train_set[0], train_set[1])]
    with pytest.raises(ArgumentError, match="train_data's samples must be .*its first has an image of type Image"):
        jdnas_sdk.compress(base, train_data=pil, select_data=select, test_data=test, **common)
    image, target = train_set[0]
    uint8 = [((image * 255).to(torch.uint8), {"boxes": target["boxes"].tolist()})]  # no labels either
    with pytest.raises(ArgumentError, match=r"dtype torch\.uint8; target\['boxes'\] of type list; target\['labels'\]"):
        jdnas_sdk.compress(base, train_data=uint8, select_data=select, test_data=test, **common)
    assert not (tmp_path / "w").exists()  # nothing was started
    # a training set of the loader's samples in any container is taken as it is
    tensors = [train_set[i] for i in range(len(train_set))]
    check_given_splits(tensors, select, test)
