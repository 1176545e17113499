"""No code runs from a file we read; files are written only under the output folder.

Downloads are checksum-verified before use: tests/data/test_download.py
(test_tampered_file_rejected_and_next_mirror_used, test_tampered_file_never_left_behind,
test_present_but_wrong_file_is_replaced, ...).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import tempfile
from pathlib import Path

import pytest

from mnist_ssl.engine.resume import FORMAT as RESUME_FORMAT
from mnist_ssl.engine.checkpoint import FORMAT as CKPT_FORMAT

from .helpers import TINY, one_line_error, run_cli

SRC = Path(__file__).resolve().parents[2] / "src" / "mnist_ssl"


def test_no_code_path_unpickles():
    """torch.load only with weights_only=True; no pickle/joblib loads; no np.load(allow_pickle=True)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start(): text.find(")", m.start()) + 1]
            if "weights_only=True" not in call:
                offenders.append(f"{path.name}: {call}")
        for pattern in (r"\bpickle\.loads?\(", r"\bcPickle\b", r"\bjoblib\.load\(", r"\bdill\.",
                        r"allow_pickle\s*=\s*True", r"\bUnpickler\b", r"\bmarshal\.loads?\(",
                        r"(?<![.\w])eval\(", r"(?<![.\w])exec\("):
            for m in re.finditer(pattern, text):
                offenders.append(f"{path.name}: {m.group(0)}")
    assert not offenders, offenders


class Payload:
    """Unpickling this creates the file ``target``: proof that the payload ran."""

    target: Path

    def __reduce__(self):
        return (open, (str(Payload.target), "w"))


def _evil(path: Path) -> Path:
    Payload.target = path.parent / "payload-ran"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Payload()))
    return path


@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "evil.safetensors", "evil.bin"])
@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_pickle_checkpoint_is_refused_and_never_runs(name, command, tmp_path, capsys):
    path = _evil(tmp_path / "ckpt" / name)
    args = [command, "--checkpoint", path]
    if command == "finetune":
        args += ["--out", tmp_path / "out", "--quiet"]
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, str(path.with_suffix("")))
    assert not Payload.target.exists(), "the pickle payload ran"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_pickle_with_a_forged_sidecar_is_refused_and_never_runs(command, tmp_path, capsys):
    """Even with a sidecar of the right format and hash, the bytes are parsed as safetensors only."""
    path = _evil(tmp_path / "ckpt" / "finetuned.safetensors")
    sidecar = {"format": CKPT_FORMAT, "kind": "classifier", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
               "model": {"dim": 32, "depth": 1, "heads": 2, "num_classes": 3}, "classes": [0, 1, 2]}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    args = [command, "--checkpoint", path] + (["--out", tmp_path / "out"] if command == "finetune" else [])
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, str(path), "is not a valid safetensors file")
    assert not Payload.target.exists(), "the pickle payload ran"


def test_pickle_as_resume_state_is_refused_and_never_runs(tmp_path, capsys):
    """A pickle as resume.safetensors with a resume.json that matches it (format, fields, hash and
    checksum all right): the parser refuses it, the payload never runs, and --resume redoes the
    run from scratch with one warning line."""
    from mnist_ssl.engine.resume import JSON_NAME, META_HASH, _meta_hash, save_train_state

    from .helpers import tiny_state

    out = tmp_path / "out"
    run = out / "runs" / "mae" / "seed0"
    save_train_state(run, tiny_state(1.0), run_config={}, log_lines=[])
    path = _evil(run / "resume.safetensors")
    meta = json.loads((run / JSON_NAME).read_text())
    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta[META_HASH] = _meta_hash(meta)
    (run / JSON_NAME).write_text(json.dumps(meta))
    code, _, err = run_cli(["reproduce", "--out", out, "--methods", "mae", "--resume", "--epochs", "1",
                            "--no-baselines", "--no-report", "--set", "pretrain.warmup_epochs=0", *TINY], capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("mnist-ssl: warning:")]
    assert len(warning) == 1 and str(path) in warning[0] and "is not a valid safetensors file" in warning[0] \
        and "redone from scratch" in warning[0], err
    assert not Payload.target.exists(), "the pickle payload ran"
    assert (run / "metrics.json").exists() and not list(run.glob("resume*"))


def test_files_are_written_only_under_the_output_folder(tmp_path, monkeypatch):
    """A whole job (baselines and report included) from a clean working folder and temp folder."""
    from mnist_ssl.cli import main

    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert main(["reproduce", "--out", "job/out", "--methods", "mae", "--epochs", "1", *TINY]) == 0
    outside = [p for p in cwd.rglob("*") if not p.is_relative_to(cwd / "job" / "out")]
    assert outside == [cwd / "job"], outside
    assert {p.name for p in (cwd / "job" / "out").iterdir()} >= {"metrics.json", "report.md", "runs", "baselines"}
    assert not list(tmp.iterdir()), "temporary files were left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "tmp"]
