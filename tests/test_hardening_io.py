"""Locks, crash-safe writes and full or read-only disks (issue 16, items 1, 6 and 7), with real
processes, real kill -9 and real small file systems where this machine lets a test mount one."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from jdnas_sdk._io import atomic_dir, atomic_torch_save, atomic_write_json, check_writable, clean_stale_temporaries
from jdnas_sdk._lock import RunLock, lock_table, lock_workdir, workdir_run
from jdnas_sdk.errors import JdnasError, LockError, StorageError
from jdnas_sdk.latency import Entry, Fingerprint, LatencyTable, OpKey

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_line(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert text in line, (line, proc.stderr.read() if proc.stderr else "")


def _mount_tmpfs(where: Path, *, size: str, read_only: bool) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (skips where mounting is not allowed)."""
    where = tmp_path / "small"
    if not _mount_tmpfs(where, size="256k", read_only=False):
        pytest.skip("cannot mount a tmpfs here (not root / no CAP_SYS_ADMIN); ENOSPC is simulated in another test")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def read_only_fs(tmp_path: Path) -> Iterator[Path]:
    """A real read-only folder: a tmpfs mounted ``ro`` (chmod does not stop root, which runs these tests)."""
    where = tmp_path / "ro"
    if not _mount_tmpfs(where, size="64k", read_only=True):
        pytest.skip("cannot mount a read-only tmpfs here; EROFS is simulated in another test")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


