"""Crash-safe file writes: a reader sees the old file or the new one, never half of one.

Every write goes to a temporary beside its target, is fsynced, renamed over the target and the
folder is fsynced too, so a power cut keeps the rename. Temporaries carry the writer's pid, so the
next write of the same target removes those a killed writer left behind. Write failures of the
disk itself (full, read-only, access denied) become one :class:`~jdnas_sdk.errors.StorageError`
line that says which and where; :func:`check_writable` finds them before any work is done.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import StorageError

__all__ = [
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_torch_save",
    "atomic_dir",
    "storage_errors",
    "storage_error",
    "check_output_file",
    "check_writable",
    "clean_stale_temporaries",
    "fsync_dir",
    "CorruptFile",
    "first_line",
    "read_json",
    "torch_load",
]

log = logging.getLogger(__name__)

#: errno -> what it means for the user, for the errors translated into :class:`StorageError`.
_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of its path is a file, not a folder",
    errno.EEXIST: "a part of its path is a file, not a folder",
    errno.ENOENT: "its folder does not exist and cannot be made there (or cannot hold files)",
    errno.EISDIR: "a part of its path is a folder where a file must be",
}
#: A temporary without a pid in its name (older SDK versions) is stale after this many seconds.
_ANONYMOUS_STALE_S = 600.0


def storage_error(exc: OSError, where: str | os.PathLike[str]) -> StorageError | None:
    """The :class:`StorageError` for ``exc`` (disk full, read-only, access denied) at ``where``, or
    ``None`` when ``exc`` is another kind of failure."""
    reason = _DISK_ERRORS.get(exc.errno or 0)
    if reason is None:
        text = str(exc)
        if "unexpected pos" in text or "No space left" in text:  # torch's C++ writer loses the errno
            reason = _DISK_ERRORS[errno.ENOSPC]
        else:
            return None
    fix = (
        "free some space or write elsewhere"
        if "full" in reason or "quota" in reason
        else "choose a folder (or fix that path)"
        if "part of its path" in reason
        else "choose a writable folder (or fix its permissions)"
    )
    err = StorageError(f"cannot write {where}: {reason} ({exc.strerror or exc}); {fix}")
    err.errno = exc.errno
    return err


@contextmanager
def storage_errors(where: str | os.PathLike[str]) -> Iterator[None]:
    """Translate disk-full / read-only / permission failures inside the block into :class:`StorageError`.

    torch's writer reports a full disk as a ``RuntimeError`` (``unexpected pos``); that is translated too.
    """
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        translated = storage_error(exc, where)
        if translated is None:
            raise
        raise translated from exc
    except RuntimeError as exc:
        if "unexpected pos" not in str(exc) and "No space left" not in str(exc):
            raise
        raise StorageError(
            f"cannot write {where}: the disk is full ({exc}); free some space or write elsewhere"
        ) from exc


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a folder so a rename inside it survives a power cut (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``target`` that killed writers left (``.<name>.<pid>.*.tmp`` of a
    dead pid, or nameless ones older than ten minutes); returns what was removed."""
    path = Path(target)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        middle = tmp.name[len(path.name) + 2 : -len(".tmp")]
        pid_text = middle.split(".", 1)[0]
        try:
            if pid_text.isdigit() and "." in middle:
                stale = not _pid_alive(int(pid_text))
            elif "." not in middle:  # an older version's temporary, without a pid
                stale = now - tmp.stat().st_mtime > _ANONYMOUS_STALE_S
            else:  # another file's temporary (".<name>.json.<pid>...")
                continue
            if stale:
                size = tmp.stat().st_size if tmp.is_file() else 0
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
                removed.append(tmp)
                log.info("removed %s (%d bytes) left by a killed write of %s", tmp, size, path)
        except OSError:
            continue
    return removed


