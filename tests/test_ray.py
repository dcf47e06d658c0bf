"""Search and profiling on Ray: the same archive as in-process with 1 or 2 workers, a worker killed
mid-candidate is retried and recorded once, a killed driver resumes, workers that cannot see the
data are refused before any work; a table's ops measured by two workers and merged by key, workers
of another device refused.

One local Ray instance (2 CPUs) serves the whole module; tiny detectors, a few steps per candidate.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from jdnas_sdk import DetectorSpec, LatencyTableError, SearchError, _ray, build, load_detector, save_detector
from jdnas_sdk._ray import check_address
from jdnas_sdk.arch import standard_arch
from jdnas_sdk.data import CocoDetection
from jdnas_sdk.latency import (
    DeviceModel,
    Estimator,
    LatencyTable,
    OrtBackend,
    load_table,
    open_table,
    profile,
    reachable_ops,
)
from jdnas_sdk.latency.backends import RooflineBackend
from jdnas_sdk.latency.distributed import measure_ops_on_ray
from jdnas_sdk.latency.roofline import GPU_MODELS
from jdnas_sdk.latency.table import Fingerprint
from jdnas_sdk.search import LocalExecutor, RayExecutor, SearchConfig, joint_search, pipeline_search
from jdnas_sdk.search.ray_executor import shared_nodes
from jdnas_sdk.space import SearchSpace
from jdnas_sdk.teachers import TeacherPool

from .conftest import tiny_spec
from .test_latency_profile import FAST as QUICK
from .test_latency_profile import SIZE
from .test_latency_profile import SPACE as SMALL_SPACE
from .test_search import BASE, FAST, SPACE

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
ROUNDS = SearchConfig(candidates=3, finetune_steps=2, parallel=2, train=FAST.train)  # rounds [1, 2] and [3]


@pytest.fixture(scope="module")
def slow_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The modelled slow device of tests/test_search.py (the tiny backbone dominates)."""
    slow = DeviceModel(
        "a slow test device",
        "fp32",
        peak_tflops=0.002,
        bandwidth_gbs=2.0,
        launch_us=0.0,
        postprocess_ms=0.5,
        fixed_kernels=0,
    )
    path = tmp_path_factory.mktemp("tables") / "slow.json"
    open_table(path, "slow", RooflineBackend(slow)).save()
    return path


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Any:
    """One local Ray instance for the module; workers import this checkout and use one thread."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}},
    )
    yield ray
    ray.shutdown()


def _search(
    tmp: Path,
    table: Path,
    train: Any,
    val: CocoDetection,
    executor: Any,
    *,
    pool: bool = True,
    config: SearchConfig = ROUNDS,
    ran: dict[int, Any] | None = None,
) -> list[dict[str, Any]]:
    """The archive's rows without who and when, each with the student's weights; ``ran`` gets the candidates."""
    ran = {} if ran is None else ran
    torch.manual_seed(0)
    base = build(tiny_spec(), BASE)
    estimator = Estimator(load_table(str(table)), tiny_spec(), (96, 96))
    archive = joint_search(
        base,
        estimator=estimator,
        target_ms=0.85 * estimator.total_ms(BASE),
        train_data=train,
        val_data=val,
        workdir=tmp,
        space=SPACE,
        config=config,
        executor=executor,
        pool=TeacherPool.from_base(base, widths=(0.75, 1.0), depth_delta=1) if pool else None,
        base_teacher=not pool,
        progress=False,
        log=lambda _: None,
    )
    rows = []
    for c in archive.candidates:
        row = {k: v for k, v in c.to_json().items() if k not in ("wall_s", "worker", "started", "ended")}
        row["weights"] = load_detector(tmp / c.file).state_dict()
        rows.append(row)
    ran.update({c.index: c for c in archive.candidates})
    return rows


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        wx, wy = x.pop("weights"), y.pop("weights")
        assert x == y
        assert wx.keys() == wy.keys() and all(torch.equal(wx[k], wy[k]) for k in wx), f"weights of {x['index']} differ"


def test_the_archive_is_the_same_in_process_and_on_ray_with_1_or_2_workers(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path
) -> None:
    local = _search(tmp_path / "local", slow_table, train_set, val_set, LocalExecutor(threads=1))
    ran: dict[int, Any] = {}
    two = _search(tmp_path / "two", slow_table, train_set, val_set, RayExecutor(num_cpus=1, threads=1), ran=ran)
    one = _search(tmp_path / "one", slow_table, train_set, val_set, RayExecutor(num_cpus=2, threads=1))
    assert [c["index"] for c in local] == [0, 1, 2, 3]
    assert all(c["parent"] == 0 for c in local[1:3])  # round 1 sees only the base
    assert local[3]["parent"] < 3  # round 2 sees the archive as round 1 left it
    assert all(c["error"] is None and c["teacher"] for c in local)
    assert ran[1].worker != ran[2].worker  # two workers trained round 1
    _same([dict(c) for c in local], two)
    _same(local, one)
    assert not list((tmp_path / "two" / "teachers").glob("*.pt"))  # removed once the search ended


def test_each_candidate_records_the_worker_that_trained_it(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path
) -> None:
    estimator = Estimator(load_table(str(slow_table)), tiny_spec(), (96, 96))
    torch.manual_seed(0)
    archive = pipeline_search(
        build(tiny_spec(), BASE),
        estimator=estimator,
        target_ms=0.85 * estimator.total_ms(BASE),
        train_data=train_set,
        val_data=val_set,
        workdir=tmp_path,
        space=SPACE,
        teacher=None,
        config=SearchConfig(candidates=3, finetune_steps=2, parallel=2, train=FAST.train),
        executor=RayExecutor(num_cpus=1),
        progress=False,
        log=lambda _: None,
    )
    assert [c.actions[0] for c in archive.candidates] == ["base", "prune+finetune", "distil", "search"]
    trained = archive.candidates[1:]
    assert all(c.worker and c.worker.split(":")[1] != str(os.getpid()) for c in trained)  # Ray workers, not here
    assert all(c.started <= c.ended and c.wall_s == pytest.approx(c.ended - c.started) for c in trained)
    assert trained[0].ended <= trained[1].started <= trained[1].ended <= trained[2].started  # stage after stage


class KillFirstWorker(torch.utils.data.Dataset):
    """A dataset whose first read inside a Ray worker kills that worker (kill -9 of its own
    process), once: ``marker`` records the pid it killed."""

    def __init__(self, data: CocoDetection, marker: Path) -> None:
        self.data, self.marker, self.driver = data, marker, os.getpid()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        if os.getpid() != self.driver and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.data[index]


def test_a_worker_killed_mid_candidate_is_retried_and_recorded_once(
    train_set: CocoDetection, val_set: CocoDetection, tmp_path: Path, slow_table: Path
) -> None:
    config = SearchConfig(candidates=2, finetune_steps=2, parallel=2, train=FAST.train)
    marker = tmp_path / "killed"
    drilled = _search(
        tmp_path / "kill",
        slow_table,
        KillFirstWorker(train_set, marker),
        val_set,
        RayExecutor(num_cpus=1, max_retries=2),
        pool=False,
        config=config,
    )
    assert marker.is_file(), "no worker was killed"
    archive = (tmp_path / "kill" / "archive.json").read_text()
    assert f':{marker.read_text()}"' not in archive  # the candidate was recorded by the retry, not the dead worker
    clean = _search(
        tmp_path / "clean", slow_table, train_set, val_set, LocalExecutor(threads=1), pool=False, config=config
    )
    _same(clean, drilled)  # each candidate once, as if nothing happened


def test_workers_that_cannot_see_the_data_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match=r"cannot all use the workdir .*no /nowhere/images"):
        shared_nodes(ray, tmp_path, ["/nowhere/images"], num_cpus=1, num_gpus=0)
    with pytest.raises(SearchError, match="no node of the Ray cluster offers 1 CPUs and 1 GPUs"):
        shared_nodes(ray, tmp_path, [], num_cpus=1, num_gpus=1)
    assert not list(tmp_path.iterdir())  # the marker is removed


def test_an_address_no_ray_cluster_answers_at_is_refused_in_seconds_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ray.init(address=...)`` kept retrying a dead address for minutes with no error, and
    ``jdnas compress`` got there only after the pool and the free moves."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once this socket closes
    started = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(SearchError, match=rf"no Ray cluster answers at address '{address}'.*ray start --head"):
            check_address(address, SearchError)
    with pytest.raises(LatencyTableError, match="'nohost' is not HOST:PORT"):
        check_address("nohost", LatencyTableError)
    with pytest.raises(SearchError, match="is not HOST:PORT"):
        check_address("127.0.0.1:\u00b2", SearchError)  # a digit to str.isdigit, not to int()
    with monkeypatch.context() as env:  # where ray.init reads the address: no --address, or auto
        env.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")  # it crashed on auto (ValueError), hung on none
        for address in (None, "auto"):
            with pytest.raises(SearchError, match=rf"'ray://127.0.0.1:{port}' \(from RAY_ADDRESS\)"):
                check_address(address, SearchError)
    check_address(None, SearchError)  # a local Ray for the run
    work = tmp_path / "work"
    for verb in (["compress", "--workdir", str(work), "--data", "nowhere"], ["profile", "--target", "t"]):
        done = subprocess.run(
            [sys.executable, "-m", "jdnas_sdk.cli", *verb, "--model", "nowhere.pt"]
            + ["--executor", "ray", "--address", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 2 and f"no Ray cluster answers at address '127.0.0.1:{port}'" in done.stderr
        assert "nowhere.pt" not in done.stderr  # refused before the model was read
    assert time.monotonic() - started < 60
    assert not work.exists()


def test_an_address_that_answers_but_is_not_ray_is_refused_naming_what_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a listener was checked: a port that accepted and stayed silent, or a web server, left
    ``ray.init`` retrying for minutes. What answers must now greet as gRPC does (Ray's GCS and Ray
    Client servers): this module's running Ray does."""
    monkeypatch.setattr(_ray, "_ANSWER_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(SearchError, match=r"accepts connections at .* not a Ray cluster: it did not answer"):
            check_address(f"127.0.0.1:{silent.getsockname()[1]}", SearchError)
    with socket.socket() as web:  # an HTTP/1 server: it answers anything with a status line
        web.bind(("127.0.0.1", 0))
        web.listen()

        def answer() -> None:
            peer, _ = web.accept()
            with peer:
                peer.recv(1024)
                peer.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        with pytest.raises(LatencyTableError, match=r"not a Ray cluster: it answered an HTTP/2 greeting with b'HTTP/1"):
            check_address(f"ray://127.0.0.1:{web.getsockname()[1]}", LatencyTableError)
        server.join(5)
        monkeypatch.setenv("RAY_USE_TLS", "1")  # TLS: only that something listens is checked
        check_address(f"127.0.0.1:{web.getsockname()[1]}", SearchError)
        monkeypatch.delenv("RAY_USE_TLS")
        check_address(f"127.0.0.1:{web.getsockname()[1]}", SearchError, tls=True)
    check_address(ray.get_runtime_context().gcs_address, SearchError)  # a Ray GCS greets as gRPC


def test_without_ray_the_ray_executor_fails_at_once_saying_how_to_install_it(tmp_path: Path) -> None:
    """Python (make_executor) and ``jdnas compress --executor ray`` in a process where Ray cannot be imported."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from jdnas_sdk.search import make_executor\n"
        "try:\n    make_executor('ray')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
        "from jdnas_sdk.cli import main\n"
        "sys.exit(main(['compress', '--model', 'nowhere.pt', '--data', 'nowhere', '--workdir', sys.argv[1],"
        " '--executor', 'ray', '--parallel', '2']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.stdout.startswith("SearchError") and 'pip install -e ".[ray]"' in done.stdout
    assert done.returncode != 0 and 'pip install -e ".[ray]"' in done.stderr  # before the model is even read
    assert not (tmp_path / "work").exists()


def test_kill_9_of_the_driver_then_the_same_command_resumes_on_a_new_ray(
    synth_root: Path, tmp_path: Path, slow_table: Path
) -> None:
    """``jdnas compress --executor ray --parallel 2`` (with the local Ray it started) killed by SIGKILL
    mid-search: the same command again keeps every candidate recorded before (files not rewritten),
    redoes only the ones in flight, and finishes."""
    torch.manual_seed(0)
    base_file, work = tmp_path / "base.pt", tmp_path / "work"
    save_detector(build(tiny_spec(), BASE), base_file)
    args = [
        sys.executable,
        "-m",
        "jdnas_sdk.cli",
        "compress",
        "--model",
        str(base_file),
        "--data",
        str(synth_root),
        "--target",
        str(slow_table),
        "--latency",
        "0.85",
        "--budget",
        "3",
        "--finetune-steps",
        "4",
        "--teacher",
        "base",
        "--val-images",
        "3",
        "--no-free-moves",  # the resume of trained candidates is what this kill tests
        "--final-steps",
        "0",
        "--workdir",
        str(work),
        "--executor",
        "ray",
        "--parallel",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    archive = work / "search" / "archive.json"

    def recorded() -> list[dict]:
        try:
            return json.loads(archive.read_text())["candidates"]
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while len(recorded()) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = recorded()
    assert 2 <= len(before) < 4, "the search had not started, or had finished, when it was killed"
    stamps = {c["file"]: (work / "search" / c["file"]).stat().st_mtime_ns for c in before}
    second = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"resuming: {len(before) - 1} candidates already on disk" in second.stderr  # the log
    after = recorded()
    assert [c["index"] for c in after] == [0, 1, 2, 3] and after[: len(before)] == before
    assert all((work / "search" / f).stat().st_mtime_ns == t for f, t in stamps.items())  # none redone
    assert all(c["error"] is None for c in after) and (work / "student.pt").is_file()
    assert all(c["worker"] for c in after) and (work / "timeline.png").is_file()  # the report's timeline


def test_ops_measured_by_two_workers_merge_by_key_into_one_table(tmp_path: Path) -> None:
    backend = OrtBackend(timing=QUICK, flush_mib=4)
    table = open_table(tmp_path / "t.json", "tiny", backend)
    keys = reachable_ops(tiny_spec(), SMALL_SPACE, SIZE)[:4]
    names = measure_ops_on_ray(table, backend, keys, workers=2, chunk=1, progress=False)
    assert set(table.entries) == set(keys)
    assert all(e.source == "measured" and e.median_ms > 0 and e.samples >= 3 for e in table.entries.values())
    workers = {e.info["worker"] for e in table.entries.values()}
    assert workers == set(names) and len(workers) == 2 and str(os.getpid()) not in {w.split(":")[1] for w in workers}
    assert "ops measured by 2 Ray workers of this device" in table.notes and all(w in table.notes for w in workers)
    reloaded = LatencyTable.load(tmp_path / "t.json")
    assert reloaded.entries == table.entries and reloaded.fingerprint == backend.fingerprint()


def test_workers_of_another_device_are_refused_before_measuring(tmp_path: Path) -> None:
    here = OrtBackend(timing=QUICK).fingerprint()
    other = Fingerprint(**{**here.__dict__, "device": "Another CPU 9000"})
    table = LatencyTable(target="other", source="measured", fingerprint=other, path=tmp_path / "other.json")
    keys = reachable_ops(tiny_spec(), SMALL_SPACE, SIZE)[:4]
    with pytest.raises(LatencyTableError, match=r"holds times of \[Another CPU 9000.*device: 'Another CPU 9000' != "):
        measure_ops_on_ray(table, OrtBackend(timing=QUICK, flush_mib=4), keys, workers=1, progress=False)
    assert len(table) == 0


def test_jdnas_profile_with_executor_ray_measures_on_a_running_cluster(tmp_path: Path) -> None:
    """``jdnas profile --executor ray --address ADDR``: a second process joins this module's Ray."""
    out = tmp_path / "mine.json"
    args = [
        sys.executable,
        "-m",
        "jdnas_sdk.cli",
        "profile",
        "--target",
        "v100-mine",
        "--backend",
        "roofline",
        "--device",
        "v100-trt",
        "--family",
        "fasterrcnn",
        "--backbone",
        "resnet18",
        "--num-classes",
        "9",
        "--fpn-channels",
        "16",
        "--representation-size",
        "32",
        "--input-size",
        "96",
        "--width-ratios",
        "0.5,1",
        "--backbone-only",
        "--out",
        str(out),
        "--executor",
        "ray",
        "--address",
        ray.get_runtime_context().gcs_address,
        "--workers",
        "2",
    ]
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = LatencyTable.load(out)
    ops = [e for k, e in table.entries.items() if k.kind != "fixed"]
    assert len(ops) > 20 and len({e.info["worker"] for e in ops}) == 2
    assert "ops measured by 2 Ray workers" in table.notes and table.modelled
    spec = DetectorSpec(
        family="fasterrcnn",
        backbone="resnet18",
        num_classes=9,
        min_size=96,
        max_size=96,
        fpn_channels=16,
        representation_size=32,
        anchor_sizes=(16, 32, 64, 128, 256),
    )
    backend = RooflineBackend(GPU_MODELS["v100-trt"])  # modelled: the same numbers in any process
    here = profile(
        open_table(tmp_path / "here.json", "v100-mine", backend),
        backend,
        spec,
        base=standard_arch("resnet18"),
        input_sizes=[(96, 96)],
        space=SearchSpace(standard_arch("resnet18"), width_ratios=(0.5, 1.0)),
        progress=False,
    )
    assert here.entries == table.entries  # split between two workers, merged by key: the same table