# -- item 1: one run at a time -----------------------------------------------------------------
HOLD = """
import sys, time
from jdnas_sdk._lock import lock_workdir
lock = lock_workdir(sys.argv[1] if len(sys.argv) > 1 else {workdir!r}).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_run_on_a_workdir_refuses_naming_the_holder_then_takes_over_after_kill_9(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    holder = _python(HOLD.format(workdir=str(workdir)))
    try:
        _wait_for_line(holder, "held")
        second = _python(f"""
            from jdnas_sdk._lock import lock_workdir
            from jdnas_sdk.errors import LockError
            try:
                lock_workdir({str(workdir)!r}).acquire()
            except LockError as exc:
                print("refused:", exc)
            """)
        out, err = second.communicate(timeout=60)
        assert f"refused: workdir {workdir} is in use by pid {holder.pid}" in out, err
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        # the killed run's lock is taken over at once; what it recorded is named as stale
        with lock_workdir(workdir) as lock:
            assert lock.held
            assert json.loads((workdir / ".jdnas.lock").read_text())["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_wait_waits_for_the_holder_to_finish(tmp_path: Path) -> None:
    lock_file = tmp_path / "x.lock"
    holder = _python(f"""
        import time
        from jdnas_sdk._lock import RunLock
        with RunLock({str(lock_file)!r}):
            print("held", flush=True)
            time.sleep(2)
        """)
    _wait_for_line(holder, "held")
    with pytest.raises(LockError, match=f"in use by pid {holder.pid}"):
        RunLock(lock_file, wait=0.3).acquire()
    with RunLock(lock_file, wait=30) as second:
        assert second.held and holder.wait(timeout=30) == 0


def test_two_processes_measuring_into_one_table_lose_no_entry(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    fp = Fingerprint(device="cpu", backend="onnxruntime", backend_version="1")
    LatencyTable(target="t", source="measured", fingerprint=fp).save(path)
    writer = """
        import sys
        from jdnas_sdk.latency import Entry, LatencyTable, OpKey
        table = LatencyTable.load({path!r})   # each read the table once, as a profile does
        for c in range({first}, {first} + 15):
            table.put(OpKey.parse(f"relu(c={{c}},h=4,w=4)"), Entry(0.1))
            table.save()
        """
    procs = [_python(writer.format(path=str(path), first=first)) for first in (1, 100)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(LatencyTable.load(path)) == 30


def test_profile_refuses_a_table_another_run_is_writing(tmp_path: Path) -> None:
    from jdnas_sdk import standard_arch
    from jdnas_sdk.latency import OrtBackend, open_table, profile

    from .conftest import tiny_spec

    path = tmp_path / "t.json"
    holder = _python(f"""
        import time
        from jdnas_sdk._lock import lock_table
        lock_table({str(path)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
        """)
    try:
        _wait_for_line(holder, "held")
        table = open_table(path, "t", OrtBackend())
        with pytest.raises(LockError, match=f"latency table {path} is in use by pid {holder.pid}"):
            profile(
                table, OrtBackend(), tiny_spec(), base=standard_arch("resnet18"), input_sizes=[(64, 64)], progress=False
            )
        assert not path.exists()  # refused before measuring anything
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_failed_start_leaves_no_empty_workdir(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with workdir_run(tmp_path / "new"):
            raise ValueError("bad request")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(ValueError):
        with workdir_run(tmp_path / "old"):
            raise ValueError("bad request")
    assert (tmp_path / "old").is_dir()  # a folder the user had is never removed


# -- item 6: full and read-only disks ------------------------------------------------------------
def test_a_read_only_folder_is_found_before_work_and_on_write(read_only_fs: Path) -> None:
    with pytest.raises(StorageError, match=f"cannot write {read_only_fs}: the file system is read-only"):
        check_writable(read_only_fs)
    with pytest.raises(StorageError, match="read-only") as info:
        atomic_write_json(read_only_fs / "r.json", {"a": 1})
    assert str(read_only_fs / "r.json") in str(info.value) and info.value.errno == errno.EROFS


def test_a_full_disk_is_one_line_and_leaves_the_old_file_and_no_temporary(small_fs: Path) -> None:
    target = small_fs / "ckpt.pt"
    atomic_torch_save(target, {"w": torch.zeros(4)})
    before = target.read_bytes()
    with pytest.raises(StorageError, match=f"cannot write {target}: the disk is full"):
        atomic_torch_save(target, {"w": torch.zeros(200_000)})  # 800 KB into 256 KiB
    with pytest.raises(StorageError, match="the disk is full"):
        atomic_write_json(small_fs / "big.json", list(range(100_000)))
    assert target.read_bytes() == before
    assert sorted(p.name for p in small_fs.iterdir()) == ["ckpt.pt"]
    with pytest.raises(StorageError, match="nearly full"):
        check_writable(small_fs, need_bytes=10 * 2**20, what="checkpoint")


def test_enospc_and_erofs_from_the_os_are_translated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same translation where no file system can be mounted: the OS calls raise the errno."""
    real_replace = os.replace

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match="the disk is full"):
        atomic_write_json(tmp_path / "a.json", {})
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    with pytest.raises(StorageError, match="read-only"):
        atomic_write_json(tmp_path / "a.json", {})
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_a_folder_is_expected_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(JdnasError, match="is a file, not a folder"):
        check_writable(tmp_path / "f")


# -- item 7: leftovers and atomic writes ---------------------------------------------------------
def test_a_temporary_left_by_kill_9_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    writer = _python(f"""
        import time
        from jdnas_sdk._io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"x" * 1_000_000)
            print("writing", flush=True)
            time.sleep(60)
        """)
    _wait_for_line(writer, "writing")
    live = list(tmp_path.glob(".ckpt.pt.*.tmp"))
    assert len(live) == 1
    assert clean_stale_temporaries(target) == []  # a live writer's temporary is kept
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    old_style = tmp_path / ".ckpt.pt.abcd1234.tmp"  # an older version's temporary, without a pid
    old_style.write_bytes(b"y")
    os.utime(old_style, (time.time() - 3600, time.time() - 3600))
    atomic_torch_save(target, {"w": torch.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "data"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("half")
            raise RuntimeError("killed half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"] and (target / "a").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_table_lock_nests_within_one_process(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    fp = Fingerprint(device="cpu", backend="onnxruntime", backend_version="1")
    table = LatencyTable(target="t", source="measured", fingerprint=fp)
    with lock_table(path, wait=False):
        table.put(OpKey.parse("relu(c=1,h=4,w=4)"), Entry(0.1))
        table.save(path)  # the save's own lock nests inside the run's
    assert len(LatencyTable.load(path)) == 1
    with lock_workdir(tmp_path / "w") as outer, lock_workdir(tmp_path / "w") as inner:
        assert outer.held and not inner.held


def test_a_released_lock_leaves_no_file_and_a_waiter_relocks_the_path(tmp_path: Path) -> None:
    """The holder removes its file on release; a process that waited on the removed file notices
    and locks the new one, so two runs never hold 'the' lock at once."""
    lock_file = tmp_path / "x.lock"
    holder = _python(f"""
        import time
        from jdnas_sdk._lock import RunLock
        with RunLock({str(lock_file)!r}):
            print("held", flush=True)
            time.sleep(1.5)
        """)
    _wait_for_line(holder, "held")
    waiter = _python(f"""
        import json, os, time
        from jdnas_sdk._lock import RunLock
        with RunLock({str(lock_file)!r}, wait=60):
            print("got", json.loads(open({str(lock_file)!r}).read())["pid"] == os.getpid(), flush=True)
            time.sleep(1.0)
        """)
    out, err = waiter.communicate(timeout=120)
    assert holder.wait(timeout=30) == 0 and "got True" in out, err
    assert not lock_file.exists()


def test_a_workdir_that_is_a_file_or_under_one_is_refused_naming_it(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for workdir in (afile, afile / "run"):  # the folder itself, or a folder inside a file
        with pytest.raises(StorageError, match=r"afile.*part of its path is a file, not a folder .*; choose a folder"):
            with workdir_run(workdir):
                pass
    assert afile.read_text() == "mine"


def test_an_output_path_that_is_a_folder_is_one_storage_error_and_the_folder_is_kept(tmp_path: Path) -> None:
    from jdnas_sdk._io import atomic_write_json
    from jdnas_sdk.errors import StorageError

    folder = tmp_path / "out.json"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(StorageError, match="out.json: it is a folder; give a file path"):
        atomic_write_json(folder, {"a": 1})
    assert (folder / "inside").is_dir() and [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary


def test_a_link_or_a_fifo_at_a_lock_path_is_refused_and_what_it_points_to_is_kept(tmp_path: Path) -> None:
    """A workdir received from someone else with ``.jdnas.lock -> ~/somefile``: compress truncated the
    target and wrote its holder record there."""
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    work = tmp_path / "w"
    work.mkdir()
    (work / ".jdnas.lock").symlink_to(victim)
    with pytest.raises(LockError, match="is a link or not a plain file"), workdir_run(work):
        pass
    assert victim.read_text() == "precious" and (work / ".jdnas.lock").is_symlink()
    out = tmp_path / "t.json"
    os.mkfifo(tmp_path / "t.json.lock")
    with pytest.raises(LockError, match="t.json.lock, the lock of latency table"), lock_table(out, wait=False):
        pass
