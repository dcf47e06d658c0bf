from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jdnas_sdk import load_detector
from jdnas_sdk.cli import build_parser, main
from jdnas_sdk.detectors import read_detector_file
from jdnas_sdk.train import wall_path

TINY = ["--input-size", "96", "--fpn-channels", "16", "--representation-size", "32", "--anchor-sizes", "8,16,32,64,128"]


def _jdnas(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jdnas_sdk.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_help_teaches_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for verb in (
        "data",
        "train",
        "eval",
        "info",
        "doctor",
        "profile",
        "latency",
        "teachers",
        "compress",
        "export",
        "report",
        "demo",
        "jdnas data synth --out",
    ):
        assert verb in text


def test_every_subcommand_help_renders(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse formats each help string with %: a bare "10%" broke `jdnas profile --help` once."""
    import argparse

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    stack = list(subparsers.choices.items())
    assert len(stack) >= 10
    while stack:
        name, sub = stack.pop()
        text = sub.format_help()  # raises on a help string % cannot format
        assert "usage:" in text, name
        # it teaches: what the verb does, and an example kept on its own line (argparse re-wraps epilogs)
        assert sub.description and f"\n  jdnas {name.split()[0]}" in text, name
        flat = " ".join(text.split())  # a default shown only where there is one ("(default: None)" was noise)
        assert "(default: None)" not in flat and "(default: False)" not in flat, name
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [(f"{name} {k}", v) for k, v in action.choices.items()]
    train_help = build_parser().parse_args(["train", "--data", "d", "--model", "m", "--out", "o"])
    assert train_help.steps > 0 and train_help.lr > 0


def test_synth_train_eval_info_from_the_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    argv = ["data", "synth", "--out", str(data), "--train", "4", "--select", "3", "--test", "3", "--size", "96"]
    assert main([*argv, "--seed", "1"]) == 0
    out = tmp_path / "det.pt"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--model",
                "fasterrcnn_resnet18",
                "--out",
                str(out),
                "--steps",
                "2",
                "--batch-size",
                "2",
                *TINY,
            ]
        )
        == 0
    )
    assert out.is_file() and not Path(str(out) + ".ckpt").exists()
    model = load_detector(out)
    assert model.jdnas_spec.category_ids == tuple(range(1, 9)) and model.jdnas_spec.min_size == 96
    metrics = tmp_path / "m.json"
    assert main(["eval", "--model", str(out), "--data", str(data), "--json", str(metrics)]) == 0
    assert set(json.loads(metrics.read_text())) >= {"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"}
    # the protocol's test split, the images compress reports on
    assert main(["eval", "--model", str(out), "--data", str(data), "--split", "test"]) == 0
    assert "[test, 3 images]" in capsys.readouterr().out
    assert main(["info", "--model", str(out)]) == 0
    assert '"family": "fasterrcnn"' in capsys.readouterr().out
    # a detector file fine-tunes (its own spec, the same categories)
    tuned = tmp_path / "tuned.pt"
    assert main(["train", "--data", str(data), "--model", str(out), "--out", str(tuned), "--steps", "1"]) == 0
    assert load_detector(tuned).jdnas_spec == model.jdnas_spec
    # an existing output is not silently replaced
    assert (
        main(["train", "--data", str(data), "--model", "fasterrcnn_resnet18", "--out", str(out), "--steps", "2", *TINY])
        == 2
    )
    assert "--force" in capsys.readouterr().err
    # until converged on select, then a cool-down and a rewound cycle the output reports
    conv = tmp_path / "conv.pt"
    argv = ["train", "--data", str(data), "--model", "fasterrcnn_resnet18", "--out", str(conv), "--until-converged"]
    argv += ["--steps", "2", "--eval-every", "1", "--patience", "1", "--cooldown", "1", "--batch-size", "2", *TINY]
    argv += ["--cycle-steps", "1", "--max-cycles", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best select AP" in printed and "cool-down of 1 steps: select AP" in printed
    assert "rewound cycle 1 of 1 steps: select AP" in printed
    meta = read_detector_file(conv)["metadata"]
    assert json.loads(meta["cooldown"])["steps"] == 1 and len(json.loads(meta["cycles"])) == 1
    # a trained detector file re-converged (protocol.base_hint's advice): its weights are step 0, kept when
    # training (here at a rate that wrecks them) never beats them
    again = tmp_path / "again.pt"
    argv = ["train", "--data", str(data), "--model", str(out), "--out", str(again), "--until-converged", "--steps", "1"]
    argv += ["--eval-every", "1", "--patience", "1", "--trend-window", "0", "--optimizer", "sgd", "--lr", "1e4"]
    assert main(argv + ["--batch-size", "2"]) == 0
    assert "starting weights" in capsys.readouterr().out
    curve = json.loads(Path(str(again) + ".curve.json").read_text())
    assert [p["step"] for p in curve["curve"]] == [0, 1] and curve["best_step"] == 0
    start, kept = load_detector(out).state_dict(), load_detector(again).state_dict()
    assert all(torch.equal(start[k], kept[k]) for k in start)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["eval", "--model", "{tmp}/none.pt", "--data", "{tmp}"], "no such file"),
        (
            ["train", "--data", "{tmp}/nowhere", "--model", "fasterrcnn_resnet18", "--out", "{tmp}/x.pt"],
            "jdnas data synth",
        ),
        (["train", "--data", "{data}", "--model", "yolo_v8", "--out", "{tmp}/x.pt"], "families: fasterrcnn"),
        (
            ["train", "--data", "{data}", "--model", "fasterrcnn_resnet18", "--out", "{tmp}/x.pt", "--batch-size", "0"],
            "batch_size=0",
        ),
        (
            ["train", "--data", "{data}", "--model", "fasterrcnn_resnet18", "--out", "{tmp}/x.pt", "--steps", "0"],
            "--steps must be at least 1",
        ),
        (["demo", "--workdir", "{tmp}/garbage.pt"], "part of its path is a file, not a folder"),
        (
            ["train", "--data", "{tmp}/garbage.pt", "--model", "fasterrcnn_resnet18", "--out", "{tmp}/x.pt"],
            "is a file, not a folder: give the folder",
        ),
        (
            [
                "train",
                "--data",
                "{data}",
                "--model",
                "fasterrcnn_resnet18",
                "--out",
                "{tmp}/x.pt",
                "--anchor-sizes",
                "big",
            ],
            "--anchor-sizes",
        ),
        (["eval", "--model", "{tmp}/garbage.pt", "--data", "{data}"], "corrupt, truncated"),
        (["data", "synth", "--out", "{tmp}/s", "--size", "4"], "image size"),
        (["profile", "--target", "x", "--input-size", "256"], "--model FILE, or --family F --backbone B"),
        (
            ["profile", "--target", "x", "--family", "fasterrcnn", "--backbone", "resnet18", "--input-size", "huge"],
            "--input-size",
        ),
        (["latency", "--model", "{tmp}/garbage.pt"], "corrupt, truncated"),
        (["report", "{tmp}"], "no result.json"),
        (["teachers", "report", "--pool", "{tmp}/garbage.pt", "--data", "{data}"], "corrupt, truncated"),
        (["export", "--model", "{tmp}/none.pt", "--onnx", "{tmp}/x.onnx"], "no such file"),
        (["compress", "--model", "{tmp}/garbage.pt", "--data", "{data}"], "corrupt, truncated"),
    ],
)
def test_bad_input_gives_a_clear_error(
    tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    filled = [a.format(tmp=tmp_path, data=synth_root) for a in args]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert f"jdnas {filled[0]}: error:" in err and needle in err and "Traceback" not in err


def test_kill_9_during_train_then_the_same_command_resumes(tmp_path: Path, synth_root: Path) -> None:
    out = tmp_path / "base.pt"
    ckpt = Path(str(out) + ".ckpt")
    args = [
        "train",
        "--data",
        str(synth_root),
        "--model",
        "fasterrcnn_resnet18",
        "--out",
        str(out),
        "--steps",
        "12",
        "--batch-size",
        "1",
        "--checkpoint-every",
        "2",
        *TINY,
    ]
    first = _jdnas(*args)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), first.communicate()[0]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not out.exists()
    killed = json.loads(wall_path(out).read_text())  # the killed sitting's time, as its stopwatch last saved it
    assert killed["sittings"] == 1
    second = _jdnas(*args)
    text, _ = second.communicate(timeout=300)
    assert second.returncode == 0, text
    assert "resumed at step" in text and "from scratch" not in text, text
    resumed_at = int(text.split("resumed at step ")[1].split(")")[0])
    assert 2 <= resumed_at < 12 and resumed_at % 2 == 0
    assert out.is_file() and not ckpt.exists() and not wall_path(out).exists()
    # the file's training time is its sittings' (the killed one's as its stopwatch last saved it; test_stopwatch)
    meta = read_detector_file(out)["metadata"]
    assert meta["sittings"] == 2 and meta["resumed_from"] == resumed_at
    said = float(text.split(" s, final loss")[0].rsplit(" in ", 1)[1])
    assert meta["train_wall_s"] == pytest.approx(said, abs=1) and meta["train_wall_s"] >= killed["wall_s"]


def test_demo_runs_end_to_end_on_tiny_settings(tmp_path: Path) -> None:
    from jdnas_sdk.latency import DeviceModel, open_table
    from jdnas_sdk.latency.backends import RooflineBackend

    slow = DeviceModel(
        "a slow test device",
        "fp32",
        peak_tflops=0.002,
        bandwidth_gbs=2.0,
        launch_us=0.0,
        postprocess_ms=0.5,
        fixed_kernels=0,
    )
    table = tmp_path / "slow.json"
    open_table(table, "slow", RooflineBackend(slow)).save()
    work = tmp_path / "demo"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "jdnas_sdk.cli",
            "demo",
            "--workdir",
            str(work),
            "--size",
            "96",
            "--train-images",
            "8",
            "--select-images",
            "3",
            "--test-images",
            "3",
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--candidates",
            "1",
            "--finetune-steps",
            "1",
            "--final-steps",
            "1",
            "--latency",
            "0.95",
            "--target",
            str(table),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for step in (
        "[1/5]",
        "[2/5]",
        "[3/5]",
        "[4/5]",
        "[5/5]",
        "files:",
        "select AP by step: 2:",
        "claim: student test AP",
    ):
        assert step in run.stdout
    assert "control " in run.stdout and (work / "base.pt.curve.json").is_file()
    assert (work / "student.onnx").is_file() and (work / "compress" / "report.html").is_file()
    assert (work / "compress" / "student.pt").is_file() and (work / "compress" / "search" / "archive.json").is_file()
    # the same folder with another option is refused before any work, naming the change and the fix
    before = sorted((p, p.stat().st_mtime_ns) for p in work.rglob("*") if p.is_file() and p.suffix != ".lock")
    argv = [a if a != "96" else "128" for a in run.args]
    again = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert again.returncode == 2 and "other settings (size 96 -> 128)" in again.stderr, again.stderr[-2000:]
    assert "--workdir" in again.stderr
    assert sorted((p, p.stat().st_mtime_ns) for p in work.rglob("*") if p.is_file() and p.suffix != ".lock") == before
    # a folder of something else (or of a demo before the settings record) is refused too, and kept
    other = tmp_path / "other"
    other.mkdir()
    (other / "base.pt").write_bytes(b"not this demo's")
    argv = [a if a != str(work) else str(other) for a in run.args]
    stray = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert stray.returncode == 2 and "no demo_settings.json" in stray.stderr, stray.stderr[-2000:]
    assert sorted(p.name for p in other.iterdir() if p.suffix != ".lock") == ["base.pt"]


def test_latency_floor_names_the_cheapest_student_of_the_space(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jdnas_sdk import DetectorSpec, Student, build, describe, save_detector

    spec = DetectorSpec(
        family="fasterrcnn",
        backbone="resnet18",
        num_classes=4,
        min_size=128,
        max_size=128,
        fpn_channels=32,
        representation_size=64,
    )
    model_file, out = tmp_path / "m.pt", tmp_path / "floor.json"
    save_detector(build(spec), model_file)
    assert main(["latency", "--model", str(model_file), "--target", "v100-trt", "--floor", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"base", "floor"}
    assert all(
        set(row) == {"code", "estimated_ms", "measured_ms"} and row["measured_ms"] is None for row in report.values()
    )
    assert report["floor"]["estimated_ms"] < report["base"]["estimated_ms"]
    floor = Student.parse(report["floor"]["code"])
    assert str(Student.of(*describe(build(spec, floor)))) == report["floor"]["code"]
    assert report["floor"]["code"] in capsys.readouterr().out
    assert (
        main(["latency", "--model", str(model_file), "--target", "v100-trt", "--floor", "--arch", str(floor.arch)]) == 2
    )
    # the code --floor names is what --arch takes back: the same student, the same estimate
    again = tmp_path / "again.json"
    argv = ["latency", "--model", str(model_file), "--target", "v100-trt", "--arch", report["floor"]["code"]]
    assert main([*argv, "--json", str(again)]) == 0
    estimate = json.loads(again.read_text())
    assert estimate["code"] == report["floor"]["code"]
    assert estimate["estimate"]["total_ms"] == pytest.approx(report["floor"]["estimated_ms"], rel=1e-9)
    assert estimate["estimate"]["total_ms"] < report["base"]["estimated_ms"]


def test_a_measured_student_carries_the_models_weights(tmp_path: Path) -> None:
    """``--measure`` of a student (``--arch`` or the floor) times it with the model's weights morphed
    in, as the search makes it: the same detector each time, not fresh random weights per run."""
    from jdnas_sdk import DetectorSpec, Student, build, describe
    from jdnas_sdk.morph import inherited
    from jdnas_sdk.space import SearchSpace

    spec = DetectorSpec(
        family="retinanet", backbone="resnet18", num_classes=4, min_size=96, max_size=96, fpn_channels=32
    )
    model = build(spec)
    floor = SearchSpace(describe(model)[1], spec=spec).smallest()
    first, second = inherited(model, floor), inherited(model, floor)
    assert str(Student.of(*describe(first))) == str(floor)
    kept = first.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in second.state_dict().items())
    head = "head.classification_head.cls_logits.bias"  # a tensor no narrowing touches: the model's own
    assert torch.equal(kept[head], model.state_dict()[head])


def test_the_demo_gives_no_teacher_role_to_a_base_whose_select_ap_is_flat_at_zero() -> None:
    """Such a base stops by the plateau rule; it was called "(converged)" and made the teacher (probe49)."""
    from dataclasses import replace

    from jdnas_sdk.converge import ConvergeResult
    from jdnas_sdk.demo import base_state

    flat = ConvergeResult(curve=[{"step": 20, "select_ap": 0.0}, {"step": 40, "select_ap": 0.0}], converged=True)
    flat.best_ap = 0.0
    assert base_state(flat) == (" (flat at 0: it detects nothing yet)", False)
    assert base_state(replace(flat, best_ap=0.042)) == (" (converged)", True)
    assert base_state(replace(flat, converged=False)) == (" (stopped at the step limit)", False)
