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
    restarted from zero.
    ``started``: when this sitting began (a :func:`time.monotonic` value), where work came before the
    file could be written (checks before a workdir is made); entering the ``with`` by default."""

    def __init__(self, file: str | Path, *, every: float = 30.0, started: float | None = None) -> None:
        self.file = Path(file)
        self.every, self.started = every, started
        self.before, self.sittings = self._read()
        self._started: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[float, int]:
        if not self.file.is_file():
            return 0.0, 0
        try:
            data = read_json(self.file)
            wall, sittings = float(data["wall_s"]), data["sittings"]
            if not (math.isfinite(wall) and wall >= 0 and type(sittings) is int and sittings >= 0):
                raise ValueError(f"wall_s {data['wall_s']!r} and sittings {sittings!r} must be counts")
            return wall, sittings
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise WorkdirError(
                f"{self.file} is not a stopwatch file ({exc}); remove it to count this job's time from zero"
            ) from exc

    def elapsed(self) -> float:
        """Seconds over all sittings (this one's so far while running)."""
        running = 0.0 if self._started is None else time.monotonic() - self._started
        return self.before + running

    def _save(self) -> None:  # while running: this sitting counts as one
        atomic_write_json(self.file, {"wall_s": self.elapsed(), "sittings": self.sittings + 1})

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            self._save()

    def __enter__(self) -> Stopwatch:
        self._started, self.started = time.monotonic() if self.started is None else self.started, None
        self._stop = threading.Event()
        self._save()
        self._thread = threading.Thread(target=self._tick, name="stopwatch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()  # no tick after the last write
        total, self._started = self.elapsed(), None
        self.before, self.sittings = total, self.sittings + 1
        atomic_write_json(self.file, {"wall_s": total, "sittings": self.sittings})
