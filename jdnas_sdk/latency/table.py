"""Latency tables: a target's device fingerprint and one measured (or modelled) entry per op.

The file format is specified field by field in ``latency_tables/FORMAT.md``; this module is its
implementation. Loading validates everything before returning and reports every problem it
finds with the file's name and the fix; writes are atomic, so a killed profiler leaves the last
complete table behind.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, first_line
from .._lock import lock_table
from ..errors import LatencyTableError
from .ops import OpKey
from .places import (  # re-exported: where tables are found lives in .places
    CACHE_ENV,
    SHIPPED_TABLES,
    TABLES_ENV,
    cache_root,
    table_path,
    tables_dirs,
    user_tables_dir,
)
from .roofline import DeviceModel, finite_number

__all__ = [
    "SCHEMA_VERSION",
    "FORMAT_NAME",
    "SOURCES",
    "Fingerprint",
    "Entry",
    "LatencyTable",
    "DeviceMismatchWarning",
    "tables_dirs",
    "user_tables_dir",
    "cache_root",
    "CACHE_ENV",
    "SHIPPED_TABLES",
    "TABLES_ENV",
    "table_path",
]

logger = logging.getLogger(__name__)

FORMAT_NAME = "jdnas-latency-table"
SCHEMA_VERSION = 1
SOURCES = ("measured", "modelled")
ENTRY_SOURCES = ("measured", "modelled", "residual")
MAX_ENTRY_MS = 3_600_000.0  # an hour: no kernel or fixed entry takes longer (a damaged file; sums overflow)


class DeviceMismatchWarning(UserWarning):
    """A table measured on one device is used on another."""


@dataclass(frozen=True)
class Fingerprint:
    """What a measurement depends on: the device and the software that ran the kernels."""

    device: str
    backend: str
    backend_version: str
    precision: str = "fp32"
    batch: int = 1
    threads: int = 1
    provider: str = ""
    driver: str = ""
    optimization: str = ""
    machine: str = ""

    def describe(self) -> str:
        parts = [self.device, f"{self.backend} {self.backend_version}".strip()]
        if self.provider:
            parts.append(self.provider)
        if self.driver:
            parts.append(f"driver {self.driver}")
        parts.append(f"{self.precision}, batch {self.batch}, {self.threads} thread{'s' if self.threads != 1 else ''}")
        if self.optimization:
            parts.append(f"optimisation {self.optimization}")
        return ", ".join(parts)

    def differences(self, other: Fingerprint) -> list[str]:
        """Fields that differ, as ``name: ours != theirs``."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True)
class Entry:
    """One op's latency: median over ``samples`` runs and the interquartile range, in ms.

    ``source`` is ``measured``, ``modelled`` (roofline) or ``residual`` (a fixed entry: the
    whole detector's measured time minus its ops' entries); ``info`` holds plain extra facts
    (for a fixed entry: the end-to-end time and the number of detections it ran with).
    """

    median_ms: float
    spread_ms: float = 0.0
    samples: int = 0
    source: str = "measured"
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "median_ms": round(self.median_ms, 6),
            "spread_ms": round(self.spread_ms, 6),
            "samples": self.samples,
            "source": self.source,
        }
        if self.info:
            out["info"] = self.info
        return out


