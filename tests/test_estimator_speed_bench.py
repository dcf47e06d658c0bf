"""benchmarks/estimator_speed.py: its results file says what ran, with the arguments it was given."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import load_benchmark


def test_the_results_hold_each_kinds_rounds_and_the_command_it_was_called_with(tmp_path: Path) -> None:
    bench = load_benchmark("estimator_speed")
    argv = ["--archs", "20", "--repeats", "2", "--kinds", "backbones", "--results", str(tmp_path)]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "estimator_speed.json").read_text())
    assert report["command"] == "python benchmarks/estimator_speed.py " + " ".join(argv)  # not the test runner's argv
    (row,) = report["results"]
    assert row["kind"] == "backbones" and len(row["rates_per_s"]) == 2 and row["first_round"] > 0
    assert report["machine"]["cpu"] and (tmp_path / "estimator_speed.md").is_file()
