"""The search archive: every candidate evaluated, on disk as JSON a person can read.

Each candidate records its lineage (parent, the morphism actions, the teacher it learned from),
its estimated latency, its validation mAP (or why it failed) and which worker trained it when.
The archive file is rewritten atomically after every candidate, so a killed search loses at most
the candidates in progress (whose fine-tuning checkpoints and result files let them resume too).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_json
from ..errors import SearchError

__all__ = ["Candidate", "Archive", "pareto_front"]

ARCHIVE_FORMAT = "jdnas-search-archive"


@dataclass(frozen=True)
class Candidate:
    """One evaluated student. ``index`` 0 is the base; ``file`` is its detector file (relative to
    the workdir); ``latency_ms`` is the table's estimate, ``ap``/``ap50``/``ap75`` are COCO metrics.

    ``error`` is why a candidate failed (a loss that became NaN, ...): a failed candidate stays in
    the archive (its index is spent) but is never a parent, on the front or chosen. ``worker``
    (``host:pid``) trained it from ``started`` to ``ended`` (Unix times): the report's timeline."""

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
        try:
            return cls(**{**data, "actions": tuple(data["actions"])})
        except (TypeError, KeyError) as exc:
            raise SearchError(f"a candidate in the archive is malformed ({exc}): {data!r}") from exc


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates no other candidate beats on both latency (lower) and AP (higher), fastest first
    (failed candidates are left out)."""
    candidates = [c for c in candidates if c.ok]
    front = [c for c in candidates
             if not any(o.latency_ms <= c.latency_ms and o.ap >= c.ap and (o.latency_ms < c.latency_ms or o.ap > c.ap)
                        for o in candidates)]
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
        atomic_write_json(self.path, {"format": ARCHIVE_FORMAT, "version": 1, "settings": self.settings,
                                      "candidates": [c.to_json() for c in self.candidates]})

    def front(self) -> list[Candidate]:
        return pareto_front(self.candidates)

    def best(self, bound_ms: float) -> Candidate | None:
        """The most accurate candidate within ``bound_ms`` (ties: the faster); failed ones never."""
        within = [c for c in self.candidates if c.ok and c.latency_ms <= bound_ms]
        return max(within, key=lambda c: (c.ap, -c.latency_ms)) if within else None

    @classmethod
    def open(cls, path: str | os.PathLike[str], settings: dict[str, Any]) -> Archive:
        """The archive at ``path`` (its settings must equal ``settings``), or a new empty one."""
        path = Path(path)
        if not path.exists():
            return cls(path=path, settings=settings)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SearchError(f"the search archive {path} is unreadable ({exc}); restore it or use a new workdir") from exc
        if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
            raise SearchError(f"{path} is not a jdnas search archive")
        if data.get("settings") != json.loads(json.dumps(settings)):
            raise SearchError(
                f"{path} belongs to a search with other settings; use another workdir, or the same options "
                "to resume it"
            )
        return cls(path=path, settings=settings, candidates=[Candidate.from_json(c) for c in data.get("candidates", [])])
