"""benchmarks/fixed_entry_weights.py: NMS loads of trained students beside their stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jdnas_sdk import Arch, build, save_detector
from jdnas_sdk.errors import ArchError
from jdnas_sdk.machine import command_line
from jdnas_sdk.student import Student

from .conftest import load_benchmark, tiny_spec


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("fixed_entry_weights")


def test_each_student_has_its_loads_and_ap_and_a_rerun_trains_nothing(bench, synth_root: Path, tmp_path: Path) -> None:
    base = save_detector(build(tiny_spec("retinanet")), tmp_path / "base.pt")
    argv = ["--base", str(base), "--data", str(synth_root), "--students", "1", "--steps", "2"]
    argv += ["--random-seeds", "1", "--ms-per-test", "2e-6"]
    argv += ["--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "r")]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "r" / "fixed_entry_weights.json").read_text())
    assert report["complete"] and report["command"] == command_line("benchmarks/fixed_entry_weights.py", argv)
    (row,) = report["results"]
    assert len(row["random"]) == 1 and row["trained"] > 0 and row["morph"] > 0 and row["refit_morph"] > 0
    assert 0 <= row["trained_select_ap"] <= 1
    assert row["morph_ms_modelled"] == pytest.approx((row["morph"] - row["trained"]) * 2e-6)
    (trained,) = sorted((tmp_path / "w").glob("*.pt"))
    stamp = trained.stat().st_mtime_ns
    assert bench.main(argv) == 0  # resumed: the trained student is read back, not trained again
    assert trained.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "r" / "fixed_entry_weights.json").read_text())["results"] == [row]


def test_rows_summary_and_table_from_known_counts(bench) -> None:
    """Errors against the trained load, the medians, the per-draw count, a student that made no NMS call,
    and codes whose ``|`` must not split the Markdown table."""
    code = Student(Arch.parse("basic:16|16:16x1|32:32x1|64:64x1|128:128x1"))
    counts = [
        dict(trained=100, morph=150, refit_morph=120, random=[400, 80], trained_select_ap=0.5, towers_refit=0),
        dict(trained=200, morph=180, refit_morph=200, random=[600, 600], trained_select_ap=0.6, towers_refit=1),
        dict(trained=None, morph=10, refit_morph=10, random=[None], trained_select_ap=0.0, towers_refit=0),
    ]
    rows = [bench.row_of(code, c, 0.01) for c in counts]
    assert rows[0]["morph_error"] == pytest.approx(0.5) and rows[0]["random_error"] == pytest.approx(1.4)
    assert rows[0]["random_ms_modelled"] == pytest.approx(1.4) and rows[1]["morph_error"] == pytest.approx(-0.1)
    assert rows[2]["morph_error"] is None and rows[2]["random_mean"] is None
    s = bench.summary(rows)
    assert s["students"] == 2 and s["morph_median_abs_error"] == pytest.approx(0.3)
    assert s["morph_over"] == 1 and s["morph_closer"] == 2
    assert (s["morph_closer_than_draw"], s["random_draws"]) == (3, 4)  # the draw of 80 is closer than 150
    report = {
        "machine": {"cpu": "X", "cores": 2}, "summary": s, "ms_per_test": 0.01, "date": "d", "command": "c",
        "base": "b", "steps": 3, "training": "t", "input_size": [8, 8], "random_seeds": 2, "results": rows,
        "skipped": ["s"], "complete": True,
    }  # fmt: skip
    table = [line for line in bench.markdown(report).splitlines() if line.startswith("| `")]
    assert len(table) == 3 and all(line.count(" | ") == 5 for line in table)  # six cells, no split code


def test_a_last_student_morphing_cannot_reach_still_ends_the_run_complete(
    bench, synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = bench.loads

    def unreachable_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ArchError("unreachable")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "loads", unreachable_second)
    base = save_detector(build(tiny_spec("retinanet")), tmp_path / "base.pt")
    argv = ["--base", str(base), "--data", str(synth_root), "--students", "2", "--steps", "1", "--random-seeds", "1"]
    assert bench.main([*argv, "--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "fixed_entry_weights.json").read_text())
    assert report["complete"] and len(report["results"]) == 1 and len(report["skipped"]) == 1
