"""What a search keeps on disk, counted before it starts.

Every candidate's detector file stays in ``search/candidates/`` (a later candidate may pick any of them
as its parent, and a resumed search finds them in place), so a search writes one detector file per
candidate, besides the base's and, for the joint search, one per free move (:mod:`.free`). Counted
before any work, this lets ``compress`` say when the workdir's disk will not hold them
(:func:`~jdnas_sdk.preflight.warn_search_disk`) instead of stopping hours in.
"""

from __future__ import annotations

from ..space import SearchSpace
from ..student import Student
from .free import free_students
from .joint import SearchConfig
from .moves import as_searched

__all__ = ["candidate_files"]


def candidate_files(base: str, space: SearchSpace, config: SearchConfig, *, method: str) -> int | None:
    """How many detector files a search of ``config`` from base code ``base`` writes in
    ``search/candidates/``: the base's; for the joint search, each free move the space holds (where
    ``config.free_moves``; an upper bound, as only those faster than the base run) and each candidate;
    for the pipeline, its stages (prune, distil, ``candidates // 3`` searched, final). ``None`` under a
    wall-time budget, where the number of candidates is not known before the search."""
    if method == "pipeline":
        return 1 + 3 + max(1, config.candidates // 3)
    if config.wall_s is not None:
        return None
    parent = as_searched(base, space)
    free = len(free_students(parent, space)) if config.free_moves and isinstance(parent, Student) else 0
    return 1 + free + config.candidates
