"""The hardening from the shell (issue 16, items 1, 3 and 8): real `jdnas` processes racing on one
workdir, requests refused before any work leaving no workdir, the same --seed giving the same weights."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jdnas_sdk import build_detector, save_detector, standard_arch

from .conftest import tiny_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--input-size", "96", "--fpn-channels", "16", "--representation-size", "32", "--anchor-sizes", "8,16,32,64,128"]


def _jdnas(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "jdnas_sdk.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "base.pt"
    save_detector(build_detector(tiny_spec(), standard_arch("resnet18")), path)
    return path


def _compress(model_file: Path, data: Path, work: Path, *extra: str) -> subprocess.Popen[str]:
    return _jdnas(
        "compress",
        "--model",
        str(model_file),
        "--data",
        str(data),
        "--target",
        "t4-trt",
        "--budget",
        "2",
        "--workdir",
        str(work),
        "--pool-steps",
        "200",
        *extra,
    )


def test_two_compress_runs_on_one_workdir_the_second_refuses_naming_the_first(
    model_file: Path, synth_root: Path, tmp_path: Path
) -> None:
    work = tmp_path / "w"
    first = _compress(model_file, synth_root, work, "--latency", "0.98")  # reachable: it trains a pool
    try:
        lock = work / ".jdnas.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if lock.is_file() and lock.read_text().startswith("{"):
                break
            time.sleep(0.2)
        assert json.loads(lock.read_text())["pid"] == first.pid, first.communicate()
        second = _compress(model_file, synth_root, work, "--latency", "0.97")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and f"workdir {work} is in use by pid {first.pid}" in err, err
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        # the killed run's lock is taken over; this run fails validation, and the workdir (the user's now) stays
        third = _compress(model_file, synth_root, work, "--ms", "nan")
        _, err = third.communicate(timeout=120)
        assert third.returncode == 2 and "ms must be a finite" in err and "in use" not in err, err
        assert work.is_dir()
    finally:
        first.kill()
        first.wait(timeout=30)


@pytest.mark.parametrize(
    "bad, problem",
    [
        (["--ms", "nan"], "ms must be a finite"),
        (["--ms", "inf"], "ms must be a finite"),
        (["--latency", "inf"], "latency must be a finite"),
        (["--budget", "0s"], "out of range"),
        (["--ms", "0.01"], "below anything the search space reaches"),
        (["--heads", "topk=many"], "--heads topk must be comma-separated positive numbers"),
        (["--heads", "depth=1"], "--heads takes KNOB=V,V"),
    ],
)
def test_an_impossible_request_fails_in_seconds_and_leaves_no_workdir(
    model_file: Path, synth_root: Path, tmp_path: Path, bad: list[str], problem: str
) -> None:
    work = tmp_path / "new"
    began = time.monotonic()
    run = _compress(model_file, synth_root, work, *bad)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2 and problem in err and "Traceback" not in err, err
    assert not work.exists()
    assert time.monotonic() - began < 60


def test_train_with_the_same_seed_from_scratch_gives_the_same_weights(synth_root: Path, tmp_path: Path) -> None:
    runs = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        runs.append(
            _jdnas(
                "train",
                "--data",
                str(synth_root),
                "--model",
                "fasterrcnn_resnet18",
                "--out",
                str(tmp_path / f"{name}.pt"),
                "--steps",
                "1",
                "--batch-size",
                "1",
                "--seed",
                seed,
                *TINY,
            )
        )
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    states = [torch.load(tmp_path / f"{n}.pt", weights_only=True)["state_dict"] for n in "abc"]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_train_into_a_read_only_folder_fails_before_training_in_one_line(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jdnas_sdk.cli import main

    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (the library test simulates EROFS instead)")
    try:
        began = time.monotonic()
        code = main(
            [
                "train",
                "--data",
                str(synth_root),
                "--model",
                "fasterrcnn_resnet18",
                "--out",
                str(ro / "x.pt"),
                "--steps",
                "50",
                *TINY,
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and "read-only" in err and str(ro) in err and err.count("\n") == 1, err
        assert time.monotonic() - began < 30  # refused before a training step
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_a_damaged_image_stops_compress_and_train_before_any_work(
    model_file: Path, synth_root: Path, tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    images = sorted((data / "images" / "val").glob("*.*"))  # cut into select and test: read after the search
    images[0].write_bytes(images[0].read_bytes()[:300])
    work = tmp_path / "work"
    run = _compress(model_file, data, work, "--latency", "0.98")
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2 and "Traceback" not in err, err
    assert re.search("1 of the 3 images of the (select|test) set cannot be used", err) and images[0].name in err, err
    assert not work.exists()
    train = sorted((data / "images" / "train").glob("*.*"))
    train[-1].write_bytes(b"")
    out = tmp_path / "det.pt"
    run = _jdnas("train", "--data", str(data), "--model", "fasterrcnn_resnet18", "--out", str(out), *TINY)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2 and "images of the train split cannot be used" in err and train[-1].name in err, err
    assert not out.exists() and not Path(str(out) + ".ckpt").exists()
