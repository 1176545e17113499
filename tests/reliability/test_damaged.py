"""A damaged run folder: a truncated or hand-edited resume state, checkpoint or metrics.json is
found and named in one line, and the run's last good state is what it continues from."""

from __future__ import annotations

import json
import shutil

import pytest

from mnist_ssl.cli import main
from mnist_ssl.engine.callbacks import ProgressBar
from mnist_ssl.engine.resume import (JSON_NAME, META_HASH, TENSORS_NAME, finished_run_problem, last_good_state,
                                     load_train_state, normalised_config, save_train_state)
from mnist_ssl.errors import CheckpointError, ConfigError

from .helpers import assert_same_job, job, run_cli, tiny_state


class _Crash(BaseException):
    pass


def _one_line(msg: str, *needles: str) -> None:
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


@pytest.fixture(scope="module")
def mae_in_finetuning(tmp_path_factory):
    """The tiny MAE job stopped in fine-tuning epoch 2: pretrained.safetensors, a fine-tuning
    state of epoch 1, a log of 3 lines."""
    out = tmp_path_factory.mktemp("damaged") / "out"
    on_step = ProgressBar.on_step

    def crash(self, state):
        if state.phase == "finetune" and state.step == 6:
            raise _Crash

    ProgressBar.on_step = crash
    try:
        with pytest.raises(_Crash):
            main(["reproduce", "--out", str(out), *job("mae")])
    finally:
        ProgressBar.on_step = on_step
    return out


@pytest.fixture
def run(mae_in_finetuning, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(mae_in_finetuning, out)
    return out / "runs" / "mae" / "seed0"


def _config(run):
    return normalised_config(json.loads((run / "config.json").read_text()))


# ----- resume.json itself ---------------------------------------------------------
def test_a_truncated_resume_json_is_one_line(tmp_path):
    save_train_state(tmp_path, tiny_state(1.0), run_config={}, log_lines=[])
    text = (tmp_path / JSON_NAME).read_text()
    (tmp_path / JSON_NAME).write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError) as e:
        load_train_state(tmp_path)
    _one_line(str(e.value), str(tmp_path / JSON_NAME), "not valid JSON")


