"""Atomic file writes: every file the project writes goes through here.

A temporary file in the target folder is written, fsynced, given the mode a
plain ``open`` would give it, then renamed into place: a reader (or a crash)
never sees a half-written file, and no temporary file is left behind.

A write the system refuses (disk full, read-only file system, no permission:
any ``OSError``) removes its temporary file and raises :class:`WriteFailed`,
one line naming the file and the reason; the previous version of the file is
untouched, so the last good checkpoint or state of a job survives a full disk.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from mnist_ssl.errors import WriteFailed


def write_failed(path: str | Path, e: OSError) -> WriteFailed:
    """The one-line error for an ``OSError`` met writing ``path``: file, reason, what is kept."""
    code = errno.errorcode.get(e.errno, "") if e.errno else ""
    reason = f"{e.strerror or e} ({code})" if code else str(e.strerror or e)
    return WriteFailed(f"cannot write {path}: {reason}; its previous version, if any, is unchanged "
                       "(free space or fix the folder's permissions, then run the command again; "
                       "a job continues with --resume)")


def _write_temp(path: Path, data: bytes) -> str:
    """``data`` in a fsynced temporary file beside ``path`` (0666 & ~umask); returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; results are meant to be shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Write several files that belong together (weights and the sidecar holding their hash):
    every temporary file is written before any is renamed, so a full disk changes none of them."""
    temps: dict[Path, str] = {}
    current = None
    try:
        for path, data in files.items():
            current = Path(path)
            temps[current] = _write_temp(current, data)
        for path, tmp in temps.items():
            current = path
            os.replace(tmp, path)
    except OSError as e:
        raise write_failed(current, e) from None
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename: never a half-written file."""
    atomic_write_files({Path(path): data})


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
