"""benchmarks/fixed_entry_weights.py: NMS loads of trained students beside their two stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jdnas_sdk import build, save_detector

from .conftest import load_benchmark, tiny_spec


def test_each_student_has_its_trained_morph_and_random_loads_and_a_rerun_trains_nothing(
    synth_root: Path, tmp_path: Path
) -> None:
    bench = load_benchmark("fixed_entry_weights")
    base = save_detector(build(tiny_spec("retinanet")), tmp_path / "base.pt")
    argv = ["--base", str(base), "--data", str(synth_root), "--students", "1", "--steps", "2"]
    argv += ["--random-seeds", "1", "--ms-per-test", "2e-6"]
    argv += ["--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "r")]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "r" / "fixed_entry_weights.json").read_text())
    assert report["complete"] and report["command"].endswith(" ".join(argv)) and report["machine"]["cpu"]
    rows = report["results"]
    assert len(rows) == 1
    for r in rows:
        assert len(r["random"]) == 1 and r["trained"] > 0 and r["morph"] > 0
        assert r["morph_error"] == (r["morph"] - r["trained"]) / r["trained"]
        assert r["morph_ms_modelled"] == pytest.approx((r["morph"] - r["trained"]) * 2e-6)
    trained = sorted((tmp_path / "w").glob("*.pt"))
    assert len(trained) == 1
    stamps = [p.stat().st_mtime_ns for p in trained]
    assert bench.main(argv) == 0  # resumed: the trained students are read back, not trained again
    assert [p.stat().st_mtime_ns for p in trained] == stamps
    assert json.loads((tmp_path / "r" / "fixed_entry_weights.json").read_text())["results"] == rows
    assert "| student | trained |" in (tmp_path / "r" / "fixed_entry_weights.md").read_text()
