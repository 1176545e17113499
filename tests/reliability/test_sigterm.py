"""SIGTERM (what SLURM, Kubernetes and `timeout` send before they kill) in the single-stage
commands: the state of the last completed epoch is saved, one line says how to continue, exit
130, and ``--resume`` finishes with the numbers of an uninterrupted run.

Each job holds after step 2 of epoch 2 until it is stopped (MNIST_SSL_TEST_HOLD_AT), so the
signal, sent once epoch 1's state is on disk, always lands in epoch 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_ssl.cli import main

from .helpers import SRC, TINY, log_lines, saved_epoch, wait_for

# 30 training images in batches of 8: 4 steps an epoch, 2 epochs per phase.
PHASES = ["--epochs", "2", "--set", "pretrain.batch_size=8", "--set", "finetune.batch_size=8",
          "--set", "pretrain.warmup_epochs=0", *TINY]
PRETRAIN = ["pretrain", "--method", "mae", *PHASES]


def _signalled(args: list[str], out: Path, hold: str) -> tuple[int, str]:
    """``mnist-ssl ARGS --out OUT`` in a subprocess, SIGTERMed once its epoch-1 state is saved."""
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               MNIST_SSL_TEST_HOLD_AT=hold)
    proc = subprocess.Popen([sys.executable, "-m", "mnist_ssl", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        phase = hold.split(":")[0]
        wait_for(lambda: saved_epoch(out) == (phase, 1), proc, f"{phase} epoch 1 was saved")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _interrupted_line(code: int, err: str, *needles: str) -> str:
    assert code == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert lines[0].endswith(" --resume"), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """``mnist-ssl pretrain`` uninterrupted."""
    out = tmp_path_factory.mktemp("pretrain") / "out"
    assert main([*PRETRAIN, "--out", str(out)]) == 0
    return out


def test_sigterm_in_pretrain_then_resume_gives_the_same_checkpoint(pretrained, tmp_path):
    out = tmp_path / "out"
    code, err = _signalled(PRETRAIN, out, "pretrain:6")
    _interrupted_line(code, err, "pretrain interrupted during epoch 2", f"{out}", "mnist-ssl pretrain")
    assert saved_epoch(out) == ("pretrain", 1) and len(log_lines(out)) == 1
    assert not (out / "pretrained.safetensors").exists()
    assert main([*PRETRAIN, "--out", str(out), "--resume"]) == 0
    assert (out / "pretrained.safetensors").read_bytes() == (pretrained / "pretrained.safetensors").read_bytes()
    assert [r["loss"] for r in log_lines(out)] == [r["loss"] for r in log_lines(pretrained)]
    assert not list(out.glob("resume*"))


def test_sigterm_in_finetune_then_resume_gives_the_same_classifier(pretrained, tmp_path):
    finetune = ["finetune", "--checkpoint", str(pretrained / "pretrained.safetensors"), *PHASES]
    whole = tmp_path / "whole"
    assert main([*finetune, "--out", str(whole)]) == 0
    out = tmp_path / "out"
    code, err = _signalled(finetune, out, "finetune:6")
    _interrupted_line(code, err, "finetune interrupted during epoch 2", f"{out}", "mnist-ssl finetune")
    assert saved_epoch(out) == ("finetune", 1)
    assert main([*finetune, "--out", str(out), "--resume"]) == 0
    assert (out / "finetuned.safetensors").read_bytes() == (whole / "finetuned.safetensors").read_bytes()
    mine, ref = (json.loads((d / "metrics.json").read_text()) for d in (out, whole))
    for key in ("accuracy", "confusion", "tta"):
        assert mine[key] == ref[key], key
    assert not list(out.glob("resume*"))


# label-efficiency: MAE pretrained on the pool (1,470 images of 0-2 in batches of 256: 6 steps an
# epoch), one labelled row per method.
LABEL_EFFICIENCY = ["label-efficiency", "--methods", "mae,supervised", "--labels", "1", "--seeds", "1",
                    "--no-baselines", "--classes", "0,1,2", "--test-per-class", "10", "--epochs", "2",
                    "--set", "pretrain.batch_size=256", "--set", "pretrain.warmup_epochs=0",
                    "--finetune-steps", "4", "--finetune-min-epochs", "1", "--set", "model.dim=32",
                    "--set", "model.depth=1", "--set", "model.heads=2", "--threads", "1", "--quiet"]


def test_sigterm_in_label_efficiency_then_resume_gives_the_same_rows(tmp_path):
    whole = tmp_path / "whole"
    assert main([*LABEL_EFFICIENCY, "--out", str(whole)]) == 0
    out = tmp_path / "out"
    state = out / "pretrained" / "mae.state"
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               MNIST_SSL_TEST_HOLD_AT="pretrain:8")
    proc = subprocess.Popen([sys.executable, "-m", "mnist_ssl", *LABEL_EFFICIENCY, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: saved_epoch(state) == ("pretrain", 1), proc, "MAE's pretraining epoch 1 was saved")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _interrupted_line(proc.returncode, err, "pretrain interrupted during epoch 2", "mnist-ssl label-efficiency")
    assert saved_epoch(state) == ("pretrain", 1)
    assert main([*LABEL_EFFICIENCY, "--out", str(out), "--resume"]) == 0
    assert not state.exists()
    for name in ("mae.safetensors", "mae.log.jsonl"):
        mine, ref = ((d / "pretrained" / name).read_bytes() for d in (out, whole))
        if name.endswith(".jsonl"):  # epoch times differ
            mine, ref = ([{k: v for k, v in json.loads(line).items() if k != "time_s"}
                          for line in text.decode().splitlines()] for text in (mine, ref))
        assert mine == ref, name
    rows = [[{k: v for k, v in r.items() if k != "time_s"} for r in json.loads((d / "results.json").read_text())["rows"]]
            for d in (out, whole)]
    assert rows[0] == rows[1]
