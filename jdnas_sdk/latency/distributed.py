"""Measuring a table's ops on several identical devices at once (Ray workers), merged by key.

Each worker is a Ray actor holding a copy of the backend (rebuilt in its process), pinned to its
share of the cluster (``num_cpus``/``num_gpus`` each). Before any measurement every worker reports
its device fingerprint; a worker whose fingerprint differs from the table's is refused (its times
would belong to another device) with the differences named. The op list is handed out in small
chunks as workers free up; the results merge into the table by key, each entry noting the worker
that measured it, and the table is saved every few seconds, so a killed profile resumes. The
workers and their (equal) fingerprint are written into the table's notes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from .._ray import connect, require_ray, worker_id
from ..errors import LatencyTableError
from .backends import Backend
from .ops import OpKey
from .table import Entry, Fingerprint, LatencyTable

__all__ = ["measure_ops_on_ray"]

logger = logging.getLogger(__name__)


class _Measurer:
    """A Ray actor: one worker process measuring ops with its own copy of the backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def fingerprint(self) -> tuple[str, Fingerprint]:
        return worker_id(), self.backend.fingerprint()

    def measure(self, keys: Sequence[OpKey]) -> list[tuple[OpKey, Entry]]:
        who = worker_id()
        out = []
        for key in keys:
            entry = self.backend.measure_op(key)
            out.append((key, replace(entry, info={**entry.info, "worker": who})))
        return out


def _check_fingerprints(table: LatencyTable, found: list[tuple[str, Fingerprint]]) -> None:
    other = [(who, fp) for who, fp in found if fp != table.fingerprint]
    if other:
        detail = "; ".join(
            f"{who} measures on [{fp.describe()}] ({', '.join(table.fingerprint.differences(fp))})" for who, fp in other
        )
        raise LatencyTableError(
            f"the table {table.target!r} holds times of [{table.fingerprint.describe()}], but {detail}. Profile each "
            "device type into its own table (--out), with workers of that type only (num_gpus/num_cpus, or a cluster "
            "of identical machines)"
        )


def measure_ops_on_ray(
    table: LatencyTable,
    backend: Backend,
    keys: Sequence[OpKey],
    *,
    workers: int | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    address: str | None = None,
    init: dict[str, Any] | None = None,
    chunk: int = 8,
    save_every_s: float = 2.0,
    progress: bool = True,
) -> list[str]:
    """Measure ``keys`` into ``table`` on ``workers`` Ray actors (default: as many as the cluster
    fits with ``num_cpus``/``num_gpus`` each); returns the workers' ``host:pid``. The table is saved
    as results come in and at the end."""
    ray = require_ray(LatencyTableError, "profiling with executor='ray'")
    if chunk < 1 or (workers is not None and workers < 1) or num_cpus < 0 or num_gpus < 0 or num_cpus + num_gpus <= 0:
        raise LatencyTableError(
            f"need chunk >= 1, workers >= 1, num_cpus/num_gpus >= 0 with one > 0; got chunk={chunk}, "
            f"workers={workers}, num_cpus={num_cpus}, num_gpus={num_gpus}"
        )
    owns = connect(ray, address, init, error=LatencyTableError)
    try:
        if workers is None:
            total = ray.cluster_resources()
            fits = [
                total.get("CPU", 0) / num_cpus if num_cpus else float("inf"),
                total.get("GPU", 0) / num_gpus if num_gpus else float("inf"),
            ]
            workers = max(1, int(min(fits)))
        actor = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(_Measurer)
        actors = [actor.remote(backend) for _ in range(workers)]
        found = ray.get([a.fingerprint.remote() for a in actors])
        _check_fingerprints(table, found)
        names = [who for who, _ in found]
        note = f"ops measured by {len(names)} Ray workers of this device: {', '.join(names)}"
        table.notes = f"{table.notes}; {note}" if table.notes else note
        logger.info("%s", note)
        _run(
            ray, table, actors, [list(keys[i : i + chunk]) for i in range(0, len(keys), chunk)], save_every_s, progress
        )
        return names
    finally:
        table.save()
        if owns:
            ray.shutdown()


def _run(
    ray: Any, table: LatencyTable, actors: list[Any], chunks: list[list[OpKey]], save_every_s: float, progress: bool
) -> None:
    """Hand ``chunks`` to free actors until all are measured, merging each result into ``table``."""
    todo = list(reversed(chunks))
    running: dict[Any, Any] = {}
    for actor in actors:
        if todo:
            running[actor.measure.remote(todo.pop())] = actor
    bar = tqdm(
        total=sum(len(c) for c in chunks),
        desc=f"profile {table.target} on {len(actors)} workers",
        unit="op",
        disable=not progress,
        dynamic_ncols=True,
    )
    last_save = time.monotonic()
    try:
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            for key, entry in ray.get(done[0]):
                table.put(key, entry)
                bar.update()
            if todo:
                running[actor.measure.remote(todo.pop())] = actor
            if time.monotonic() - last_save >= save_every_s:
                table.save()
                last_save = time.monotonic()
    finally:
        bar.close()
