"""benchmarks/latency_accuracy.py killed mid-run: the rerun keeps the students already timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jdnas_sdk import save_detector, standard_arch
from jdnas_sdk.detectors.build import build_detector
from jdnas_sdk.latency import OrtBackend, open_table

from .conftest import load_benchmark, tiny_spec
from .test_latency_profile import FAST


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("latency_accuracy")


def _base_and_table(bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A tiny RetinaNet's detector file and an empty table of this machine; the benchmark times fast."""
    model = tmp_path / "base.pt"
    save_detector(build_detector(tiny_spec("retinanet", min_size=64, max_size=64), standard_arch("resnet18")), model)
    table = tmp_path / "t.json"
    open_table(table, "t", OrtBackend(threads=1, timing=FAST)).save()
    monkeypatch.setattr(bench, "Timing", lambda: FAST)
    return model, table


def test_a_killed_run_resumes_after_the_students_it_timed(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It wrote nothing before the end: a kill lost every row, and the rerun timed them all again."""
    model, table = _base_and_table(bench, tmp_path, monkeypatch)
    timed: list[str] = []
    morph_to = bench.morph_to

    def counted(base, arch, **kw):
        if len(timed) == stop_after:
            raise KeyboardInterrupt  # the kill, as the next student is made
        timed.append(str(arch))
        return morph_to(base, arch, **kw)

    monkeypatch.setattr(bench, "morph_to", counted)
    results = tmp_path / "results"
    args = ["--models", str(model), "--target", str(table), "--archs", "2", "--repeat", "0", "--backbone-only"]
    args += ["--skip-throughput", "--results", str(results), "--name", "n"]
    stop_after = 1
    with pytest.raises(KeyboardInterrupt):
        bench.main(args)
    partial = json.loads((results / "n.partial.json").read_text())
    first = partial["rows"][str(model.resolve())]
    assert len(first) == 1 and not (results / "n.json").exists()

    timed.clear()
    stop_after = 99
    assert bench.main(args) == 0
    rows = json.loads((results / "n.json").read_text())["accuracy"][0]["rows"]
    assert timed == [rows[1]["arch"]]  # only the second student was made and timed
    assert len(rows) == 2 and rows[:1] == first
    assert not (results / "n.partial.json").exists()

    for damaged in ("{damaged", "[1]", json.dumps({"settings": partial["settings"], "rows": [1]})):
        (results / "n.partial.json").write_text(damaged)  # reported, started over
        assert bench._Partial(results / "n.partial.json", partial["settings"]).rows(model) == []
    assert bench._Partial(results / "n.partial.json", partial["settings"]).saver(model)(first) is None
    assert bench._Partial(results / "n.partial.json", partial["settings"]).rows(model) == first
    other = {**partial["settings"], "archs": 5}
    (results / "n.partial.json").write_text(json.dumps({"settings": other, "rows": partial["rows"]}))
    with pytest.raises(SystemExit, match=r"other settings \(archs: 5 -> 2\): rerun that command"):
        bench.main(args)  # its rows were dropped, then overwritten on the first save
    assert json.loads((results / "n.partial.json").read_text())["rows"] == partial["rows"]


def test_rounds_settle_each_student_on_its_median_and_a_killed_round_resumes(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--rounds N: every student timed N times, one pass over all of them per round; its row is
    measured at the median of its rounds. A kill inside round 2 keeps the rounds timed; the rerun
    times only the missing ones, from the kept exports (a lost export is made again)."""
    model, table = _base_and_table(bench, tmp_path, monkeypatch)
    made: list[str] = []
    morph_to = bench.morph_to

    def remade(base, arch, **kw):
        made.append(str(arch))
        return morph_to(base, arch, **kw)

    monkeypatch.setattr(bench, "morph_to", remade)
    timings: list[str] = []
    measure_onnx = OrtBackend.measure_onnx

    def counted(self, path, size, **kw):
        if len(timings) == stop_after:
            raise KeyboardInterrupt  # the kill
        timings.append(Path(path).name)
        return measure_onnx(self, path, size, **kw)

    monkeypatch.setattr(OrtBackend, "measure_onnx", counted)
    results = tmp_path / "results"
    args = ["--models", str(model), "--target", str(table), "--archs", "2", "--repeat", "0", "--backbone-only"]
    args += ["--skip-throughput", "--results", str(results), "--name", "n", "--rounds", "3"]
    stop_after = 3  # both first timings, then the first student's second round
    with pytest.raises(KeyboardInterrupt):
        bench.main(args)
    rows = json.loads((results / "n.partial.json").read_text())["rows"][str(model.resolve())]
    assert [len(r["rounds_ms"]) for r in rows] == [2, 1]
    kept = sorted((results / "n.students").rglob("*.onnx"))
    assert [f.name for f in kept] == ["0000.onnx", "0001.onnx"]

    kept[0].unlink()  # lost: made again from the base
    made.clear()
    timings.clear()
    stop_after = 99
    assert bench.main(args) == 0
    out = json.loads((results / "n.json").read_text())["accuracy"][0]
    assert timings == ["0001.onnx", "0000.onnx", "0001.onnx"]  # round 2's rest, then round 3
    assert made == [out["rows"][0]["arch"]]
    for row in out["rows"]:
        assert len(row["rounds_ms"]) == 3 and row["first_ms"] == row["rounds_ms"][0]
        assert row["measured_ms"] == sorted(row["rounds_ms"])[1]
        assert row["measured_iqr_ms"] == sorted(row["rounds_iqr_ms"])[1] and len(row["round_speeds"]) == 3
        assert row["error_pct"] == pytest.approx(100 * (row["estimated_ms"] / row["measured_ms"] - 1))
    assert out["rounds"] == 3 and out["rounds_summary"]["n"] == 6  # every pair of a row's rounds
    report = (results / "n.md").read_text()
    assert "| round 3 alone |" in report and "| median of the rounds |" in report  # what one timing would read
    assert not (results / "n.students").exists() and not (results / "n.partial.json").exists()
    assert bench.main([*args[:-1], "0"]) == 2 and not (results / "n.partial.json").exists()  # --rounds 0: refused
