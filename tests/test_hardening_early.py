"""Refusals before any work: output paths, numbers and targets the CLI verbs would have found wrong
only after estimating, exporting or measuring (the work was lost), and the public functions' argument
checks (a wrong type was an AttributeError or ZeroDivisionError from deep inside)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import jdnas_sdk
from jdnas_sdk import ArgumentError, JdnasError, build_detector, save_detector, standard_arch
from jdnas_sdk.cli import main

from .conftest import tiny_spec


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "base.pt"
    save_detector(build_detector(tiny_spec("retinanet"), standard_arch("resnet18")), path)
    return path


def _refused(capsys: pytest.CaptureFixture[str], args: list[str], *problem: str) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(p in err for p in problem), err
    assert captured.out == "", captured.out  # nothing estimated, exported or evaluated first


def test_output_files_are_checked_before_the_work(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    missing = str(tmp_path / "no-such-data")  # read after the check: its error would show if checked first
    _refused(capsys, ["eval", "--model", str(model_file), "--data", missing, "--json", str(folder)], "--json", "folder")
    _refused(capsys, ["latency", "--model", str(model_file), "--json", str(folder)], "--json", "folder")
    _refused(capsys, ["latency", "--model", str(model_file), "--json", ""], "--json", "empty")
    onnx = tmp_path / "m.onnx"
    _refused(capsys, ["export", "--model", str(model_file), "--onnx", str(folder)], "--onnx", "folder")
    _refused(capsys, ["export", "--model", str(model_file), "--onnx", str(onnx), "--engine", str(folder)], "--engine")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a file where the output's folder should be
    _refused(capsys, ["export", "--model", str(model_file), "--onnx", str(blocker / "m.onnx")], "is a file")
    _refused(capsys, ["teachers", "report", "--pool", missing, "--data", missing, "--md", str(folder)], "--md")
    _refused(capsys, ["train", "--model", str(model_file), "--data", missing, "--out", str(folder)], "--out", "folder")
    assert not onnx.exists() and list(folder.iterdir()) == []


def test_export_refuses_an_engine_without_tensorrt_before_writing_the_onnx(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jdnas_sdk.latency import tensorrt_available

    if tensorrt_available() is None:
        pytest.skip("TensorRT runs here: the engine would be built")
    onnx = tmp_path / "m.onnx"
    _refused(
        capsys, ["export", "--model", str(model_file), "--onnx", str(onnx), "--engine", str(tmp_path / "e")], "TensorRT"
    )
    assert not onnx.exists()


def test_measuring_another_device_is_refused_before_estimating_or_exporting(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    _refused(
        capsys,
        ["latency", "--model", str(model_file), "--target", "v100-trt", "--measure", "--json", str(out)],
        "v100-trt",
    )
    onnx = tmp_path / "m.onnx"
    args = ["export", "--model", str(model_file), "--onnx", str(onnx), "--measure", "--target", "t4-trt"]
    _refused(capsys, args, "t4-trt", "--measure")
    assert not out.exists() and not onnx.exists()


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--width-ratios", "1,,2"], "--width-ratios"),
        (["--heads", "fpn=nan"], "--heads fpn"),
        (["--heads", "fpn=inf"], "--heads fpn"),
        (["--min-runs", "0", "--min-time", "0"], "min runs"),
        (["--min-time", "nan"], "min time"),
        (["--threads", "-2"], "--threads -2"),
        (["--fixed-students", "-1"], "--fixed-students -1"),
        (["--cpus-per-worker", "nan"], "--cpus-per-worker"),
    ],
)
def test_profile_numbers_are_checked_first_even_in_a_dry_run(
    extra: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["profile", "--target", "x", "--family", "retinanet", "--backbone", "resnet18", "--input-size", "96"]
    _refused(capsys, [*base, *extra, "--dry-run"], problem)


def test_profile_refuses_a_backend_that_cannot_run_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the torch backend runs on it")
    args = [
        "profile",
        "--target",
        "x",
        "--family",
        "retinanet",
        "--backbone",
        "resnet18",
        "--out",
        str(tmp_path / "t.json"),
    ]
    _refused(capsys, [*args, "--backend", "torch", "--device", "cuda"], "CUDA")
    assert not (tmp_path / "t.json").exists()


def test_counts_and_weights_out_of_range_are_refused(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-such")
    _refused(capsys, ["eval", "--model", str(model_file), "--data", missing, "--batch-size", "0"], "--batch-size")
    _refused(capsys, ["teachers", "report", "--pool", missing, "--data", missing, "--count", "0"], "--count")
    for weight in ("nan", "inf", "-1"):
        from jdnas_sdk.teachers import ShrinkConfig

        with pytest.raises(JdnasError, match="inplace_kd"):
            ShrinkConfig(inplace_kd=float(weight))


@pytest.mark.parametrize("size", [0, -5, 96.5, "96", (96,), (96, 0), True, (96, 96, 96)])
def test_a_bad_input_size_names_itself(size: object) -> None:
    model = build_detector(tiny_spec("retinanet"), standard_arch("resnet18"))
    with pytest.raises(ArgumentError, match="input_size"):
        jdnas_sdk.estimate_latency(model, input_size=size, target="t4-trt")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="input_size"):
        jdnas_sdk.detector_cost(tiny_spec(), standard_arch("resnet18"), input_size=size)  # type: ignore[arg-type]


def test_wrong_types_are_one_error_naming_the_argument(tmp_path: Path) -> None:
    model = build_detector(tiny_spec("retinanet"), standard_arch("resnet18"))
    arch = standard_arch("resnet18")
    cases = [
        (lambda: jdnas_sdk.build("x"), "spec must be a DetectorSpec"),
        (lambda: jdnas_sdk.detector_cost("x", arch), "spec must be a DetectorSpec"),
        (lambda: jdnas_sdk.detector_cost(tiny_spec(), 5), "arch must be an Arch"),
        (lambda: jdnas_sdk.sample_arch(5), "base must be an Arch"),
        (lambda: jdnas_sdk.SearchSpace(5), "base must be an Arch"),
        (lambda: jdnas_sdk.load_detector(["a"]), "path must be"),
        (lambda: jdnas_sdk.save_detector(model, ["a"]), "path must be"),
        (lambda: jdnas_sdk.export(model, ["a"]), "onnx_path must be"),
        (lambda: jdnas_sdk.estimate_latency(model, target=["cpu-ort"]), "target"),
        (lambda: jdnas_sdk.compress(model, data=5), "data must be"),
    ]
    for call, problem in cases:
        with pytest.raises(ArgumentError, match=problem):
            call()
    # an arch code is taken where an Arch is: the same cost either way
    assert jdnas_sdk.detector_cost(tiny_spec(), str(arch)) == jdnas_sdk.detector_cost(tiny_spec(), arch)
    assert isinstance(ArgumentError("x"), TypeError) and isinstance(ArgumentError("x"), ValueError)
    assert list(tmp_path.iterdir()) == []


def test_compress_checks_the_model_and_options_before_reading_data(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-data"
    with pytest.raises(JdnasError, match="nn.Module"):
        jdnas_sdk.compress("x", data=missing)  # type: ignore[arg-type]
    model = build_detector(tiny_spec("retinanet"), standard_arch("resnet18"))
    with pytest.raises(JdnasError, match="latency must be"):
        jdnas_sdk.compress(model, data=missing, latency="a")  # type: ignore[arg-type]
    assert not missing.exists() and not (tmp_path / "runs").exists()


def test_an_empty_or_wrong_folder_is_named_not_read_as_the_current_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jdnas_sdk.data import load_split

    monkeypatch.chdir(tmp_path)  # "" used to be Path("") == ".": this folder, read as the dataset
    with pytest.raises(ArgumentError, match="dataset folder must be"):
        load_split("", "train")
    _refused(capsys, ["report", str(tmp_path / "gone")], "does not exist")
    (tmp_path / "killed" / "search").mkdir(parents=True)  # a compress killed mid-search
    _refused(capsys, ["report", str(tmp_path / "killed")], "has not finished", "rerun the same compress command")
    (tmp_path / "f.txt").write_text("x")
    _refused(capsys, ["report", str(tmp_path / "f.txt")], "is a file")


def test_a_mask_rcnn_on_data_without_masks_is_refused_before_step_0(synth_root: Path) -> None:
    from jdnas_sdk.data import load_split
    from jdnas_sdk.train import TrainConfig, train

    model = build_detector(tiny_spec("maskrcnn"), standard_arch("resnet18"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(JdnasError, match="with_masks=True"):
        train(model, load_split(synth_root, "train"), config=TrainConfig(steps=1, batch_size=1), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fcos_towers_that_cannot_run_one_image_are_refused_and_left_out_of_the_space() -> None:
    spec = jdnas_sdk.DetectorSpec(
        family="fcos", backbone="resnet18", num_classes=3, min_size=256, max_size=256, fpn_channels=64
    )
    with pytest.raises(JdnasError, match="one channel per GroupNorm group"):  # a 1x1 P7 at 112 px
        jdnas_sdk.DetectorSpec(
            family="fcos", backbone="resnet18", num_classes=3, min_size=112, max_size=112, fpn_channels=32
        )
    space = jdnas_sdk.SearchSpace(standard_arch("resnet18"), spec=spec)
    values = space.head_values()
    assert min(values["size"]) <= 128 and 32 not in values["width"]  # the small sizes kept, the 32-wide towers not
    narrow = jdnas_sdk.DetectorSpec(
        family="fcos", backbone="resnet18", num_classes=3, min_size=256, max_size=256, fpn_channels=32
    )
    assert min(jdnas_sdk.SearchSpace(standard_arch("resnet18"), spec=narrow).head_values()["size"]) > 128
    for student in (space.smallest(), *(space.sample_student(seed) for seed in range(8))):
        size = student.heads.min_size
        with torch.no_grad():  # each runs one image: the refused ones raised inside torch's group_norm
            build_detector(spec, student).eval()([torch.rand(3, size, size)])


def test_a_pool_grown_from_another_detector_is_refused_before_any_work(synth_root: Path, tmp_path: Path) -> None:
    from jdnas_sdk.teachers import TeacherPool

    pool = TeacherPool.from_base(build_detector(tiny_spec("retinanet"), standard_arch("resnet18")), widths=(1.0,))
    pool_file = tmp_path / "pool.pt"
    pool.save(pool_file)
    model = build_detector(tiny_spec("fasterrcnn"), standard_arch("resnet18"))
    for given in (pool, pool_file):
        with pytest.raises(
            JdnasError, match="teacher pool .*does not match the model .*family retinanet vs fasterrcnn"
        ):
            jdnas_sdk.compress(model, data=synth_root, pool=given, workdir=tmp_path / "work", budget=1)
    assert not (tmp_path / "work").exists()


def test_profile_writes_by_default_where_a_later_target_name_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``jdnas profile --target cpu-ort`` without ``--out`` wrote ./latency_tables/cpu-ort.json in the
    current folder, which no later ``--target cpu-ort`` read (this machine's cached table answers)."""
    from jdnas_sdk.cli.profile import _default_out
    from jdnas_sdk.latency import load_table
    from jdnas_sdk.latency.backends import OrtBackend
    from jdnas_sdk.latency.places import TABLES_ENV, user_tables_dir
    from jdnas_sdk.latency.profile import open_table

    monkeypatch.setenv("JDNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(TABLES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    backend = OrtBackend(threads=1)
    assert _default_out("cpu-ort", backend) == load_table("cpu-ort").path  # the file the name reads and saves
    assert _default_out("v100-trt", backend) == load_table("v100-trt").path  # modelled: open_table explains
    new = _default_out("a-new-target", backend)
    assert new == user_tables_dir() / "a-new-target.json" and tmp_path in new.parents  # the cache, not the package
    open_table(new, "a-new-target", backend).save()  # a killed first run left its table there ...
    assert _default_out("a-new-target", backend) == new  # ... and the same command goes on in it
    assert load_table("a-new-target").target == "a-new-target"  # found by name from any folder
    assert _default_out("own.json", backend) == Path("own.json")  # a path target: exactly there
    assert not (tmp_path / "latency_tables").exists()


def test_train_from_a_file_refuses_shape_flags_and_says_where_it_started(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.pt"
    save_detector(build_detector(tiny_spec("retinanet"), standard_arch("resnet18")), base)
    out = tmp_path / "tuned.pt"
    args = ["train", "--model", str(base), "--data", str(synth_root), "--out", str(out), "--steps", "1"]
    gone = ["--data", str(tmp_path / "no-such-data")]  # the last --data wins: read only after the check
    _refused(
        capsys,
        [*args, *gone, "--input-size", "128", "--fpn-channels", "32"],
        "--input-size, --fpn-channels",
        "keeps its own",
    )
    assert not out.exists()
    assert main([*args, "--batch-size", "1", "-q"]) == 0
    assert f"from {base}'s weights" in capsys.readouterr().out  # was "from scratch"


def test_a_finished_run_reports_its_recorded_measurement_not_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base and the student are timed in interleaved rounds (a drift between two single timings
    moved the claim's ratio), each exported once and kept at the median of its rounds; a finished run
    called again reports the record (one from before rounds too); where one model's record is stale,
    both are timed again together."""
    from jdnas_sdk.measured import measured_ms

    from .conftest import quick_ort

    backend, order = quick_ort(monkeypatch)  # the record is under test, not the worker
    student = build_detector(tiny_spec("retinanet"), standard_arch("resnet18")).eval()
    base = build_detector(tiny_spec("retinanet"), standard_arch("resnet18")).eval()  # other random weights
    pair = {"base": base, "student": student}
    first = measured_ms(tmp_path, pair, backend, (96, 96))
    assert order == ["base", "student"] * 3  # interleaved rounds of the two exported files
    record = json.loads((tmp_path / "measured.json").read_text())
    for name in pair:
        assert len(record[name]["rounds_ms"]) == 3 and first[name] == sorted(record[name]["rounds_ms"])[1]
    written = (tmp_path / "measured.json").read_bytes()
    order.clear()
    assert measured_ms(tmp_path, pair, backend, (96, 96)) == first and order == []  # the record, not a timing
    assert (tmp_path / "measured.json").read_bytes() == written
    old = {name: {k: v for k, v in row.items() if k != "rounds_ms"} for name, row in record.items()}
    (tmp_path / "measured.json").write_text(json.dumps(old))  # written before rounds: still the run's record
    assert measured_ms(tmp_path, pair, backend, (96, 96)) == first and order == []
    with torch.no_grad():
        next(student.parameters()).add_(1.0)  # other weights: both timed again, side by side
    measured_ms(tmp_path, pair, backend, (96, 96), rounds=1)
    assert order == ["base", "student"]
    (tmp_path / "measured.json").write_text("{not json")  # a damaged record is measured again, not read
    assert measured_ms(tmp_path, {"base": base}, backend, (96, 96), rounds=1)["base"] > 0
    assert json.loads((tmp_path / "measured.json").read_text())["base"]["rounds_ms"]


def test_compress_of_a_mask_rcnn_reads_masks_and_refuses_data_without_them(synth_root: Path, tmp_path: Path) -> None:
    """compress(data=FOLDER) loaded the splits without masks: a Mask R-CNN's first candidate failed inside
    torchvision. Now the folder is read with masks; datasets in memory without them are refused at once."""
    from jdnas_sdk.data import load_protocol_splits
    from jdnas_sdk.protocol import protocol_splits

    train, select, test = protocol_splits(synth_root, None, None, None, None, with_masks=True)
    assert train.with_masks and select.with_masks and test.with_masks
    model = build_detector(tiny_spec("maskrcnn"), standard_arch("resnet18"))
    plain = load_protocol_splits(synth_root)  # without masks
    with pytest.raises(JdnasError, match="with_masks=True"):
        jdnas_sdk.compress(
            model, train_data=plain[0], select_data=plain[1], test_data=plain[2], workdir=tmp_path / "w", budget=1
        )
    assert not (tmp_path / "w").exists()


def test_compress_of_a_keypoint_rcnn_is_refused_before_any_work(synth_root: Path, tmp_path: Path) -> None:
    """The loader reads no keypoints, so no student could train: compress measured and searched for
    minutes before (an independent check found it); now it is refused before the workdir is made."""
    from jdnas_sdk.data import load_protocol_splits

    model = build_detector(tiny_spec("keypointrcnn"), standard_arch("resnet18"))
    splits = load_protocol_splits(synth_root)
    with pytest.raises(JdnasError, match="trains on keypoints.*cannot compress"):
        jdnas_sdk.compress(
            model, train_data=splits[0], select_data=splits[1], test_data=splits[2], workdir=tmp_path / "w", budget=1
        )
    assert not (tmp_path / "w").exists()


def test_teachers_train_checks_its_numbers_and_shape_flags_before_reading_data(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-such-data")  # read after the checks: its error would show if checked first
    base = ["teachers", "train", "--data", missing, "--out", str(tmp_path / "pool.pt")]
    _refused(capsys, [*base, "--base", str(model_file), "--steps", "0"], "--steps")
    _refused(capsys, [*base, "--base", str(model_file), "--inplace-kd", "nan"], "inplace_kd")
    _refused(capsys, [*base, "--base", str(model_file), "--widths", "1,,2"], "--widths")
    _refused(capsys, [*base, "--base", str(model_file), "--input-size", "128"], "--input-size", "keeps its own")
    assert not (tmp_path / "pool.pt").exists()


def test_good_input_sizes_of_every_kind_are_taken(tmp_path: Path) -> None:
    import numpy as np

    spec, arch = tiny_spec(), standard_arch("resnet18")
    want = jdnas_sdk.detector_cost(spec, arch, input_size=(96, 128)).total_macs
    for size in ((96, 128), [96, 128], np.array([96, 128]), torch.Size([96, 128]), (np.int64(96), 128)):
        assert jdnas_sdk.detector_cost(spec, arch, input_size=size).total_macs == want  # type: ignore[arg-type]
    assert jdnas_sdk.detector_cost(spec, arch, input_size=24).total_macs > 0  # as small as a spec may be
    model = build_detector(tiny_spec("retinanet"), standard_arch("resnet18"))
    with pytest.raises(ArgumentError, match="input_size"):
        jdnas_sdk.compress(model, data=tmp_path / "none", input_size=0)
    with pytest.raises(ArgumentError, match="workdir"):
        jdnas_sdk.compress(model, data=tmp_path / "none", workdir=5)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="arch must be"):
        jdnas_sdk.available_actions(5)  # type: ignore[arg-type]


def test_data_synth_replaces_an_earlier_synthetic_dataset_only_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["data", "synth", "--out", str(tmp_path / "d"), "--train", "2", "--select", "1", "--test", "1"]
    assert main([*args, "--size", "64", "-q"]) == 0
    capsys.readouterr()
    first = sorted(p.name for p in (tmp_path / "d" / "images" / "train").iterdir())
    _refused(capsys, [*args, "--size", "96"], "holds a synthetic dataset", "--force")  # was replaced without a word
    assert sorted(p.name for p in (tmp_path / "d" / "images" / "train").iterdir()) == first
    assert main([*args, "--size", "96", "--force", "-q"]) == 0


@pytest.mark.parametrize(
    "extra",
    [["--candidates", "0"], ["--steps", "0"], ["--latency", "2"], ["--final-steps", "-1"], ["--train-images", "0"]],
)
def test_the_demo_refuses_its_options_before_writing_the_dataset(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work), *extra]) == 2  # it wrote 800 images and trained first
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (work / "data").exists()


def test_ray_only_compress_flags_without_ray_are_refused(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["compress", "--model", str(model_file), "--data", str(tmp_path / "none"), "--workdir", str(tmp_path / "w")]
    for flag, value in (("--cpus-per-candidate", "4"), ("--threads-per-candidate", "4"), ("--retries", "1")):
        _refused(capsys, [*args, flag, value], flag, "--executor ray")  # they did nothing in this process
    assert not (tmp_path / "w").exists()


def test_ray_flags_out_of_range_are_refused_naming_the_flags(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They named RayExecutor's keywords (num_cpus, threads) or SearchConfig's fields, not the flags."""
    args = ["compress", "--model", str(model_file), "--data", str(tmp_path / "none"), "--workdir", str(tmp_path / "w")]
    _refused(capsys, [*args, "--parallel", "0"], "--parallel 0 (at least 1)")
    ray_args = [*args, "--executor", "ray"]
    _refused(
        capsys,
        [*ray_args, "--threads-per-candidate", "0", "--retries", "-1"],
        "--threads-per-candidate 0",
        "--retries -1",
    )
    _refused(capsys, [*ray_args, "--cpus-per-candidate", "0"], "--cpus-per-candidate 0 without --gpus-per-candidate")
    _refused(capsys, [*ray_args, "--gpus-per-candidate", "inf"], "--gpus-per-candidate inf (a finite number)")
    assert not (tmp_path / "w").exists()


def test_ray_only_profile_flags_without_ray_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--workers 3`` passed a dry run (and a real profile) in this process without a word."""
    args = ["profile", "--target", "t", "--family", "retinanet", "--backbone", "resnet18", "--dry-run"]
    for flag, value in (("--workers", "3"), ("--cpus-per-worker", "2"), ("--gpus-per-worker", "1")):
        _refused(capsys, [*args, flag, value], flag, "--executor ray")


@pytest.mark.parametrize("record", ["[" * 100_000 + "]" * 100_000, "[1, 2]", '{"size": 1' + "0" * 5000 + "}"])
def test_a_damaged_demo_settings_record_is_one_line_and_the_folder_is_kept(
    record: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deep nesting (a RecursionError) and a list where the record is an object were tracebacks."""
    work = tmp_path / "demo"
    work.mkdir()
    (work / "demo_settings.json").write_text(record)
    _refused(capsys, ["demo", "--workdir", str(work)], "demo_settings.json", "--workdir")
    assert sorted(p.name for p in work.iterdir() if p.suffix != ".lock") == ["demo_settings.json"]


def test_compress_checkpoint_every_reaches_every_training_and_zero_is_refused(
    model_file: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill of the final training loses at most ``--checkpoint-every`` steps (it was a fixed 50: with
    fewer final steps a kill anywhere lost them all); 0 is refused before any work."""
    from jdnas_sdk.finish import final_schedule
    from jdnas_sdk.protocol import Recipe
    from jdnas_sdk.search import SearchConfig

    recipe = Recipe(checkpoint_every=7)
    assert final_schedule(recipe, SearchConfig()).checkpoint_every == 7  # the final training, race and control
    assert recipe.search_train_config().checkpoint_every == 7 and recipe.to_json()["checkpoint_every"] == 7
    work = tmp_path / "w"
    args = ["compress", "--model", str(model_file), "--data", str(synth_root), "--workdir", str(work)]
    _refused(capsys, [*args, "--checkpoint-every", "0"], "checkpoint_every (--checkpoint-every) must be >= 1")
    assert not work.exists()


def test_a_damaged_training_stopwatch_is_one_line_before_any_step(
    model_file: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The time a killed ``jdnas train`` left beside its --out (``<out>.train-wall.json``), damaged: one
    line naming it and the fix (it was a ValueError's traceback), the file kept, nothing trained."""
    from jdnas_sdk.train import wall_path

    out = tmp_path / "base.pt"
    wall_path(out).write_text('{"wall_s": 12')
    args = ["train", "--model", str(model_file), "--data", str(synth_root), "--out", str(out), "--steps", "2"]
    _refused(capsys, args, "base.pt.train-wall.json is not a stopwatch file", "remove it")
    assert wall_path(out).read_text() == '{"wall_s": 12' and not out.exists()


def test_a_damaged_compress_stopwatch_is_one_line_before_any_work(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``workdir/wall.json`` (a killed compress's time so far), damaged: refused before any kernel is
    measured or the search starts, the workdir as it was."""
    from jdnas_sdk.compress import WALL_FILE
    from jdnas_sdk.data import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", train=4, val=0, select=2, test=2, size=96, seed=1, progress=False)
    work = tmp_path / "w"
    work.mkdir()
    (work / WALL_FILE).write_text('{"wall_s": -3, "sittings": 1}')
    args = ["compress", "--model", str(model_file), "--data", str(data), "--workdir", str(work), "-q"]
    _refused(capsys, [*args, "--target", "v100-trt"], "wall.json is not a stopwatch file", "remove it")
    assert sorted(p.name for p in work.iterdir()) == [WALL_FILE]