def _mkstemp_beside(target: Path, *, directory: bool = False) -> Path:
    prefix, suffix = f".{target.name}.{os.getpid()}.", ".tmp"
    with storage_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(target)
        if directory:
            return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual permissions
    return Path(name)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was; a full or
    read-only disk raises :class:`StorageError` naming ``path``.
    """
    target = Path(path)
    if target.is_dir():  # before the caller's work, not when the rename fails after it
        raise StorageError(f"cannot write {target}: it is a folder; give a file path (e.g. {target / 'NAME'})")
    tmp = _mkstemp_beside(target)
    try:
        with storage_errors(target):
            yield tmp
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path`` (an old ``path`` is
    replaced), on failure it is removed: a reader never sees half a folder."""
    target = Path(path)
    tmp = _mkstemp_beside(target, directory=True)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with storage_errors(target):
            yield tmp
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}.{os.getpid()}.old.tmp")
                os.replace(target, old)
            os.replace(tmp, target)
            fsync_dir(target.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _write_with(path: str | os.PathLike[str], writer: Callable[[IO[Any]], None], mode: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, mode) as handle:
            writer(handle)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (no NaN: they are not JSON)."""
    return _write_with(path, lambda h: json.dump(data, h, indent=indent, allow_nan=False), "w")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: reports, Markdown, HTML."""
    return _write_with(path, lambda h: h.write(text), "w")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: plots, images."""
    return _write_with(path, lambda h: h.write(data), "wb")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    return _write_with(path, lambda h: torch.save(obj, h), "wb")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none): for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class CorruptFile(ValueError):
    """A file that is not what its writer wrote: its message completes "FILE ..." (``is corrupt: ...``);
    ``kind`` says how (``"archive"``, ``"checksum"`` or ``"pickle"``), for the caller's advice."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def torch_load(path: str | os.PathLike[str]) -> Any:
    """What ``torch.save`` wrote to ``path``, read as tensors and plain data only (``weights_only``:
    loading never runs code) after checking the archive's checksums, which ``torch.load`` does not
    (a flipped bit would load as other numbers). A file that is not such an archive, or whose part
    fails its checksum, or a pickle holding objects other than tensors and plain data, raises
    :class:`CorruptFile` saying which ("is corrupt ...", "holds pickled objects ..."); torch's other
    errors pass through."""
    import zipfile

    import torch

    if not zipfile.is_zipfile(path):
        raise CorruptFile(
            "is corrupt, truncated or not a PyTorch file (not a zip archive as torch.save writes)", "archive"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CorruptFile(f"is corrupt or truncated ({first_line(exc)})", "archive") from exc
    if bad is not None:
        raise CorruptFile(f"is corrupt: its part {bad} fails its checksum (a damaged copy or disk)", "checksum")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's text ends by advising weights_only=False: not ours to repeat
        lines = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        raise CorruptFile(
            f"holds pickled objects other than tensors and plain data ({lines[0] if lines else 'unsupported'}), "
            "so it was not loaded: loading it could run code",
            "pickle",
        ) from exc


def check_writable(folder: str | os.PathLike[str], *, need_bytes: int = 0, what: str = "output") -> Path:
    """Check, before any work, that ``folder`` (created if missing) can be written and has at least
    ``need_bytes`` free; raise :class:`StorageError` saying disk full / read-only and where otherwise.

    It writes and removes a probe file: mode bits do not tell (root ignores them, a read-only mount
    does not show in them)."""
    path = Path(folder)
    with storage_errors(path):
        if path.exists() and not path.is_dir():
            raise StorageError(f"{what} folder {path} is a file, not a folder; choose a folder")
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".jdnas-probe.", suffix=".tmp", dir=path)
        try:
            os.write(fd, b"x")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    free = shutil.disk_usage(path).free
    if need_bytes > 0 and free < need_bytes:
        raise StorageError(
            f"cannot write {what} to {path}: the disk is nearly full ({free / 2**20:.0f} MiB free, about "
            f"{need_bytes / 2**20:.0f} MiB needed); free some space or write elsewhere"
        )
    return path


def check_output_file(path: str | os.PathLike[str], *, what: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written as a file: a path is given, it is not a
    folder, and its nearest existing folder takes a file (missing folders are made by the write, not
    here); otherwise one :class:`StorageError` line. The write itself stays atomic
    (:func:`atomic_path`); this only moves its errors ahead of the work that would be lost."""
    if not os.fspath(path).strip():
        raise StorageError(f"{what}: the file path is empty; give a file path")
    target = Path(path)
    if target.is_dir():
        raise StorageError(f"cannot write {what} {target}: it is a folder; give a file path (e.g. {target / 'NAME'})")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:  # nothing created: a refusal a moment later leaves none
        folder = folder.parent
    if not folder.is_dir():
        raise StorageError(f"cannot write {what} {target}: {folder} on its path is a file; give a path in a folder")
    check_writable(folder, what=what)
    return target


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON in ``path``, strictly: ``NaN``/``Infinity`` are refused as well as bad UTF-8 and bad
    syntax (each a ``ValueError``; a file that cannot be read raises ``OSError``; ``RecursionError``
    is turned into ``ValueError``). Callers check the shape of what they read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("it nests too deeply") from exc
