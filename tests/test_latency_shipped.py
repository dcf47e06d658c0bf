"""The shipped tables: valid, labelled, and covering the benchmark detectors' search spaces."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from jdnas_sdk import DetectorSpec, standard_arch
from jdnas_sdk.latency import Estimator, LatencyTable, reachable_ops
from jdnas_sdk.latency.lower import fixed_key
from jdnas_sdk.latency.reach import fixed_specs
from jdnas_sdk.latency.roofline import GPU_MODELS
from jdnas_sdk.space import SearchSpace

TABLES = Path(__file__).resolve().parents[1] / "latency_tables"


def _benchmark_spec(family: str) -> DetectorSpec:
    # benchmarks/train_base.py's detectors: ResNet-18, FPN 64, box head 256, 9 classes, 256 px
    return DetectorSpec(
        family=family,
        backbone="resnet18",
        num_classes=9,
        min_size=256,
        max_size=256,
        fpn_channels=64,
        representation_size=256,
        anchor_sizes=(16, 32, 64, 128, 256),
    )


@pytest.mark.parametrize("target", ["cpu-ort", *GPU_MODELS])
@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet"])
def test_shipped_tables_cover_the_benchmark_search_spaces(target: str, family: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = LatencyTable.load(TABLES / f"{target}.json")
    assert table.target == target
    assert table.source == ("measured" if target == "cpu-ort" else "modelled")
    spec = _benchmark_spec(family)
    space = SearchSpace(standard_arch("resnet18"), spec=spec)  # the detector-level space: heads and input size too
    missing = [str(k) for k in reachable_ops(spec, space, (256, 256)) if k not in table]
    assert not missing, missing[:3]
    fixed = [fixed_key(variant, (256, 256)) for variant in fixed_specs(spec, space)]  # proposals, FPN, size
    assert len(fixed) > 1 and not [str(k) for k in fixed if k not in table], fixed[:3]
    estimator = Estimator(table, spec, (256, 256), on_miss="error")
    assert all(estimator.total_ms(space.sample_student(i)) > 0 for i in range(20))


def test_gpu_tables_say_they_are_modelled_and_carry_their_assumptions() -> None:
    for target, model in GPU_MODELS.items():
        data = json.loads((TABLES / f"{target}.json").read_text())
        assert data["source"] == "modelled" and data["model"] == model.to_dict()
        assert "assumption" in data["model"]["reference"] and "MODELLED" in data["notes"]
        assert {e["source"] for e in data["entries"].values()} == {"modelled"}