@dataclass
class LatencyTable:
    """A target's table: metadata plus ``entries`` keyed by :class:`OpKey`.

    ``model`` holds the roofline parameters of a modelled table (so its misses can be modelled on
    demand); ``path`` is where it was loaded from or last saved; ``shipped``, where set, the
    file its entries were read from (:func:`~jdnas_sdk.latency.local.resolve_local`).
    """

    target: str
    source: str
    fingerprint: Fingerprint
    entries: dict[OpKey, Entry] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    created: str = ""
    updated: str = ""
    notes: str = ""
    path: Path | None = None
    shipped: Path | None = None  # the shipped table whose entries answer here, when ``path`` is its cache

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise LatencyTableError(f"table source must be one of {SOURCES}, got {self.source!r}")
        if not self.target or not isinstance(self.target, str) or "/" in self.target:
            raise LatencyTableError(f"a target name is a non-empty word without '/', got {self.target!r}")
        self.created = self.created or _now()

    @property
    def modelled(self) -> bool:
        return self.source == "modelled"

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: OpKey) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: OpKey, entry: Entry) -> None:
        """Add or replace an entry (times kept to the nanosecond, as the file stores them)."""
        self.entries[key] = replace(entry, median_ms=round(entry.median_ms, 6), spread_ms=round(entry.spread_ms, 6))

    # -- files -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "target": self.target,
            "source": self.source,
            "unit": "ms",
            "device": asdict(self.fingerprint),
            "model": self.model,
            "created": self.created,
            "updated": self.updated,
            "notes": self.notes,
            "entries": {str(k): e.to_json() for k, e in sorted(self.entries.items(), key=lambda kv: str(kv[0]))},
        }

    def save(self, path: str | os.PathLike[str] | None = None, *, merge: bool = True) -> Path:
        """Write the table atomically to ``path`` (default: where it came from), under the table's
        lock; with ``merge`` the entries another process saved there meanwhile are kept (ours win),
        ``merge=False`` writes exactly this table (after removing entries on purpose)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise LatencyTableError("this table has no path yet; pass one to save()")
        with lock_table(target):
            if merge:
                self.merge_saved(target)
            self.updated = _now()
            atomic_write_json(target, self.to_json())
        self.path = target
        return target

    def merge_saved(self, path: str | os.PathLike[str] | None = None) -> None:
        """Add the entries another process saved to ``path`` (default: this table's file) since this
        table was read (ours win), so two processes measuring into one table never lose each other's entries."""
        path = Path(path) if path is not None else self.path
        if path is None:
            return
        if not path.is_file():
            return
        try:
            other = LatencyTable.load(path)
        except LatencyTableError as exc:
            logger.warning("overwriting %s, which no longer reads as a table: %s", path, exc)
            return
        if (other.target, other.source, other.fingerprint) != (self.target, self.source, self.fingerprint):
            return
        for key, entry in other.entries.items():
            self.entries.setdefault(key, entry)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """Read and validate a table file; every problem raises :class:`LatencyTableError`."""
        path = Path(path)
        if not path.is_file():
            what = "is a folder, not a table file" if path.is_dir() else "does not exist"
            raise LatencyTableError(f"latency table {path} {what}")
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except RecursionError as exc:
            raise LatencyTableError(
                f"latency table {path} nests too deeply to be a table; it is corrupt: restore it or re-run "
                f"`jdnas profile`"
            ) from exc
        except OSError as exc:
            raise LatencyTableError(f"latency table {path} cannot be read ({exc.strerror or exc})") from exc
        except UnicodeDecodeError as exc:
            raise LatencyTableError(
                f"latency table {path} is not UTF-8 text ({exc.reason}); it is corrupt: restore it or re-run "
                f"`jdnas profile`"
            ) from exc
        except json.JSONDecodeError as exc:
            raise LatencyTableError(
                f"latency table {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): "
                "it is corrupt or truncated; restore it or re-run `jdnas profile` (it resumes from a good table)"
            ) from exc
        except ValueError as exc:  # an integer past Python's 4300 digits
            raise LatencyTableError(
                f"latency table {path} is not valid JSON ({first_line(exc)}): it is corrupt; restore it or re-run "
                "`jdnas profile`"
            ) from exc
        table = cls.from_json(data, origin=str(path))
        table.path = path
        return table

    @classmethod
    def from_json(cls, data: Any, *, origin: str = "<table>") -> LatencyTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise LatencyTableError(f'{origin} is not a jdnas latency table (no "format": "{FORMAT_NAME}")')
        version = data.get("schema_version")
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise LatencyTableError(
                f"{origin} has schema_version {version!r}; this jdnas_sdk reads version {SCHEMA_VERSION} only: "
                "upgrade jdnas_sdk or re-profile the target with this version"
            )
        problems: list[str] = []
        for name, kind in (("target", str), ("source", str), ("device", dict), ("entries", dict)):
            if not isinstance(data.get(name), kind):
                problems.append(f"field {name!r} must be a {kind.__name__}, got {type(data.get(name)).__name__}")
        if problems:
            raise LatencyTableError(f"{origin} is not a valid latency table: " + "; ".join(problems))
        for name in ("created", "updated", "notes"):
            if not isinstance(data.get(name, ""), str):
                raise LatencyTableError(f"{origin}: field {name!r} must be a string, got {type(data[name]).__name__}")
        device = _fingerprint(data["device"], origin)
        entries: dict[OpKey, Entry] = {}
        for text, raw in data["entries"].items():
            try:
                key = OpKey.parse(text)
                if key.kind == "fixed" and min(int(key[x]) for x in ("h", "w", "rh", "rw")) < 1:
                    raise LatencyTableError("a fixed entry's sizes h, w, rh, rw must be >= 1")
                entries[key] = _entry(raw)
            except LatencyTableError as exc:
                problems.append(f"entries[{text!r}]: {exc}")
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise LatencyTableError(
                f"{origin} has {len(problems)} bad entr{'y' if len(problems) == 1 else 'ies'}: {shown}"
            )
        model = data.get("model")
        if model is not None and not isinstance(model, dict):
            raise LatencyTableError(f"{origin}: field 'model' must be an object or null")
        if model is not None:
            try:
                DeviceModel.from_dict(model)
            except LatencyTableError as exc:
                raise LatencyTableError(f"{origin}: field 'model': {exc}") from exc
        if data["source"] == "modelled" and model is None:
            raise LatencyTableError(f"{origin}: a modelled table must carry its device model in field 'model'")
        try:
            return cls(
                target=data["target"],
                source=data["source"],
                fingerprint=device,
                entries=entries,
                model=model,
                created=str(data.get("created", "")),
                updated=str(data.get("updated", "")),
                notes=str(data.get("notes", "")),
            )
        except LatencyTableError as exc:
            raise LatencyTableError(f"{origin}: {exc}") from exc

    def warn_if_other_device(self, here: Fingerprint) -> bool:
        """Warn (and return True) when this measured table's device is not ``here``."""
        if self.modelled:
            return False
        differences = self.fingerprint.differences(here)
        if not differences:
            return False
        warnings.warn(
            f"latency table {self.target!r} was measured on [{self.fingerprint.describe()}], "
            f"but this machine is [{here.describe()}] ({'; '.join(differences)}): its numbers describe the "
            "table's device, and misses are interpolated rather than measured",
            DeviceMismatchWarning,
            stacklevel=2,
        )
        return True


def _fingerprint(raw: dict[str, Any], origin: str) -> Fingerprint:
    known = {f.name: f for f in fields(Fingerprint)}
    unknown = sorted(set(raw) - set(known))
    if unknown or not isinstance(raw.get("device"), str) or not isinstance(raw.get("backend"), str):
        raise LatencyTableError(
            f"{origin}: field 'device' has unknown or missing fields: it needs string 'device' "
            f"and 'backend' and only the fields {sorted(known)} (unknown: {unknown})"
        )
    for name, value in raw.items():
        integer = name in ("batch", "threads")
        ok = (
            (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096)
            if integer
            else isinstance(value, str)
        )
        if not ok:
            kind = "an integer from 1 to 4096" if integer else "a string"
            raise LatencyTableError(f"{origin}: field 'device.{name}' must be {kind}, got {value!r}")
    try:
        return Fingerprint(**raw)
    except TypeError as exc:
        raise LatencyTableError(f"{origin}: field 'device' has unknown or missing fields ({exc})") from exc


def _entry(raw: Any) -> Entry:
    if not isinstance(raw, dict):
        raise LatencyTableError(f"entry must be an object, got {type(raw).__name__}")
    unknown = set(raw) - {"median_ms", "spread_ms", "samples", "source", "info"}
    if unknown:
        raise LatencyTableError(f"entry has unknown fields {sorted(unknown)}")
    median, spread, samples = raw.get("median_ms"), raw.get("spread_ms", 0.0), raw.get("samples", 0)
    for name, value in (("median_ms", median), ("spread_ms", spread)):
        if not finite_number(value) or not 0 <= value <= MAX_ENTRY_MS:
            raise LatencyTableError(
                f"entry {name} must be a finite number >= 0 and at most {MAX_ENTRY_MS:.0f} (an hour), got {value!r}"
            )
    if not isinstance(samples, int) or isinstance(samples, bool) or not 0 <= samples < 2**53:
        raise LatencyTableError(f"entry samples must be an integer >= 0, got {samples!r}")
    source = raw.get("source", "measured")
    if source not in ENTRY_SOURCES:
        raise LatencyTableError(f"entry source must be one of {ENTRY_SOURCES}, got {source!r}")
    info = raw.get("info", {})
    if not isinstance(info, dict):
        raise LatencyTableError("entry info must be an object")
    return Entry(float(median), float(spread), samples, source, info)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
