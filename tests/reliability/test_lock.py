"""One job per folder (engine/lock.py): a second job into a folder a live job holds is refused
with one line naming the holder; a lock left by a job that died is replaced."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_ssl.engine import lock as lock_mod
from mnist_ssl.engine.lock import LOCK_NAME, FolderBusy, FolderLock

from .helpers import JOB, SRC, TINY, one_line_error, run_cli

# Takes the lock of argv[1], says so in argv[1]/held.<pid> (or exits 3 when refused), then holds
# it until its stdin is closed.
HOLDER = """
import os, sys
from pathlib import Path
from mnist_ssl.engine.lock import FolderBusy, FolderLock
try:
    lock = FolderLock(sys.argv[1], "mnist-ssl reproduce --out X").__enter__()
except FolderBusy:
    sys.exit(3)
Path(sys.argv[1], f"held.{os.getpid()}").write_text("")
sys.stdin.read()
lock.__exit__(None, None, None)
"""


def _holder(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(SRC)))


def _wait(condition, what: str, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, f"{what} did not happen in {timeout:.0f} s"
        time.sleep(0.01)


def _holds(proc: subprocess.Popen, folder: Path) -> bool:
    if (folder / f"held.{proc.pid}").exists():
        return True
    assert proc.poll() is None, f"the holder ended ({proc.returncode}) before it took the lock"
    return False


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_lock_holds_pid_and_host_and_is_freed_on_exit(tmp_path):
    with FolderLock(tmp_path, "mnist-ssl reproduce --out X"):
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["command"] == "mnist-ssl reproduce --out X"
        with FolderLock(tmp_path):  # the same process nests (a command calling another)
            pass
        assert (tmp_path / LOCK_NAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_second_job_into_a_held_folder_is_refused_naming_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        _wait(lambda: _holds(proc, tmp_path), "the holder taking the lock")
        with pytest.raises(FolderBusy) as e:
            FolderLock(tmp_path).acquire()
        msg = str(e.value)
        assert "\n" not in msg
        for needle in (str(tmp_path), f"process {proc.pid}", f"host {socket.gethostname()}",
                       "mnist-ssl reproduce --out X", LOCK_NAME):
            assert needle in msg, (needle, msg)
    finally:
        proc.communicate("")  # the holder ends normally: its lock is freed
    assert proc.returncode == 0
    assert not (tmp_path / LOCK_NAME).exists()
    with FolderLock(tmp_path):
        pass


def test_the_lock_of_a_killed_job_is_replaced(tmp_path):
    proc = _holder(tmp_path)
    _wait(lambda: _holds(proc, tmp_path), "the holder taking the lock")
    proc.kill()
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # SIGKILL left it behind
    with FolderLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("content", ["garbage", "", None])
def test_a_lock_file_nobody_holds_is_replaced(tmp_path, content):
    text = content if content is not None else json.dumps({"pid": _dead_pid(), "host": socket.gethostname()})
    (tmp_path / LOCK_NAME).write_text(text)
    with FolderLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_without_flock_the_process_id_decides(tmp_path, monkeypatch):
    """On a file system without flock, a lock whose process runs on this host is held, one whose
    process is gone is replaced."""
    real_flock = lock_mod.fcntl.flock

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    proc = _holder(tmp_path)
    try:
        _wait(lambda: _holds(proc, tmp_path), "the holder taking the lock")
        monkeypatch.setattr(lock_mod.fcntl, "flock", no_flock)
        with pytest.raises(FolderBusy, match=f"process {proc.pid}"):
            FolderLock(tmp_path).acquire()
        monkeypatch.setattr(lock_mod.fcntl, "flock", real_flock)
    finally:
        proc.kill()
        proc.wait()
    monkeypatch.setattr(lock_mod.fcntl, "flock", no_flock)
    with FolderLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_jobs_racing_for_a_stale_lock_leave_exactly_one_holder(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    procs = [_holder(tmp_path) for _ in range(4)]
    try:
        # Each either holds the lock (held.<pid>) or was refused (exit 3).
        _wait(lambda: all(p.poll() is not None or (tmp_path / f"held.{p.pid}").exists() for p in procs),
              "every racer taking the lock or being refused")
        winners = [p for p in procs if (tmp_path / f"held.{p.pid}").exists()]
        assert len(winners) == 1, [p.returncode for p in procs]
        assert all(p.returncode == 3 for p in procs if p not in winners)
    finally:
        for p in procs:
            if p.poll() is None:
                p.communicate("")
    assert not (tmp_path / LOCK_NAME).exists()


# ----- through the commands ----------------------------------------------------------
LABEL_EFFICIENCY = ["--methods", "supervised", "--labels", "2", "--seeds", "1", "--no-baselines",
                    "--finetune-steps", "2", "--finetune-min-epochs", "1", *TINY]


@pytest.mark.parametrize("command", ["reproduce --overwrite", "reproduce --resume",
                                     "label-efficiency --overwrite", "label-efficiency --resume"])
def test_a_second_job_into_a_held_folder_is_one_line_and_changes_nothing(tmp_path, capsys, command):
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        _wait(lambda: _holds(proc, out), "the holder taking the lock")
        before = sorted(p.name for p in out.iterdir())
        name, flag = command.split()
        args = JOB if name == "reproduce" else LABEL_EFFICIENCY
        code, _, err = run_cli([name, "--out", out, *args, flag], capsys)
        one_line_error(code, err, f"{out} is in use by process {proc.pid} on host {socket.gethostname()}",
                       "one job per folder")
        assert sorted(p.name for p in out.iterdir()) == before
    finally:
        proc.communicate("")
