"""Where latency tables are found: the shipped ones, this user's own, and the folders of
``$JDNAS_LATENCY_TABLES``; how a target name or path becomes a file."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LatencyTableError

__all__ = ["CACHE_ENV", "SHIPPED_TABLES", "TABLES_ENV", "cache_root", "table_path", "tables_dirs", "user_tables_dir"]

#: Environment variable naming extra directories (``os.pathsep``-separated) searched for tables.
TABLES_ENV = "JDNAS_LATENCY_TABLES"
#: Environment variable naming the user cache folder (default ``$XDG_CACHE_HOME/jdnas`` or ``~/.cache/jdnas``).
CACHE_ENV = "JDNAS_CACHE"

#: The tables shipped with the SDK: only ever read (an install may be read-only; a checkout's are tracked).
SHIPPED_TABLES = Path(__file__).resolve().parents[2] / "latency_tables"


def cache_root() -> Path:
    """This user's jdnas cache folder: ``$JDNAS_CACHE``, else ``$XDG_CACHE_HOME/jdnas`` or ``~/.cache/jdnas``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "jdnas"
        )
    return Path(root)


def user_tables_dir() -> Path:
    """Where ``jdnas profile`` writes a new target's table by default (``<cache>/tables``), so that
    a later ``--target NAME`` finds it from any folder."""
    return cache_root() / "tables"


def tables_dirs() -> list[Path]:
    """Where targets are looked up: ``$JDNAS_LATENCY_TABLES`` entries, this user's own tables
    (:func:`user_tables_dir`), then the shipped tables."""
    dirs = [Path(p) for p in os.environ.get(TABLES_ENV, "").split(os.pathsep) if p]
    return [*dirs, user_tables_dir(), SHIPPED_TABLES]


def table_path(target: str | os.PathLike[str]) -> Path:
    """The file of ``target``: a path to a ``.json`` file, or a target name found in :func:`tables_dirs`."""
    text = os.fspath(target)
    if text.endswith(".json") or os.sep in text:
        return Path(text)
    for directory in tables_dirs():
        candidate = directory / f"{text}.json"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in tables_dirs() if d.is_dir() for p in d.glob("*.json")})
    raise LatencyTableError(
        f"no latency table for target {text!r}; known targets: {', '.join(known) or 'none'}. "
        f"Profile it with `jdnas profile --target {text} ...` on the device, or point ${TABLES_ENV} at a "
        f"directory holding {text}.json"
    )
