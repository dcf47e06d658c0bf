"""Damaged search archives and results (issue 16, items 2, 4 and 7): a SearchError naming the file
and field, never a loop, a traceback or a read outside the workdir; reports written atomically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jdnas_sdk.errors import SearchError
from jdnas_sdk.report import write_report
from jdnas_sdk.search.archive import Archive, validate_candidates

ROOT = Path(__file__).resolve().parents[1]


def _candidate(index: int, parent: int | None, **changes: Any) -> dict[str, Any]:
    out = {
        "index": index,
        "arch": "basic:16|16:16x1",
        "parent": parent,
        "actions": ["a"] if parent is not None else [],
        "teacher": None,
        "latency_ms": 10.0 - index,
        "ap": 0.1 + 0.01 * index,
        "ap50": 0.2,
        "ap75": 0.1,
        "file": f"cand_{index}.pt",
        "bound_ms": None,
        "wall_s": 1.0,
        "rejected": 0,
    }
    out.update(changes)
    return out


def _result(history: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    metrics = {
        "ap": 0.1,
        "ap50": 0.2,
        "ap75": 0.1,
        "estimated_ms": 9.0,
        "measured_ms": None,
        "params": 10,
        "macs": 20,
        "arch": "basic:16|16:16x1",
    }
    out = {
        "history": history,
        "chosen": len(history) - 1,
        "target": "cpu-ort",
        "target_ms": 8.0,
        "method": "joint",
        "modelled": False,
        "device": "cpu",
        "input_size": [64, 64],
        "wall_s": 60.0,
        "metrics": {"base": metrics, "student": dict(metrics)},
        "breakdown": {"base": {"stem": 1.0}, "student": {"stem": 0.5}},
    }
    out.update(changes)
    return out


def _report(work: Path, content: Any) -> subprocess.CompletedProcess[str]:
    """``jdnas report`` run as a user runs it, on a result.json holding ``content`` (JSON, text or bytes)."""
    work.mkdir(exist_ok=True)
    data = (
        content
        if isinstance(content, bytes)
        else (content if isinstance(content, str) else json.dumps(content)).encode()
    )
    (work / "result.json").write_bytes(data)
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "jdnas_sdk.cli", "report", str(work)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_valid_result_gives_a_report_written_atomically(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    confirmation = {"confirmed": 3, "entries_measured": 45, "seconds": 26.2, "pinned": True}
    history = [_candidate(0, None), _candidate(1, 0), _candidate(2, 1)]
    (work / "result.json").write_text(json.dumps(_result(history, latency_confirmation=confirmation)))
    out = write_report(work)
    assert out == work / "report.html" and "lineage 2 &lt;- 1 &lt;- 0" in out.read_text()
    assert "confirmed by measurement: 3 (45 table entries measured in 26 s" in (work / "report.md").read_text()
    assert sorted(p.name for p in work.iterdir()) == [
        "pareto.png",
        "report.html",
        "report.md",
        "result.json",
        "trajectory.png",
    ]


@pytest.mark.parametrize(
    "result, field",
    [
        (_result([_candidate(0, 1), _candidate(1, 0)]), "parent 1, which is not an earlier candidate"),  # a cycle
        (_result([_candidate(0, None)], chosen=5), "field 'chosen'"),
        (_result([_candidate(0, None)], chosen="0"), "field 'chosen'"),
        (_result([_candidate(0, None, ap="high")]), "field 'ap'"),
        (_result([_candidate(0, None, latency_ms=10**400)]), "field 'latency_ms'"),
        (_result([_candidate(0, None, actions=[1, 2])]), "field 'actions'"),
        (_result([_candidate(1, None)]), "has index 1"),
        (_result([_candidate(0, None)], target_ms="fast"), "field 'target_ms'"),
        (_result([_candidate(0, None)], metrics=[]), "field 'metrics'"),
        *(
            (_result([_candidate(0, None)], metrics={"base": {"ap": 0.3}, "student": {key: value}}), field)
            for key, value, field in (
                ("test_ap", 1e308, "'metrics.student.test_ap' must be a finite number within -1..1"),
                ("select_ap", float("nan"), "'metrics.student.select_ap'"),
                ("ap", 30.0, "'metrics.student.ap'"),  # a percentage where fractions belong
                ("measured_ms", -2.0, "'metrics.student.measured_ms' must be a finite number within 0..inf, got"),
            )
        ),
        # what the report printed as it was (probe46): 'Wall time -1.0 min', 'Input 6x4', MODELLED for "no", NaN ms
        (_result([_candidate(0, None)], wall_s=-60.0), "field 'wall_s' must be a finite number >= 0"),
        *(
            (_result([_candidate(0, None)], **{key: value}), field)
            for key, value, field in (
                ("sittings", 0, "'sittings' must be a count >= 1"),
                ("sittings", "3", "'sittings' must be a count >= 1"),
                ("sittings", 2.5, "'sittings' must be a count >= 1"),
                ("sittings", True, "'sittings' must be a count >= 1"),
                ("input_size", "64", "'input_size' must be"),
                ("input_size", [float("nan"), 1], "'input_size' must be"),
                ("modelled", "no", "'modelled' must be true or false"),
                ("claim", 5, "'claim' must be text"),
                ("breakdown", {"base": {"stem": 1.0}, "student": {"stem": float("nan")}}, "'breakdown.student'"),
                ("splits", {"select": "many"}, "'splits' must map"),
            )
        ),
        (b"\x89PNG\x00\xff\xfe garbage", "corrupt"),
        ("[" * 50_000 + "]" * 50_000, "corrupt"),
    ],
)
def test_a_damaged_result_is_a_search_error_naming_file_and_field(tmp_path: Path, result: Any, field: str) -> None:
    work = tmp_path / "w"
    work.mkdir()
    data = result if isinstance(result, bytes) else (result if isinstance(result, str) else json.dumps(result)).encode()
    (work / "result.json").write_bytes(data)
    with pytest.raises(SearchError, match=field) as info:
        write_report(work)
    assert str(work / "result.json") in str(info.value)
    assert sorted(p.name for p in work.iterdir()) == ["result.json"]  # nothing written before the check


def test_jdnas_report_on_a_cyclic_lineage_exits_2_at_once(tmp_path: Path) -> None:
    run = _report(tmp_path / "w", _result([_candidate(0, 1), _candidate(1, 0)]))  # looped forever before
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "not an earlier candidate" in run.stderr and "Traceback" not in run.stderr


def test_an_archive_naming_a_file_outside_the_workdir_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "archive.json"
    settings = {"a": 1}
    for bad in ("../../etc/passwd", "/etc/passwd", 7):
        path.write_text(
            json.dumps(
                {
                    "format": "jdnas-search-archive",
                    "version": 1,
                    "settings": settings,
                    "candidates": [_candidate(0, None, file=bad)],
                }
            )
        )
        with pytest.raises(SearchError, match="field 'file'"):
            Archive.open(path, settings)


def test_archive_lineage_and_garbage_are_search_errors(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="parent 0"):
        validate_candidates([_candidate(0, 0)], origin="a.json")  # its own parent
    with pytest.raises(SearchError, match="must be an object"):
        validate_candidates([[1, 2]], origin="a.json")
    path = tmp_path / "archive.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SearchError, match="unreadable"):
        Archive.open(path, {})


def test_a_damaged_candidate_file_says_the_run_starts_again_in_a_new_workdir(tmp_path: Path) -> None:
    from jdnas_sdk import build, save_detector
    from jdnas_sdk.errors import DetectorFileError
    from jdnas_sdk.search import load_candidate

    from .conftest import tiny_spec

    path = tmp_path / "search" / "candidates" / "005.pt"
    path.parent.mkdir(parents=True)
    model = build(tiny_spec())
    save_detector(model, path)
    loaded = load_candidate(path).state_dict()  # a whole file loads as the detector saved
    assert all(loaded[k].equal(v) for k, v in model.state_dict().items())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DetectorFileError, match="005.pt is corrupt.*The search wrote this file.*new workdir"):
        load_candidate(path)
