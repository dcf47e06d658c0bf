"""The Ray executor: each candidate a Ray task, on a local Ray instance or an existing cluster.

Jobs travel as small descriptions (paths, actions, seeds); the parent, teacher and student are
files in the search's workdir, which every worker must see at the same path (shared storage such
as NFS). :meth:`RayExecutor.start` checks that before any work: the driver writes a marker file,
and a probe task on every node that can take a candidate reads it, writes beside it and looks for
the data. The datasets are put in Ray's object store once per search (their images, when they
are a folder, are read from the same shared storage). A worker killed mid-candidate (the process,
or its node) is retried by Ray up to ``max_retries`` times; the retry resumes from the checkpoint
the first attempt left beside the student file.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .._ray import check_address, connect, require_ray
from ..errors import JdnasError, SearchError
from .executor import CandidateJob, CandidateOutcome, run_candidate

__all__ = ["RayExecutor", "shared_nodes"]

logger = logging.getLogger(__name__)


def _remote_candidate(job: CandidateJob, train_data: Any, val_data: Any, threads: int) -> CandidateOutcome:
    return run_candidate(job, train_data, val_data, threads=threads, progress=False)


def _probe(marker: str, token: str, paths: list[str]) -> tuple[str, list[str]]:
    """On one node: (host, problems) with the shared ``marker`` file and the data ``paths``."""
    host, problems = socket.gethostname(), []
    try:
        if Path(marker).read_text(encoding="utf-8") != token:
            problems.append(f"{marker} holds another run's marker (another machine's disk at the same path?)")
    except OSError as exc:
        problems.append(f"cannot read {marker} ({exc.strerror or exc})")
    scratch = Path(marker).with_name(f".jdnas-probe-{host}-{os.getpid()}")
    try:
        scratch.write_text("x", encoding="utf-8")
        scratch.unlink()
    except OSError as exc:
        problems.append(f"cannot write in {scratch.parent} ({exc.strerror or exc})")
    problems += [f"no {p}" for p in paths if not os.path.exists(p)]
    return host, problems


def _data_paths(*datasets: Any) -> list[str]:
    """Files a dataset reads lazily (a COCO folder's images and annotations); none for data in memory."""
    out = []
    for data in datasets:
        for name in ("images_dir", "annotation_file"):
            value = getattr(data, name, None)
            if value is not None:
                out.append(str(Path(value).resolve()))
    return out


def shared_nodes(
    ray: ModuleType, workdir: Path, paths: list[str], *, num_cpus: float, num_gpus: float, timeout_s: float = 120.0
) -> list[str]:
    """Hosts of the alive nodes that can take a ``num_cpus``/``num_gpus`` task, after checking that
    each sees ``workdir`` (a marker written here, read there) and ``paths``; SearchError otherwise."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [
        n
        for n in ray.nodes()
        if n.get("Alive") and n["Resources"].get("CPU", 0) >= num_cpus and n["Resources"].get("GPU", 0) >= num_gpus
    ]
    if not nodes:
        raise SearchError(
            f"no node of the Ray cluster offers {num_cpus} CPUs and {num_gpus} GPUs for a candidate; "
            "lower num_cpus/num_gpus or add nodes (ray start --address ...)"
        )
    marker, token = workdir / ".jdnas-shared-check", uuid.uuid4().hex
    marker.write_text(token, encoding="utf-8")
    probe = ray.remote(_probe)
    refs = {
        probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            str(marker.resolve()), token, paths
        ): n
        for n in nodes
    }
    problems = []
    try:
        for ref, node in refs.items():
            where = f"node {node.get('NodeManagerHostname', '?')} ({node['NodeManagerAddress']})"
            try:
                host, found = ray.get(ref, timeout=timeout_s)
            except JdnasError:
                raise
            except Exception as exc:  # noqa: BLE001 - a node that cannot even run the probe is reported, not raised raw
                problems.append(
                    f"{where}: the probe failed ({str(exc).strip().splitlines()[-1]}); is jdnas_sdk "
                    "installed there (same version, same Python)?"
                )
                continue
            problems += [f"{where}: {p}" for p in found]
    finally:
        marker.unlink(missing_ok=True)
    if problems:
        raise SearchError(
            f"the Ray workers cannot all use the workdir {workdir.resolve()} and the data: "
            + "; ".join(problems)
            + ". Put the workdir and the dataset on storage every node mounts at the same path (NFS, a shared disk), "
            "and install jdnas_sdk on every node"
        )
    return [n.get("NodeManagerHostname", n["NodeManagerAddress"]) for n in nodes]


class RayExecutor:
    """Each candidate a Ray task of ``num_cpus``/``num_gpus``, retried ``max_retries`` times when
    its worker dies, training with ``threads`` intra-op threads.

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None
    connects to an already initialised Ray or starts a local one (``init`` holds more
    ``ray.init`` keywords). A Ray started here is shut down by :meth:`close`. Unless Ray is already
    initialised, an address where no Ray answers (nothing listens, or what does is not gRPC) is a
    SearchError here, at construction (:func:`~jdnas_sdk._ray.check_address`): ``ray.init`` would
    retry it for minutes."""

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_retries: int = 3,
        threads: int = 1,
        init: dict[str, Any] | None = None,
    ) -> None:
        self._ray = require_ray(SearchError)  # at once: not after the base was evaluated
        bad = {
            k: v for k, v in {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries}.items() if v < 0
        }
        if bad or threads < 1 or num_cpus + num_gpus <= 0:
            raise SearchError(
                f"RayExecutor needs num_cpus, num_gpus, max_retries >= 0 (one of the first two > 0) and "
                f"threads >= 1, got num_cpus={num_cpus}, num_gpus={num_gpus}, max_retries={max_retries}, "
                f"threads={threads}"
            )
        if not self._ray.is_initialized():  # now: ray.init waits minutes on a dead address, after the first work
            check_address(address, SearchError, tls="_credentials" in (init or {}))
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.max_retries, self.threads, self.init = max_retries, threads, dict(init or {})
        self.capacity = 1
        self.hosts: list[str] = []
        self._owns = False
        self._data: tuple[Any, Any] | None = None
        self._task: Any = None

    def start(self, workdir: Path, train_data: Any, val_data: Any) -> None:
        ray = self._ray
        self._owns = connect(ray, self.address, self.init, error=SearchError) or self._owns
        self.hosts = shared_nodes(
            ray, Path(workdir), _data_paths(train_data, val_data), num_cpus=self.num_cpus, num_gpus=self.num_gpus
        )
        total = ray.cluster_resources()
        per = [
            total.get("CPU", 0) / self.num_cpus if self.num_cpus else float("inf"),
            total.get("GPU", 0) / self.num_gpus if self.num_gpus else float("inf"),
        ]
        self.capacity = max(1, int(min(per)))
        logger.info(
            "Ray: %d node(s) (%s), up to %d candidates at once", len(self.hosts), ", ".join(self.hosts), self.capacity
        )
        self._data = (ray.put(train_data), ray.put(val_data))
        self._task = ray.remote(_remote_candidate).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries, retry_exceptions=False
        )

    def run(self, jobs: Sequence[CandidateJob]) -> Iterator[CandidateOutcome]:
        if self._data is None:
            raise SearchError("RayExecutor.run before start()")
        ray = self._ray
        refs = {self._task.remote(job, *self._data, self.threads): job for job in jobs}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        yield ray.get(ref)
                    except JdnasError:
                        raise
                    except ray.exceptions.RayError as exc:
                        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                        raise SearchError(
                            f"candidate {refs[ref].index} could not be trained on the Ray cluster "
                            f"(after {self.max_retries} retries): {last}"
                        ) from exc
        finally:
            for ref in pending:  # the driver stops early (an error, a closed generator): drop the rest
                ray.cancel(ref, force=True)

    def close(self) -> None:
        self._data = None
        if self._owns:
            self._ray.shutdown()
            self._owns = False
