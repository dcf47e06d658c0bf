"""Latency table files: round trip, and every kind of bad file reported, never half-read."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from jdnas_sdk import LatencyTableError
from jdnas_sdk.latency import DeviceMismatchWarning, Entry, Fingerprint, LatencyTable, OpKey, load_table
from jdnas_sdk.latency.backends import OrtBackend, local_fingerprint
from jdnas_sdk.latency.table import SCHEMA_VERSION, table_path

KEY = OpKey.parse("conv(n=1,cin=8,cout=16,k=3,s=1,g=1,h=32,w=32,norm=bn,act=relu,add=0)")
POOL = OpKey.parse("maxpool(c=8,k=3,s=2,p=1,h=32,w=32)")


def _table(path: Path, fingerprint: Fingerprint | None = None) -> LatencyTable:
    table = LatencyTable(target="t", source="measured", fingerprint=fingerprint or OrtBackend().fingerprint())
    table.put(KEY, Entry(0.25, 0.01, 30))
    table.put(POOL, Entry(0.05, 0.002, 40, info={"note": "x"}))
    table.save(path)
    return table


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    table = _table(path)
    loaded = LatencyTable.load(path)
    assert loaded.entries == table.entries and loaded.fingerprint == table.fingerprint
    assert loaded.get(POOL).info == {"note": "x"} and loaded.path == path
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["source"] == "measured" and data["unit"] == "ms"
    assert list(data["entries"]) == sorted(data["entries"])


def _rewrite(path: Path, edit: object) -> None:
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda d: d.update(schema_version=2), "schema_version 2"),
        (lambda d: d.pop("format"), "not a jdnas latency table"),
        (lambda d: d.update(entries=[]), "'entries' must be a dict"),
        (lambda d: d["device"].update(gpu="x"), "unknown or missing fields"),
        (lambda d: d.update(source="guessed"), "source must be one of"),
        (lambda d: d["entries"].update({"conv(cin=1)": {"median_ms": 1}}), "needs fields"),
        (lambda d: d["entries"][str(KEY)].update(median_ms=-1), "finite number >= 0"),
        (lambda d: d["entries"][str(KEY)].update(median_ms=1e308), "at most 3600000"),
        (lambda d: d["entries"][str(KEY)].update(samples=1.5), "samples must be an integer"),
        (lambda d: d["entries"][str(KEY)].update(p99=3), "unknown fields"),
        (lambda d: d.update(source="modelled"), "must carry its device model"),
    ],
)
def test_invalid_tables_are_refused_with_the_problem_named(tmp_path: Path, edit: object, problem: str) -> None:
    path = tmp_path / "t.json"
    _table(path)
    _rewrite(path, edit)
    with pytest.raises(LatencyTableError, match=problem) as info:
        LatencyTable.load(path)
    assert "t.json" in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "binary"])
def test_corrupt_or_truncated_files_are_reported(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "t.json"
    _table(path)
    raw = path.read_bytes()
    path.write_bytes(
        {"truncate": raw[: len(raw) // 2], "garbage": b"{]", "empty": b"", "binary": b"\xff\xfe\x00"}[damage]
    )
    with pytest.raises(LatencyTableError, match="corrupt") as info:
        LatencyTable.load(path)
    assert str(path) in str(info.value)


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    table = _table(path)
    before = path.read_bytes()
    table.put(OpKey.parse("relu(c=8,h=4,w=4)"), Entry(float("nan")))
    with pytest.raises(ValueError):
        table.save()
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]  # no temporary, no lock file left


def test_a_table_from_another_device_warns_naming_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = OrtBackend().fingerprint()
    other = Fingerprint(**{**here.__dict__, "device": "Imaginary CPU 9000", "backend_version": "0.0.1"})
    path = tmp_path / "far.json"
    _table(path, other)
    with pytest.warns(DeviceMismatchWarning) as record:
        load_table(str(path))
    text = str(record[0].message)
    assert "Imaginary CPU 9000" in text and here.device in text and "0.0.1" in text
    _table(path, here)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_table(str(path))
    assert local_fingerprint(here) == here


def test_unknown_target_names_the_known_ones_and_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JDNAS_LATENCY_TABLES", str(tmp_path))
    _table(tmp_path / "mine.json")
    assert table_path("mine") == tmp_path / "mine.json"
    with pytest.raises(LatencyTableError, match="jdnas profile --target nowhere") as info:
        table_path("nowhere")
    assert "mine" in str(info.value) and "cpu-ort" in str(info.value)


def test_a_missing_table_and_a_folder_are_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(LatencyTableError, match="t.json does not exist"):
        LatencyTable.load(tmp_path / "t.json")
    (tmp_path / "d.json").mkdir()
    with pytest.raises(LatencyTableError, match="d.json is a folder, not a table file"):
        LatencyTable.load(tmp_path / "d.json")
