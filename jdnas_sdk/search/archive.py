"""The search archive: every candidate evaluated, on disk as JSON a person can read.

Each candidate records its lineage (parent, the morphism actions, the teacher it learned from),
its estimated latency, its validation mAP (or why it failed) and which worker trained it when.
The archive file is rewritten atomically after every candidate, so a killed search loses at most
the candidates in progress (whose fine-tuning checkpoints and result files let them resume too).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .._io import atomic_write_json
from ..detectors import load_detector
from ..errors import DetectorFileError, OtherSettingsError, SearchError

__all__ = [
    "Candidate",
    "Archive",
    "pareto_front",
    "validate_candidates",
    "contained_file",
    "load_candidate",
    "finite_number",
]

ARCHIVE_FORMAT = "jdnas-search-archive"


@dataclass(frozen=True)
class Candidate:
    """One evaluated student. ``index`` 0 is the base; ``file`` is its detector file (relative to
    the workdir); ``latency_ms`` is the table's estimate, ``ap``/``ap50``/``ap75`` are COCO metrics.

    ``error`` is why a candidate failed (a loss that became NaN, ...): a failed candidate stays in
    the archive (its index is spent) but is never a parent, on the front or chosen. ``worker``
    (``host:pid``) trained it from ``started`` to ``ended`` (Unix times): the report's timeline.
    ``free``: a move that changes no weight, scored untrained (see ``SearchConfig.free_moves``)."""

    index: int
    arch: str
    parent: int | None
    actions: tuple[str, ...]
    teacher: str | None
    latency_ms: float
    ap: float
    ap50: float
    ap75: float
    file: str
    bound_ms: float | None = None
    wall_s: float = 0.0
    rejected: int = 0
    error: str | None = None
    worker: str | None = None
    started: float | None = None
    ended: float | None = None
    free: bool = False

    @property
    def ok(self) -> bool:
        """Trained and evaluated (not failed)."""
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["actions"] = list(self.actions)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        if not isinstance(data, dict):
            raise SearchError(f"a candidate in the archive must be an object, got {type(data).__name__}")
        try:
            candidate = cls(**{**data, "actions": tuple(data["actions"])})
        except (TypeError, KeyError) as exc:
            raise SearchError(f"a candidate in the archive is malformed ({exc}): {str(data)[:300]}") from exc
        problem = _candidate_problem(candidate)
        if problem:
            raise SearchError(f"candidate {str(data.get('index'))[:20]} in the archive is malformed: {problem}")
        return candidate


_NUMBERS = ("latency_ms", "ap", "ap50", "ap75", "wall_s")


def finite_number(value: Any) -> bool:
    """A finite JSON number (an int or float, not a bool, not NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _candidate_problem(c: Candidate) -> str:
    """What is wrong with one candidate's field types (lineage is checked across the archive)."""
    if not isinstance(c.index, int) or isinstance(c.index, bool) or c.index < 0:
        return f"field 'index' must be an integer >= 0, got {c.index!r}"
    if c.parent is not None and (not isinstance(c.parent, int) or isinstance(c.parent, bool)):
        return f"field 'parent' must be an integer or null, got {c.parent!r}"
    for name in ("arch", "file"):
        if not isinstance(getattr(c, name), str):
            return f"field {name!r} must be a string, got {getattr(c, name)!r}"
    if c.teacher is not None and not isinstance(c.teacher, str):
        return f"field 'teacher' must be a string or null, got {c.teacher!r}"
    if not all(isinstance(a, str) for a in c.actions):
        return "field 'actions' must be a list of strings"
    for name in _NUMBERS:
        if not finite_number(getattr(c, name)):
            return f"field {name!r} must be a finite number, got {getattr(c, name)!r}"
    if c.bound_ms is not None and not finite_number(c.bound_ms):
        return f"field 'bound_ms' must be a finite number or null, got {c.bound_ms!r}"
    if not isinstance(c.rejected, int) or isinstance(c.rejected, bool) or c.rejected < 0:
        return f"field 'rejected' must be an integer >= 0, got {c.rejected!r}"
    for name in ("error", "worker"):
        if getattr(c, name) is not None and not isinstance(getattr(c, name), str):
            return f"field {name!r} must be a string or null, got {getattr(c, name)!r}"
    if not isinstance(c.free, bool):
        return f"field 'free' must be true or false, got {c.free!r}"
    for name in ("started", "ended"):
        if getattr(c, name) is not None and not finite_number(getattr(c, name)):
            return f"field {name!r} must be a finite number or null, got {getattr(c, name)!r}"
    return ""


def validate_candidates(raw: Any, *, origin: str) -> list[Candidate]:
    """Candidates from JSON, checked as a whole: each one well-typed, ``index`` its position, and
    every ``parent`` an earlier candidate (so a lineage ends: no cycle, no dangling parent).
    Every problem is a :class:`SearchError` naming ``origin`` and the field."""
    if not isinstance(raw, list):
        raise SearchError(f"{origin}: the candidates must be a list, got {type(raw).__name__}")
    out: list[Candidate] = []
    for position, item in enumerate(raw):
        try:
            candidate = Candidate.from_json(item)
        except SearchError as exc:
            raise SearchError(f"{origin}: {exc}") from exc
        if candidate.index != position:
            raise SearchError(
                f"{origin}: candidate at position {position} has index {candidate.index}; the archive is damaged"
            )
        if candidate.parent is not None and not 0 <= candidate.parent < position:
            raise SearchError(
                f"{origin}: candidate {position} has parent {candidate.parent}, which is not an earlier "
                "candidate (a lineage must lead back to the base); the archive is damaged"
            )
        out.append(candidate)
    return out


def contained_file(workdir: str | os.PathLike[str], name: Any, *, origin: str) -> Path:
    """``workdir / name`` for a detector file named in an archive, refused unless it stays inside ``workdir``."""
    if not isinstance(name, str) or not name or "\0" in name or Path(name).is_absolute():
        raise SearchError(
            f"{origin}: field 'file' must be a relative file name inside {workdir}, got {str(name)[:100]!r}"
        )
    base = Path(workdir).resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise SearchError(f"{origin}: field 'file' {name!r} points outside the workdir {workdir}")
    return path


def load_candidate(path: str | os.PathLike[str]) -> nn.Module:
    """The detector of a candidate file the search wrote in its workdir. A damaged one says that the run
    cannot go on from it (copying the file "again" is no fix for a file the run made itself)."""
    try:
        return load_detector(path)
    except DetectorFileError as exc:
        raise DetectorFileError(
            f"{exc}. The search wrote this file; the run cannot go on from a damaged one: start it again "
            "with a new workdir"
        ) from exc


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates no other candidate beats on both latency (lower) and AP (higher), fastest first
    (failed candidates are left out)."""
    candidates = [c for c in candidates if c.ok]
    front = [
        c
        for c in candidates
        if not any(
            o.latency_ms <= c.latency_ms and o.ap >= c.ap and (o.latency_ms < c.latency_ms or o.ap > c.ap)
            for o in candidates
        )
    ]
    return sorted(front, key=lambda c: c.latency_ms)


@dataclass
class Archive:
    """Candidates of one search and the settings that produced them (checked on resume)."""

    path: Path
    settings: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)

    def add(self, candidate: Candidate) -> None:
        if candidate.index != len(self.candidates):
            raise SearchError(f"candidate {candidate.index} out of order (archive holds {len(self.candidates)})")
        self.candidates.append(candidate)
        self.save()

    def save(self) -> None:
        atomic_write_json(
            self.path,
            {
                "format": ARCHIVE_FORMAT,
                "version": 1,
                "settings": self.settings,
                "candidates": [c.to_json() for c in self.candidates],
            },
        )

    def front(self) -> list[Candidate]:
        return pareto_front(self.candidates)

    def best(self, bound_ms: float) -> Candidate | None:
        """The most accurate candidate within ``bound_ms`` (ties: the faster); failed ones never."""
        within = [c for c in self.candidates if c.ok and c.latency_ms <= bound_ms]
        return max(within, key=lambda c: (c.ap, -c.latency_ms)) if within else None

    def top(self, bound_ms: float, count: int) -> list[Candidate]:
        """The ``count`` most accurate candidates within ``bound_ms``, best first (:meth:`best`'s
        order), one per architecture (a student reached twice counts once, at its better score)."""
        within = sorted(
            (c for c in self.candidates if c.ok and c.latency_ms <= bound_ms), key=lambda c: (-c.ap, c.latency_ms)
        )
        seen: set[str] = set()
        out = []
        for candidate in within:
            if candidate.arch not in seen:
                seen.add(candidate.arch)
                out.append(candidate)
        return out[:count]

    @classmethod
    def open(cls, path: str | os.PathLike[str], settings: dict[str, Any]) -> Archive:
        """The archive at ``path`` (its settings must equal ``settings``), or a new empty one."""
        path = Path(path)
        if not path.exists():
            return cls(path=path, settings=settings)
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise SearchError(
                f"the search archive {path} is unreadable ({exc}); restore it or use a new workdir"
            ) from exc
        if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
            raise SearchError(f"{path} is not a jdnas search archive")
        if data.get("settings") != json.loads(json.dumps(settings)):
            raise OtherSettingsError(
                f"{path} belongs to a search with other settings; use another workdir, or the same options to resume it"
            )
        candidates = validate_candidates(data.get("candidates", []), origin=str(path))
        for candidate in candidates:
            contained_file(path.parent, candidate.file, origin=f"{path}: candidate {candidate.index}")
        return cls(path=path, settings=settings, candidates=candidates)
