"""A resumable job's wall time over all its sittings, kill -9 included (``jdnas_sdk._stopwatch``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jdnas_sdk._stopwatch import Stopwatch
from jdnas_sdk.errors import OtherSettingsError, SearchError, WorkdirError


def test_the_total_is_kept_while_running_and_carried_into_the_next_sitting(tmp_path: Path) -> None:
    file = tmp_path / "row.wall.json"
    with Stopwatch(file, every=0.05) as watch:
        time.sleep(0.3)
        mid = json.loads(file.read_text())  # rewritten while it runs, not only at the end
        assert 0.1 < mid["wall_s"] <= watch.elapsed() and mid["sittings"] == 1
    first = watch.elapsed()
    assert first >= 0.3 and json.loads(file.read_text()) == {"wall_s": first, "sittings": 1}
    with Stopwatch(file, every=0.05) as again:
        assert again.elapsed() >= first
        time.sleep(0.1)
    saved = json.loads(file.read_text())
    assert saved["sittings"] == 2 and saved["wall_s"] >= first + 0.1 and saved["wall_s"] == again.elapsed()


def test_a_killed_sitting_keeps_its_time_but_the_last_few_seconds(tmp_path: Path) -> None:
    file = tmp_path / "row.wall.json"
    code = f"import time; from jdnas_sdk._stopwatch import Stopwatch\nwith Stopwatch({str(file)!r}, every=0.05):\n"
    code += "    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if file.is_file() and json.loads(file.read_text() or "{}").get("wall_s", 0) > 0.5:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed = json.loads(file.read_text())  # whole (written atomically), not a half-written file
    assert killed["wall_s"] > 0.5 and killed["sittings"] == 1
    with Stopwatch(file) as resumed:
        assert resumed.elapsed() >= killed["wall_s"]
    assert json.loads(file.read_text())["sittings"] == 2


@pytest.mark.parametrize(
    "text",
    ['{"wall": 3', '{"wall_s": NaN, "sittings": 1}', '{"wall_s": -5, "sittings": 1}', '{"wall_s": 5, "sittings": 1.5}'],
)
def test_a_file_that_is_not_a_stopwatch_is_reported_not_restarted(tmp_path: Path, text: str) -> None:
    file = tmp_path / "row.wall.json"
    file.write_text(text)
    with pytest.raises(WorkdirError, match="row.wall.json is not a stopwatch file.*remove it"):
        Stopwatch(file)  # a JdnasError: the CLI prints its one line (a ValueError was a traceback)
    assert file.read_text() == text  # left as it was


def test_work_before_the_file_counts_and_finish_freezes_the_total(tmp_path: Path) -> None:
    """``started``: checks that ran before the file could be written count; ``finish()``: the job's time
    is what it took until then, and the finished job called again adds nothing (a compress run called
    again once finished reports the same)."""
    file = tmp_path / "wall.json"
    with Stopwatch(file, started=time.monotonic() - 100) as watch:
        assert watch.elapsed() >= 100 and watch.total_sittings == 1
        watch.finish()
        total = watch.elapsed()
        time.sleep(0.2)
        assert watch.elapsed() == total
    assert json.loads(file.read_text()) == {"wall_s": total, "sittings": 1, "finished": True}
    with Stopwatch(file) as again:
        time.sleep(0.2)
    assert again.elapsed() == total and again.total_sittings == 1
    assert json.loads(file.read_text()) == {"wall_s": total, "sittings": 1, "finished": True}


def test_a_call_refused_for_other_settings_is_no_sitting(tmp_path: Path) -> None:
    """It counted: a rerun refused for other settings, then the right one, read "over 3 sittings"."""
    file = tmp_path / "wall.json"
    with Stopwatch(file):
        time.sleep(0.1)
    first = json.loads(file.read_text())
    with pytest.raises(OtherSettingsError), Stopwatch(file):
        time.sleep(0.2)
        raise OtherSettingsError("the workdir holds a search with other settings")
    assert json.loads(file.read_text()) == first
    fresh = tmp_path / "fresh.json"
    with pytest.raises(OtherSettingsError), Stopwatch(fresh):
        raise OtherSettingsError("refused")
    assert not fresh.exists()
    with pytest.raises(SearchError), Stopwatch(file):  # any other failure was spent on the job: a sitting
        raise SearchError("a candidate failed")
    assert json.loads(file.read_text())["sittings"] == 2
