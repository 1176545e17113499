"""Disk full, read-only or forbidden folders: a write that fails names the file in one line,
leaves no temporary file and keeps the previous version of the file (and of a checkpoint or
resume state, which are pairs of files)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from mnist_ssl import fileio
from mnist_ssl.cli import main
from mnist_ssl.engine.checkpoint import read_checkpoint, save_checkpoint
from mnist_ssl.engine.resume import JSON_NAME, NEXT_NAME, TENSORS_NAME, load_train_state, save_train_state
from mnist_ssl.errors import WriteFailed

from .helpers import JOB, assert_same_job, one_line_error, run_cli, run_result, tiny_state


class FullDisk:
    """``os.fsync`` (the last step of writing a temporary file) fails with ``err`` (ENOSPC) for
    the temporary files of ``names`` (all files when none), as on a file system that has just
    filled up. A name may hold folders ("runs/mae/seed0/resume.json"); the first ``skip``
    writes that match still succeed."""

    def __init__(self, monkeypatch, *names: str, err: int = errno.ENOSPC, skip: int = 0) -> None:
        self.names, self.err, self.skip, self.hits = [Path(n) for n in names], err, skip, []
        self._fsync = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def _matches(self, target: Path) -> bool:
        return not self.names or any(
            target.name.startswith(f".{n.name}.") and str(target.parent).endswith(str(n.parent).strip("."))
            for n in self.names)

    def __call__(self, fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if self._matches(target):
            if self.skip:
                self.skip -= 1
            else:
                self.hits.append(target)
                raise OSError(self.err, os.strerror(self.err))
        self._fsync(fd)


def _one_line(e: pytest.ExceptionInfo, path: Path, reason: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and reason in msg, msg
    return msg


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("err,reason", [(errno.ENOSPC, "No space left on device (ENOSPC)"),
                                        (errno.EROFS, "Read-only file system (EROFS)"),
                                        (errno.EACCES, "Permission denied (EACCES)")])
def test_a_failed_write_names_the_file_and_keeps_the_previous_version(tmp_path, monkeypatch, err, reason):
    path = tmp_path / "metrics.json"
    fileio.atomic_write_text(path, "old")
    FullDisk(monkeypatch, err=err)
    with pytest.raises(WriteFailed) as e:
        fileio.atomic_write_text(path, "new")
    _one_line(e, path, reason)
    assert path.read_text() == "old"
    _no_temp_files(tmp_path)


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    # Root ignores a chmod'ed folder, so the refusal is what mkstemp raises in one.
    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    with pytest.raises(WriteFailed) as e:
        fileio.atomic_write_bytes(tmp_path / "x.bin", b"1")
    _one_line(e, tmp_path / "x.bin", "Permission denied (EACCES)")
    assert not (tmp_path / "x.bin").exists()


def test_a_failed_rename_keeps_the_previous_version(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    fileio.atomic_write_text(path, "old")

    def replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(WriteFailed) as e:
        fileio.atomic_write_text(path, "new")
    _one_line(e, path, "ENOSPC")
    assert path.read_text() == "old"
    _no_temp_files(tmp_path)


@pytest.mark.parametrize("failing", ["finetuned.safetensors", "finetuned.json"])
def test_a_checkpoint_whose_save_fails_is_the_previous_checkpoint(tmp_path, monkeypatch, failing):
    from mnist_ssl.config import ModelConfig
    from mnist_ssl.models.vit import ViTEncoder

    cfg = ModelConfig(dim=32, depth=1, heads=2)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "finetuned", ViTEncoder(cfg), kind="encoder", model=cfg)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    torch.manual_seed(1)
    disk = FullDisk(monkeypatch, failing)
    with pytest.raises(WriteFailed) as e:
        save_checkpoint(tmp_path / "finetuned", ViTEncoder(cfg), kind="encoder", model=cfg)
    assert disk.hits
    _one_line(e, tmp_path / failing, "ENOSPC")
    # Neither file was replaced: the weights still match the sidecar's hash.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    read_checkpoint(tmp_path / "finetuned.safetensors")


@pytest.mark.parametrize("failing", [NEXT_NAME, JSON_NAME])
def test_a_resume_save_that_fails_keeps_the_previous_epoch(tmp_path, monkeypatch, failing):
    save_train_state(tmp_path, tiny_state(1.0), run_config={}, log_lines=[])
    FullDisk(monkeypatch, failing)
    with pytest.raises(WriteFailed) as e:
        save_train_state(tmp_path, tiny_state(2.0), run_config={}, log_lines=[])
    _one_line(e, tmp_path / failing, "ENOSPC")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [JSON_NAME, TENSORS_NAME]
    assert load_train_state(tmp_path)["tensors"]["module.weight"].eq(1.0).all()


# ----- a job whose disk fills up --------------------------------------------------
@pytest.mark.parametrize("failing,skip", [
    ("runs/mae/seed0/resume.json", 1),                # MAE's pretraining epoch 2: epoch 1 is kept
    ("runs/supervised/seed0/finetuned.safetensors", 0),  # the second run's checkpoint: MAE is finished
])
def test_disk_full_mid_job_is_one_line_and_resume_finishes_the_job(reference, tmp_path, monkeypatch, capsys,
                                                                    failing, skip):
    out = tmp_path / "out"
    disk = FullDisk(monkeypatch, failing, skip=skip)
    code, _, err = run_cli(["reproduce", "--out", out, *JOB], capsys)
    assert disk.hits
    line = one_line_error(code, err, f"cannot write {out / failing}", "No space left on device (ENOSPC)")
    assert "--resume" in line
    _no_temp_files(out / Path(failing).parent)
    if failing.startswith("runs/supervised"):  # the finished run is intact
        assert run_result(out, "mae") == run_result(reference, "mae")
    monkeypatch.undo()  # space freed
    assert main(["reproduce", "--out", str(out), *JOB, "--resume"]) == 0
    assert_same_job(reference, out)


def test_disk_full_while_appending_the_log_is_one_line_too(reference, tmp_path, monkeypatch, capsys):
    """log.jsonl is appended to, not written atomically: its OSError reaches the CLI, which says
    the same one line; --resume then rewrites the log from the saved state."""
    import builtins

    from mnist_ssl.engine import callbacks

    out = tmp_path / "out"
    appends = {"n": 0}

    def full_open(file, mode="r", *a, **k):
        if "a" in mode and Path(file).name == "log.jsonl":
            appends["n"] += 1
            if appends["n"] == 2:  # MAE's second epoch line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return builtins.open(file, mode, *a, **k)

    monkeypatch.setattr(callbacks, "open", full_open, raising=False)
    code, _, err = run_cli(["reproduce", "--out", out, *JOB], capsys)
    one_line_error(code, err, f"cannot write {out / 'runs' / 'mae' / 'seed0' / 'log.jsonl'}",
                   "No space left on device (ENOSPC)")
    monkeypatch.undo()
    assert main(["reproduce", "--out", str(out), *JOB, "--resume"]) == 0
    assert_same_job(reference, out)
