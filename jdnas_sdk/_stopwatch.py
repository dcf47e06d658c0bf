"""Wall time that survives a kill: the seconds a resumable job has run over all its sittings.

A benchmark row or a base's training that is killed and run again resumes from its checkpoints, so
the time of its last sitting alone understates what it cost. :class:`Stopwatch` keeps the running
total in a small JSON file, rewritten every ``every`` seconds while it runs (a kill loses at most
that much) and once more at the end; a later sitting starts from the total it finds there.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from types import TracebackType

from ._io import atomic_write_json, read_json
from .errors import WorkdirError

__all__ = ["Stopwatch"]


class Stopwatch:
    """``with Stopwatch(file) as watch: ...``; ``watch.elapsed()`` is the seconds of every sitting
    so far, this one included. The file holds ``{"wall_s": ..., "sittings": ...}``; one that cannot
    be read as that is reported (:class:`~jdnas_sdk.errors.WorkdirError` naming it), not silently
    restarted from zero. ``watch.finish()`` freezes the total (``"finished": true``): the job's time is
    what it took until then, and the same job called again once finished adds nothing.
    ``started``: when this sitting began (a :func:`time.monotonic` value), where work came before the
    file could be written (checks before a workdir is made); entering the ``with`` by default."""

    def __init__(self, file: str | Path, *, every: float = 5.0, started: float | None = None) -> None:
        self.file = Path(file)
        self.every, self.started = every, started
        self.before, self.sittings, self.finished = self._read()
        self._started: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[float, int, bool]:
        if not self.file.is_file():
            return 0.0, 0, False
        try:
            data = read_json(self.file)
            wall, sittings, finished = float(data["wall_s"]), data["sittings"], data.get("finished", False)
            if not (math.isfinite(wall) and wall >= 0 and type(sittings) is int and sittings >= 0):
                raise ValueError(f"wall_s {data['wall_s']!r} and sittings {sittings!r} must be counts")
            if not isinstance(finished, bool):
                raise ValueError(f"finished must be true or false, got {finished!r}")
            return wall, sittings, finished
        except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as exc:
            raise WorkdirError(
                f"{self.file} is not a stopwatch file ({exc}); remove it to count this job's time from zero"
            ) from exc

    def elapsed(self) -> float:
        """Seconds over all sittings (this one's so far while running)."""
        running = 0.0 if self._started is None else time.monotonic() - self._started
        return self.before + running

    @property
    def total_sittings(self) -> int:
        """The sittings so far, this one included while it counts."""
        return self.sittings + (self._started is not None)

    def finish(self) -> None:
        """The job is done: its total stays as it is now (a later call of the finished job adds nothing)."""
        self._halt()
        self.finished = True
        self._write()

    def _write(self) -> None:
        mark = {"finished": True} if self.finished else {}
        atomic_write_json(self.file, {"wall_s": self.before, "sittings": self.sittings, **mark})

    def _save(self) -> None:  # while running
        atomic_write_json(self.file, {"wall_s": self.elapsed(), "sittings": self.total_sittings})

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            self._save()

    def _stop_ticking(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _halt(self) -> None:
        """Stop counting this sitting: no tick after this, and its time joins the total."""
        self._stop_ticking()
        self.before, self.sittings, self._started = self.elapsed(), self.total_sittings, None

    def _discard(self) -> None:
        """This sitting was no sitting of the job (a call refused for other settings): the file as it
        was before it, or none where there was none."""
        self._stop_ticking()
        self._started = None
        if self.sittings == 0 and self.before == 0:
            self.file.unlink(missing_ok=True)
        else:
            self._write()

    def __enter__(self) -> Stopwatch:
        began, self.started = time.monotonic() if self.started is None else self.started, None
        if self.finished:  # the finished job called again: nothing to count
            return self
        self._started, self._stop = began, threading.Event()
        self._save()
        self._thread = threading.Thread(target=self._tick, name="stopwatch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._started is not None and getattr(exc, "discards_sitting", False):
            self._discard()  # e.g. OtherSettingsError: the call was refused, the job did not run
        elif self._started is not None:  # still counting (not finished before or during this sitting)
            self._halt()
            self._write()
