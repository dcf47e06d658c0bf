"""The CLI's one output channel: results on stdout, the library's log on stderr, -v and -q."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jdnas_sdk.cli import configure_logging, main


def test_the_log_goes_to_stderr_as_plain_messages_and_minds_v_and_q(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("jdnas_sdk.compress")
    root, level = logging.getLogger(), logging.getLogger().level
    try:
        configure_logging()
        log.info("an info line")
        log.debug("a debug line")
        configure_logging(quiet=True)  # a second call replaces the first handler: nothing twice
        log.info("hidden by -q")
        log.warning("a warning")
        configure_logging(verbose=True)
        log.debug("shown by -v")
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.splitlines() == ["an info line", "a warning", "shown by -v"]
    finally:
        root.removeHandler(configure_logging())
        root.setLevel(level)


def test_quiet_turns_the_bars_off_and_v_with_q_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["data", "synth", "--train", "2", "--val", "1", "--size", "64"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    loud = capsys.readouterr()
    assert "synth train" in loud.err and "dataset written to" in loud.out
    assert main(["-q", *args, "--out", str(tmp_path / "b")]) == 0
    quiet = capsys.readouterr()
    assert "synth train" not in quiet.err and "dataset written to" in quiet.out
    assert main([*args[:2], "-q", *args[2:], "--out", str(tmp_path / "c")]) == 0  # after the verb too
    assert "synth train" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["-v", "-q", *args, "--out", str(tmp_path / "d")])
    assert info.value.code == 2 and "exclude each other" in capsys.readouterr().err
