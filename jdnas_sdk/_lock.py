"""One run at a time per workdir or table: an OS file lock held for the whole run.

The lock is ``fcntl.flock`` on a small file (``<workdir>/.jdnas.lock``, ``<table>.json.lock``).
The kernel drops it when its process ends, however it ends, so a lock left by a killed run is
taken over at once (the holder it recorded is logged as stale); a run that ends normally removes
the file. The file records the holder
(pid, host, command, start time) so a second run can say who holds it: it refuses with that, or
waits for it with ``wait=`` (``True``: forever, a number: that many seconds).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import json
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ._io import read_json, storage_errors
from .errors import LockError

__all__ = [
    "RunLock",
    "workdir_run",
    "holds_workdir",
    "lock_output",
    "lock_workdir",
    "lock_table",
    "lock_holder",
    "WORKDIR_LOCK",
    "LOCK_SUFFIX",
]

log = logging.getLogger(__name__)

#: The lock file of a workdir, inside it.
WORKDIR_LOCK = ".jdnas.lock"
#: A table's lock file is the table's path plus this suffix.
LOCK_SUFFIX = ".lock"
_POLL_S = 0.2
#: Lock files this process holds (resolved path -> nesting depth): a nested lock of one is free.
_HELD: dict[str, int] = {}


def lock_holder(lock_file: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the lock file says about its last holder (``None`` if it says nothing readable)."""
    try:
        data = read_json(lock_file) if Path(lock_file).stat().st_size else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (it recorded no details)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
        f"({holder.get('command') or 'unknown command'})"
    )


class RunLock:
    """An exclusive lock on ``lock_file`` for a run; use as a context manager.

    ``what`` names the locked thing in messages (``"workdir runs/a"``). ``wait``: ``False``
    refuses at once with :class:`LockError` naming the holder, ``True`` waits as long as it
    takes, a number waits that many seconds before refusing. Within one process the lock nests:
    locking a file this process already holds succeeds at once (a table save inside a profile run).
    """

    def __init__(self, lock_file: str | os.PathLike[str], *, what: str = "", wait: bool | float = False) -> None:
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and not wait >= 0:
            raise LockError(f"wait must be True, False or seconds >= 0, got {wait!r}")
        self.path = Path(lock_file)
        self.what = what or str(self.path)
        self.wait = wait
        self._fd: int | None = None
        self._nested = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (waiting as ``wait`` says) and record this process as its holder."""
        if self._fd is not None or self._nested:
            return self
        key = str(self.path.resolve())
        if key in _HELD:  # this process holds it already (a save inside a locked run): nest
            _HELD[key] += 1
            self._nested = True
            return self
        deadline = None if self.wait is True else time.monotonic() + float(self.wait or 0)
        logged = False
        while True:
            with storage_errors(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = lock_holder(self.path)
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockError(
                        f"{self.what} is in use by {_describe(holder)}; wait for that run to finish "
                        f"(or pass wait=True / --wait), or use another folder"
                    ) from None
                if not logged:
                    log.warning("%s is in use by %s; waiting for it", self.what, _describe(holder))
                    logged = True
                time.sleep(_POLL_S)
                continue
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed that file on release: lock the one at the path now
        previous = lock_holder(self.path)
        if previous and previous.get("pid") not in (None, os.getpid()):
            log.warning(
                "taking over the lock of %s left by %s, which ended without releasing it",
                self.what,
                _describe(previous),
            )
        self._fd = fd
        _HELD[key] = 1
        self._record()
        return self

    def _open(self) -> int:
        """The lock file, opened without following a link: a symbolic link planted at the lock's
        path (a workdir received from someone else) would have its target overwritten by the
        holder's record; it, or anything not a plain file, is refused instead."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise
            fd = None
        if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        if fd is not None:
            os.close(fd)
        raise LockError(
            f"{self.path}, the lock of {self.what}, is a link or not a plain file; a lock written there would "
            "overwrite what it is: remove it (it holds nothing of the run) and run again"
        )

    def _record(self) -> None:
        assert self._fd is not None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv)[:500],
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        data = json.dumps(holder).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as exc:  # the lock itself holds; only the note of who holds it is lost
            log.warning("could not record the holder in %s: %s", self.path, exc)

    def release(self) -> None:
        """Drop the lock and remove its file (a process that was waiting on the removed file sees it
        is gone and locks the path afresh, so removing it is safe)."""
        key = str(self.path.resolve())
        if self._nested:
            self._nested = False
            _HELD[key] -= 1
            return
        if self._fd is None:
            return
        _HELD.pop(key, None)
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_workdir(workdir: str | os.PathLike[str], *, wait: bool | float = False) -> RunLock:
    """The lock of a run's workdir (``<workdir>/.jdnas.lock``); not yet taken: use ``with``."""
    return RunLock(Path(workdir) / WORKDIR_LOCK, what=f"workdir {workdir}", wait=wait)


def lock_table(table_file: str | os.PathLike[str], *, wait: bool | float = True) -> RunLock:
    """The lock of a latency table file (``<table>.lock``); by default waits, as table writes are short."""
    path = Path(table_file)
    return RunLock(path.with_name(path.name + LOCK_SUFFIX), what=f"latency table {path}", wait=wait)


@contextmanager
def workdir_run(workdir: str | os.PathLike[str], *, wait: bool | float = False) -> Iterator[Path]:
    """Hold ``workdir``'s lock for a run (creating the folder); if the run fails and the folder
    was created for it and holds nothing but the lock, it is removed: a failed start leaves nothing."""
    path = Path(workdir)
    created = not path.exists()
    lock = lock_workdir(path, wait=wait)
    try:
        with lock:
            yield path
    except BaseException:
        if created:
            _remove_if_empty(path)
        raise


def _remove_if_empty(path: Path) -> None:
    try:
        if not any(path.iterdir()):  # its lock file went with the lock; another run's would stay
            path.rmdir()
    except OSError:
        pass


_F = TypeVar("_F", bound=Callable[..., Any])


def holds_workdir(func: _F) -> _F:
    """Run ``func`` (which takes keyword ``workdir`` and ``wait``) inside :func:`workdir_run`: one
    run per workdir, and a run that fails to start leaves no folder it created behind."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ._args import as_path  # here: _args reads arch, which this low module must not import at load

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with workdir_run(as_path(bound.arguments["workdir"], "workdir"), wait=bound.arguments.get("wait", False)):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def lock_output(path: str | os.PathLike[str], *, wait: bool | float = False) -> RunLock:
    """The lock of a file a run writes (``<file>.lock``): two ``jdnas train --out X`` never share checkpoints."""
    target = Path(path)
    return RunLock(target.with_name(target.name + LOCK_SUFFIX), what=f"output {target}", wait=wait)
