"""One job per folder: a lock file in the job's output folder, held while the job runs.

``OUT/.mnist-ssl.lock`` is created atomically (exactly one process can create
it: a complete private file made with ``O_CREAT | O_EXCL`` is hard-linked to the
lock's name, which fails when the name exists), holds the process id, host, command and start time as JSON, and
is removed when the job ends. The holder also keeps an ``flock`` on it for as
long as it lives: the kernel drops that lock when the process is gone, however
it ended (SIGKILL, out of memory, a lost node), so a lock file left behind by a
dead job is recognised as stale, on this host or another one sharing the
folder, and replaced. Where the file system has no ``flock``, a lock file whose
process id no longer runs on this host counts as stale.

A second job into a held folder is refused with :class:`FolderBusy`, one line
naming the holder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from mnist_ssl.errors import MnistSSLError

LOCK_NAME = ".mnist-ssl.lock"


class FolderBusy(MnistSSLError):
    """The folder is held by another live job."""


# Folders this process holds -> [lock file descriptor, depth, pid]: taking a lock the process
# already holds (a command calling another on the same folder) nests instead of failing. The
# pid keeps a forked child, which inherits this table, from releasing its parent's lock.
_held: dict[Path, list] = {}


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (/proc), or None when unknown:
    tells a live process from a later one that was given the same id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return start is None or _process_start(pid) in (None, start)


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 65536).decode("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # being written, or written by hand
        return {}


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "another job (its lock file names no process yet)"
    what = f"process {holder['pid']} on host {holder.get('host', '?')}"
    if holder.get("command"):
        what += f" ({holder['command']}"
        what += f", started {holder['started']})" if holder.get("started") else ")"
    return what


class FolderLock:
    """``with FolderLock(out, command):`` holds ``out/.mnist-ssl.lock`` for the block (see the module doc).

    ``command``: what the holder runs, shown to a second job that is refused.
    """

    def __init__(self, folder: str | Path, command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command if command is not None else "mnist-ssl " + " ".join(sys.argv[1:])

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _key(self) -> Path:
        return self.folder.resolve()

    def acquire(self) -> None:
        key = self._key()
        if key in _held and _held[key][2] == os.getpid():
            _held[key][1] += 1
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "process_start": _process_start(os.getpid())}
        for _ in range(100):  # each turn either takes the lock, refuses, or removes a stale one
            fd = self._publish(record)
            if fd is None:
                self._refuse_or_clear_stale()
                continue
            _held[key] = [fd, 1, os.getpid()]
            return
        raise FolderBusy(f"{self.folder}: could not take the lock {self.path} (it kept changing hands)")

    def _publish(self, record: dict) -> int | None:
        """Create the lock file, already flocked and complete, or None when one exists.

        The record goes into a private file (``O_CREAT | O_EXCL``) that is flocked and fsynced
        before it is hard-linked to the lock's name, which fails when that name exists: no other
        process ever sees the lock file empty or unlocked, so none takes a lock being created for
        a stale one."""
        tmp = self.folder / f"{LOCK_NAME}.{socket.gethostname()}.{os.getpid()}"
        tmp.unlink(missing_ok=True)  # left by a process of this id that died here: not a live one
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        linked = in_place = False
        try:
            _flock(fd)
            os.write(fd, json.dumps(record).encode("utf-8"))
            os.fsync(fd)
            try:
                os.link(tmp, self.path)
                linked = True
            except FileExistsError:
                pass
            except OSError as e:  # a file system without hard links: create the name itself
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                in_place = True
        finally:
            tmp.unlink(missing_ok=True)
            if not linked:
                os.close(fd)
        if in_place:
            return self._create_in_place(record)
        return fd if linked else None

    def _create_in_place(self, record: dict) -> int | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return None
        _flock(fd)
        os.write(fd, json.dumps(record).encode("utf-8"))
        os.fsync(fd)
        return fd

    def _refuse_or_clear_stale(self) -> None:
        """The lock file exists: raise FolderBusy if its holder lives, else remove it."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:  # released meanwhile
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if holder.get("host") == socket.gethostname() and "pid" in holder and \
                        not _pid_alive(int(holder["pid"]), holder.get("process_start")):
                    return  # a stale lock that another starting job is removing right now
                raise FolderBusy(self._busy_message(holder)) from None
            except OSError as e:  # no flock on this file system: judge by the process id
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                holder = _holder(fd)
                if not holder or holder.get("host") != socket.gethostname() or \
                        _pid_alive(int(holder.get("pid", 0)), holder.get("process_start")):
                    raise FolderBusy(self._busy_message(holder)) from None
            # Stale: nobody holds it. Remove it only if the path still names this very file
            # (another process may have replaced it since it was opened).
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self.path.unlink()
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)

    def _busy_message(self, holder: dict) -> str:
        return (f"{self.folder} is in use by {_describe(holder)}: one job per folder; wait for it to end, "
                f"stop it, or choose another --out (lock file {self.path})")

    def release(self) -> None:
        key = self._key()
        held = _held.get(key)
        if held is None or held[2] != os.getpid():
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _held[key]
        # Unlink while still holding the flock: a waiter that opened the old file then sees
        # that the path no longer names it and tries again.
        try:
            if os.stat(self.path).st_ino == os.fstat(held[0]).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(held[0])


def _flock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
