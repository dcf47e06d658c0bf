"""Shared fixtures: a tiny synthetic dataset on disk and tiny detector specs."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from jdnas_sdk import DetectorSpec
from jdnas_sdk.data import CocoDetection, load_split, make_synthetic_dataset

# under pytest-xdist (the README's `-n 2`) each worker is one process on one core: one torch thread
# each, so two workers do not oversubscribe two cores; alone, two threads
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))
# ONNX Runtime timings flush the CPU caches before each run with twice the last-level cache (up to
# 128 MiB, ~20 ms a flush on a large-L3 Xeon); no test asserts a speed, so the suite, and the commands
# it runs in subprocesses, flush 1 MiB
os.environ.setdefault("JDNAS_FLUSH_MIB", "1")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 train / 6 val images of 96 px."""
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, train=12, val=6, size=96, seed=3, progress=False)
    return root


@pytest.fixture(scope="session")
def train_set(synth_root: Path) -> CocoDetection:
    return load_split(synth_root, "train")


@pytest.fixture(scope="session")
def val_set(synth_root: Path) -> CocoDetection:
    return load_split(synth_root, "val")


def assert_loss_falls(model: torch.nn.Module, data: CocoDetection, *, steps: int = 16) -> None:
    """A few SGD steps on one repeated batch of two images bring the loss well down."""
    from jdnas_sdk.train import TrainConfig, train

    subset = torch.utils.data.Subset(data, [0, 1])
    result = train(
        model,
        subset,
        config=TrainConfig(steps=steps, batch_size=2, lr=0.02, warmup_steps=2, hflip=False),
        progress=False,
    )
    first = sum(v for _, v in result.history[:3]) / 3
    last = sum(v for _, v in result.history[-3:]) / 3
    assert last < 0.6 * first, (first, last)


def tiny_spec(
    family: str = "fasterrcnn", *, num_classes: int = 9, backbone: str = "resnet18", **kw: object
) -> DetectorSpec:
    """A small detector: ResNet-18 body, 16-channel FPN, 96 px input."""
    defaults: dict[str, object] = dict(min_size=96, max_size=96, fpn_channels=16, representation_size=32)
    if family == "fcos":
        # its heads use GroupNorm(32, C), which needs more than one value per group: at 96 px P7 is 1x1
        defaults["fpn_channels"] = 64
    else:
        defaults["anchor_sizes"] = (8, 16, 32, 64, 128)
    defaults.update(kw)
    return DetectorSpec(family=family, backbone=backbone, num_classes=num_classes, **defaults)  # type: ignore[arg-type]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as the module ``NAME`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def quick_ort(monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[str]]:
    """An ONNX Runtime backend that times in a few runs in this process, and the stems of the files its
    ``measure_onnx`` timed, in order (every OrtBackend's, for the test's duration)."""
    from jdnas_sdk.latency.backends import OrtBackend, Timing

    order: list[str] = []
    measure_onnx = OrtBackend.measure_onnx

    def recorded(self: OrtBackend, f: object, size: tuple[int, int], **kw: object) -> object:
        order.append(Path(f).stem)  # type: ignore[arg-type]
        return measure_onnx(self, f, size, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(OrtBackend, "measure_onnx", recorded)
    timing = Timing(warmup=1, min_runs=3, max_runs=5, min_time_s=0.0)
    return OrtBackend(flush_mib=1, timing=timing, isolate=False), order
