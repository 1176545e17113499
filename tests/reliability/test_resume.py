"""Resume after a crash or a Ctrl-C: the result is bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from mnist_ssl.cli import main
from mnist_ssl.engine.callbacks import ProgressBar, TrainingInterrupted
from mnist_ssl.engine.resume import (JSON_NAME, NEXT_NAME, TENSORS_NAME, load_train_state,
                                     save_train_state)
from mnist_ssl.experiment.scheduler import StopFlag

from .helpers import JOB, assert_same_job, job, log_lines, one_line_error, run_cli, tiny_state

# signalled_jobs (conftest.py): two tiny jobs in subprocesses, started when the session starts,
# each signalled in the middle of MAE's pretraining epoch 2.
def test_sigkill_mid_epoch_then_resume_is_bit_identical(reference, signalled_jobs):
    out, code, _, _ = signalled_jobs["kill"]
    run = out / "runs" / "mae" / "seed0"
    assert code == -signal.SIGKILL
    assert not (run / "metrics.json").exists()
    saved = json.loads((run / JSON_NAME).read_text())
    assert (saved["phase"], saved["epoch"]) == ("pretrain", 1)
    assert len(log_lines(run)) == 1

    assert main(["reproduce", "--out", str(out), *JOB, "--resume"]) == 0
    assert_same_job(reference, out)


@pytest.mark.parametrize("plan", ["int", "term"])
def test_ctrl_c_or_sigterm_stops_at_next_batch_saves_and_exits_130(reference, signalled_jobs, plan):
    out, code, _, stderr = signalled_jobs[plan]
    run = out / "runs" / "mae" / "seed0"
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "mae seed 0 continues after pretrain epoch 1" in stderr
    resume_line = [line for line in stderr.splitlines() if "Continue with:" in line]
    assert len(resume_line) == 1 and resume_line[0].endswith(" --resume")
    assert f"Continue with: mnist-ssl reproduce --out {out} " in resume_line[0]
    # What is on disk is the consistent state of the last completed epoch.
    saved = load_train_state(run)
    assert (saved["meta"]["phase"], saved["meta"]["epoch"], saved["meta"]["step"]) == ("pretrain", 1, 4)
    assert [r["epoch"] for r in log_lines(run)] == [1]
    top = json.loads((out / "metrics.json").read_text())
    assert top["complete"] is False

    assert main(["reproduce", "--out", str(out), *JOB, "--resume"]) == 0
    assert_same_job(reference, out)


class _Crash(BaseException):
    """Stands for a crash: nothing after it runs but ``finally`` blocks."""


@pytest.mark.parametrize("method,crash_step", [
    ("mae", 2),    # pretraining epoch 1: nothing saved yet, the run starts again
    ("mae", 10),   # fine-tuning epoch 1: pretraining saved (epoch 2 of 2), fine-tuning starts again
    ("mae", 14),   # fine-tuning epoch 2: fine-tuning epoch 1 restored over the pretrained checkpoint
    ("supervised", 6),  # fine-tuning epoch 2 without pretraining (the encoder is rebuilt from the seed)
])
def test_crash_at_any_step_then_resume_is_bit_identical(reference, tmp_path, monkeypatch, method, crash_step):
    out = tmp_path / "out"
    steps = {"n": 0}
    on_step = ProgressBar.on_step

    def crashing(self, state):
        on_step(self, state)
        steps["n"] += 1
        if steps["n"] == crash_step:
            raise _Crash

    monkeypatch.setattr(ProgressBar, "on_step", crashing)
    with pytest.raises(_Crash):
        main(["reproduce", "--out", str(out), *job(method)])
    monkeypatch.setattr(ProgressBar, "on_step", on_step)
    assert main(["reproduce", "--out", str(out), *job(method), "--resume"]) == 0
    assert_same_job(reference, out, (method,))


def test_resume_with_other_settings_is_refused(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"

    def crash_at_step_6(self, state):
        if state.phase == "pretrain" and state.step == 6:
            raise _Crash

    monkeypatch.setattr(ProgressBar, "on_step", crash_at_step_6)
    with pytest.raises(_Crash):
        main(["reproduce", "--out", str(out), *job("mae")])
    monkeypatch.undo()
    run = out / "runs" / "mae" / "seed0"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code, _, err = run_cli(["reproduce", "--out", out, *job("mae"), "--set", "pretrain.lr=0.01", "--resume"],
                           capsys)
    one_line_error(code, err, "--resume", str(run), "was started with pretrain.lr=", "this command gives 0.01")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_finished_runs_are_skipped_on_resume(reference, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = (out / "runs" / "mae" / "seed0" / "finetuned.safetensors").stat().st_mtime_ns
    assert main(["reproduce", "--out", str(out), *JOB, "--resume"]) == 0
    assert (out / "runs" / "mae" / "seed0" / "finetuned.safetensors").stat().st_mtime_ns == before
    assert_same_job(reference, out)


# ----- the resume files themselves ---------------------------------------------
def test_a_save_cut_between_its_renames_still_loads(tmp_path):
    save_train_state(tmp_path, tiny_state(1.0), run_config={}, log_lines=[])
    old_tensors = (tmp_path / TENSORS_NAME).read_bytes()
    save_train_state(tmp_path, tiny_state(2.0), run_config={}, log_lines=[])
    # Cut after the new JSON, before the new tensors were renamed over the old ones.
    (tmp_path / TENSORS_NAME).rename(tmp_path / NEXT_NAME)
    (tmp_path / TENSORS_NAME).write_bytes(old_tensors)
    assert load_train_state(tmp_path)["tensors"]["module.weight"].eq(2.0).all()


def test_a_save_cut_before_its_json_keeps_the_previous_epoch(tmp_path):
    save_train_state(tmp_path, tiny_state(1.0), run_config={}, log_lines=[])
    newer = tmp_path / "newer"
    save_train_state(newer, tiny_state(2.0), run_config={}, log_lines=[])
    # Cut after the new tensors were written (as NEXT), before the new JSON.
    (tmp_path / NEXT_NAME).write_bytes((newer / TENSORS_NAME).read_bytes())
    assert load_train_state(tmp_path)["tensors"]["module.weight"].eq(1.0).all()


def test_a_corrupted_resume_state_is_refused(tmp_path):
    from mnist_ssl.errors import CheckpointError

    save_train_state(tmp_path, tiny_state(1.0), run_config={}, log_lines=[])
    data = (tmp_path / TENSORS_NAME).read_bytes()
    (tmp_path / TENSORS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match the hash"):
        load_train_state(tmp_path)


def test_rng_states_round_trip(tmp_path):
    import random

    import numpy as np

    from mnist_ssl.engine.resume import set_rng_state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_train_state(tmp_path, tiny_state(1.0), run_config={}, log_lines=[])
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    saved = load_train_state(tmp_path)
    for key in ("rng.torch", "rng.python", "rng.numpy"):
        assert saved["tensors"][key].dtype == torch.uint8
    set_rng_state(saved["tensors"], saved["meta"]["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_sigterm_sets_the_stop_flag_and_the_engine_stops_at_the_next_batch():
    from mnist_ssl.config import OptimConfig
    from mnist_ssl.engine.loop import train
    from mnist_ssl.objectives.base import ObjectiveOutput

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, views, labels=None):
            loss = (views[0].mean() - self.w).pow(2).sum()
            return ObjectiveOutput(loss, {"mse": loss.detach()})

    done = []

    class Signaller:
        def on_step(self, state):
            done.append(state.step)
            if state.step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        def on_epoch_end(self, state, record):
            pass

    with StopFlag() as stop:
        with pytest.raises(TrainingInterrupted, match="pretrain interrupted during epoch 1"):
            train(Toy(), torch.zeros(40, 1, 28, 28, dtype=torch.uint8), None,
                  OptimConfig(epochs=1, batch_size=4), phase="pretrain", callbacks=[Signaller()],
                  stop_requested=stop)
    assert done == [1, 2]