def test_a_hand_edited_resume_json_is_caught_by_its_checksum(tmp_path):
    save_train_state(tmp_path, tiny_state(1.0), run_config={}, log_lines=[])
    meta = json.loads((tmp_path / JSON_NAME).read_text())
    meta["optimizer"]["param_groups"][0]["lr"] = 0.5  # still valid JSON of the right shape
    (tmp_path / JSON_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as e:
        load_train_state(tmp_path)
    _one_line(str(e.value), str(tmp_path / JSON_NAME), "checksum", "edited by hand")


@pytest.mark.parametrize("field,value,needle", [
    ("phase", "pretraining", "phase is"),
    ("epoch", 7, "at most epochs"),
    ("epoch", "1", "an integer"),
    ("log", "x", "log lines"),
    ("optimizer", {"param_groups": []}, "tensor_state"),
])
def test_a_resume_json_without_checksum_is_checked_field_by_field(tmp_path, field, value, needle):
    """States written before the checksum existed: the fields training reads are checked."""
    save_train_state(tmp_path, tiny_state(1.0), run_config={}, log_lines=[])
    meta = json.loads((tmp_path / JSON_NAME).read_text())
    meta.pop(META_HASH)
    assert load_train_state(tmp_path) is not None  # an old state reads as before
    meta[field] = value
    (tmp_path / JSON_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as e:
        load_train_state(tmp_path)
    _one_line(str(e.value), str(tmp_path / JSON_NAME), field, needle)


# ----- the last good state of a run -------------------------------------------------
def test_an_intact_run_continues_from_its_state(run):
    start = last_good_state(run, _config(run), pretrains=True)
    assert start.problem is None and start.state["meta"]["phase"] == "finetune"
    assert start.where == "after finetune epoch 1" and len(start.log) == 3


@pytest.mark.parametrize("damage", ["truncate json", "edit json", "truncate tensors", "delete tensors"])
def test_a_damaged_state_falls_back_to_the_pretrained_checkpoint(run, damage):
    target = run / (JSON_NAME if "json" in damage else TENSORS_NAME)
    if damage.startswith("truncate"):
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "edit json":
        target.write_text(target.read_text().replace('"epoch": 1', '"epoch": 2', 1))
    else:
        target.unlink()
    start = last_good_state(run, _config(run), pretrains=True)
    assert start.state is None and start.from_pretrained
    _one_line(start.problem, str(run), "redone from its pretrained checkpoint")
    assert "resume" in start.problem
    # The pretraining's two log lines are kept; the unreadable resume files are gone.
    assert [json.loads(line)["phase"] for line in start.log] == ["pretrain", "pretrain"]
    assert not list(run.glob("resume*"))


def test_a_damaged_state_without_pretrained_checkpoint_starts_from_scratch(run):
    (run / JSON_NAME).write_text("{")
    (run / "pretrained.safetensors").write_bytes(b"")
    start = last_good_state(run, _config(run), pretrains=True)
    assert start.state is None and not start.from_pretrained and start.where == "scratch"
    _one_line(start.problem, str(run / JSON_NAME), "redone from scratch")


def test_a_fine_tuning_state_whose_pretrained_checkpoint_is_damaged_starts_from_scratch(run):
    data = (run / "pretrained.safetensors").read_bytes()
    (run / "pretrained.safetensors").write_bytes(data[:-10])
    start = last_good_state(run, _config(run), pretrains=True)
    assert start.state is None and not start.from_pretrained
    _one_line(start.problem, str(run / "pretrained.safetensors"), "does not match the hash", "from scratch")
    assert not list(run.glob("resume*"))


def test_a_lost_pretraining_log_line_means_scratch(run):
    (run / JSON_NAME).write_text("{")
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text(lines[1] + "\n")  # pretraining epoch 1 lost
    assert last_good_state(run, _config(run), pretrains=True).where == "scratch"


def test_other_settings_are_refused_not_redone(run):
    cfg = _config(run)
    cfg["pretrain"]["lr"] = 0.5
    with pytest.raises(ConfigError, match="pretrain.lr"):
        last_good_state(run, cfg, pretrains=True)
    (run / JSON_NAME).write_text("{")  # the state unreadable: the checkpoint's settings decide
    with pytest.raises(ConfigError, match="was pretrained with pretrain.lr"):
        last_good_state(run, cfg, pretrains=True)


# ----- a finished run ----------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "out"
    assert main(["reproduce", "--out", str(out), *job("mae")]) == 0
    return out / "runs" / "mae" / "seed0"


@pytest.mark.parametrize("damage,needle", [
    ("truncate", "not valid JSON"),
    ("accuracy", "accuracy"),
    ("seed", "not mae seed 0"),
    ("checkpoint", "finetuned.safetensors does not match the hash"),
])
def test_a_damaged_finished_run_is_named(finished, tmp_path, damage, needle):
    run = tmp_path / "seed0"
    shutil.copytree(finished, run)
    assert finished_run_problem(run, "mae", 0) is None
    metrics = json.loads((run / "metrics.json").read_text())
    if damage == "truncate":
        (run / "metrics.json").write_text(json.dumps(metrics)[:50])
    elif damage == "accuracy":
        metrics["accuracy"] = 0.999  # no longer the confusion matrix's trace
        (run / "metrics.json").write_text(json.dumps(metrics))
    elif damage == "seed":
        metrics["seed"] = 3
        (run / "metrics.json").write_text(json.dumps(metrics))
    else:
        (run / "finetuned.safetensors").write_bytes((run / "finetuned.safetensors").read_bytes()[:-1])
    problem = finished_run_problem(run, "mae", 0)
    _one_line(problem, str(run), needle)
    # What it is redone from: the pretraining, whose checkpoint and log are intact.
    (run / "metrics.json").unlink()
    start = last_good_state(run, _config(run), pretrains=True, problem=problem)
    assert start.from_pretrained and problem in start.problem and "pretrained checkpoint" in start.problem


# ----- through reproduce --resume ------------------------------------------------------
def _warning(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("mnist-ssl: warning:")]
    assert len(lines) == 1, err
    _one_line(lines[0], *needles)
    return lines[0]


@pytest.mark.parametrize("damage,where", [
    ("resume.json", "its pretrained checkpoint"),
    ("pretrained.safetensors", "scratch"),
])
def test_resume_redoes_a_damaged_run_from_its_last_good_state(reference, mae_in_finetuning, tmp_path, capsys,
                                                             damage, where):
    out = tmp_path / "out"
    shutil.copytree(mae_in_finetuning, out)
    run = out / "runs" / "mae" / "seed0"
    (run / damage).write_bytes((run / damage).read_bytes()[:-20])
    code, _, err = run_cli(["reproduce", "--out", out, *job("mae"), "--resume"], capsys)
    assert code == 0, err
    _warning(err, str(run / damage), f"redone from {where}")
    assert_same_job(reference, out, ("mae",))


def test_resume_redoes_a_finished_run_whose_metrics_are_damaged(reference, finished, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished.parents[2], out)
    run = out / "runs" / "mae" / "seed0"
    (run / "metrics.json").write_text((run / "metrics.json").read_text()[:40])
    code, _, err = run_cli(["reproduce", "--out", out, *job("mae"), "--resume"], capsys)
    assert code == 0, err
    _warning(err, str(run / "metrics.json"), "not valid JSON", "redone from its pretrained checkpoint")
    assert_same_job(reference, out, ("mae",))
