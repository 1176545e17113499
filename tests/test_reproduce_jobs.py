"""``mnist-ssl reproduce --jobs N``: runs in worker processes give the numbers of ``--jobs 1``;
bad values, failed runs and Ctrl-C end the job as they do without --jobs.

The tiny job of tests/reliability (on the CPU): MAE and the supervised baseline, a 1-block 32-wide ViT,
10 train and 10 test images per class of 0-2, 2 epochs of 4 batches per phase, 1 thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_ssl.cli import main
from reliability.helpers import HOLD_IN_PRETRAIN_EPOCH_2, run_cli, saved_epoch, wait_for

SRC = Path(__file__).resolve().parents[1] / "src"
JOB = ["--methods", "mae,supervised", "--no-report", "--epochs", "2",
       "--set", "pretrain.batch_size=8", "--set", "finetune.batch_size=8",
       "--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2",
       "--train-per-class", "10", "--test-per-class", "10", "--threads", "1", "--device", "cpu", "--quiet"]
RUNS = ("mae", "supervised")


def results(out: Path) -> dict:
    """What must not depend on --jobs: the runs (order included) and baselines of metrics.json
    without their wall times, every epoch's losses, and the weights."""
    top = json.loads((out / "metrics.json").read_text())
    runs = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in top["runs"]]
    base = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in top["baselines"]]
    losses, weights = {}, {}
    for method in RUNS:
        run = out / "runs" / method / "seed0"
        losses[method] = [{k: r[k] for k in ("phase", "epoch", "loss", "terms", "lr")}
                          for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]
        weights.update({f"{method}/{p.name}": p.read_bytes() for p in sorted(run.glob("*.safetensors"))})
    return {"complete": top["complete"], "runs": runs, "baselines": base, "losses": losses, "weights": weights}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny job with --jobs 1 (in this process)."""
    out = tmp_path_factory.mktemp("jobs1") / "out"
    assert main(["reproduce", "--out", str(out), *JOB, "--jobs", "1"]) == 0
    return out


def test_jobs_2_gives_the_results_of_jobs_1(reference, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["reproduce", "--out", out, *JOB, "--jobs", "2"], capsys)
    assert code == 0, err
    mine, ref = results(out), results(reference)
    assert [(r["method"], r["seed"]) for r in mine["runs"]] == [("mae", 0), ("supervised", 0)]
    assert mine["runs"][0]["checkpoint"] == "runs/mae/seed0/finetuned.safetensors"
    for key in ("complete", "runs", "baselines", "losses"):
        assert mine[key] == ref[key], key
    assert mine["weights"].keys() == ref["weights"].keys()
    for name in ref["weights"]:
        assert mine["weights"][name] == ref["weights"][name], name
    assert "| mae |" in stdout  # the closing table


@pytest.mark.parametrize("value,needle", [("0", "--jobs 0: must be >= 1"), ("-2", "--jobs -2: must be >= 1"),
                                          ("two", "argument --jobs: invalid int value: 'two'")])
def test_bad_jobs_value_is_one_line_and_exit_2(value, needle, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    code, _, err = run_cli(["reproduce", "--out", out, *JOB, "--jobs", value], capsys)
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "new").exists()


def test_a_failed_run_stops_the_others_and_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["reproduce", "--out", out, *JOB, "--jobs", "2", "--set", "pretrain.lr=1e30"], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mnist-ssl: error: pretrain: loss became nan at epoch 1"), lines[0]
    assert not (out / "runs" / "mae" / "seed0" / "pretrained.safetensors").exists()


def test_ctrl_c_with_jobs_keeps_state_and_resume_with_jobs_finishes_the_same(reference, tmp_path, capsys):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MPLBACKEND="Agg", MNIST_SSL_TEST_HOLD_AT=HOLD_IN_PRETRAIN_EPOCH_2)
    proc = subprocess.Popen([sys.executable, "-m", "mnist_ssl", "reproduce", "--out", str(out), *JOB,
                             "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        run = out / "runs" / "mae" / "seed0"
        # MAE's pretraining epoch 1 is committed; its worker holds in epoch 2 until it is stopped.
        wait_for(lambda: saved_epoch(run) == ("pretrain", 1), proc, "MAE's first epoch was saved")
        proc.send_signal(signal.SIGINT)  # to the parent only, as in a terminal it reaches all: workers ignore it
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "mae seed 0 continues after pretrain epoch 1" in stderr
    resume_line = [line for line in stderr.splitlines() if "Continue with:" in line]
    assert len(resume_line) == 1 and resume_line[0].endswith(" --jobs 2 --resume"), stderr
    assert json.loads((out / "metrics.json").read_text())["complete"] is False
    assert (out / "runs" / "mae" / "seed0" / "resume.json").exists()

    code, _, err = run_cli(["reproduce", "--out", out, *JOB, "--jobs", "2", "--resume"], capsys)
    assert code == 0, err
    mine, ref = results(out), results(reference)
    for key in ("complete", "runs", "baselines", "losses", "weights"):
        assert mine[key] == ref[key], key
    assert not list(out.glob("runs/*/seed0/resume*"))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_resume_of_a_finished_moved_job_keeps_its_runs_and_relative_checkpoints(jobs, reference, tmp_path, capsys):
    # Runs kept by --resume are read from their run folders' metrics.json, which hold the path
    # they were written with (here: the reference folder's); the job's metrics.json must not.
    import shutil

    out = tmp_path / "moved"
    shutil.copytree(reference, out)
    code, _, err = run_cli(["reproduce", "--out", out, *JOB, "--jobs", jobs, "--resume"], capsys)
    assert code == 0, err
    mine, ref = results(out), results(reference)
    for key in ("complete", "runs", "baselines", "weights"):
        assert mine[key] == ref[key], key
    assert [r["checkpoint"] for r in mine["runs"]] == [f"runs/{m}/seed0/finetuned.safetensors" for m in RUNS]


def test_resume_with_other_settings_than_a_finished_run_is_one_line(reference, tmp_path, capsys):
    import shutil

    out = tmp_path / "moved"
    shutil.copytree(reference, out)
    before = (out / "metrics.json").read_bytes()
    other = [a if a != "finetune.batch_size=8" else "finetune.batch_size=4" for a in JOB]
    code, _, err = run_cli(["reproduce", "--out", out, *other, "--resume"], capsys)
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "runs/mae/seed0 was made with finetune.batch_size=8, this command gives 4" in err, err
    assert (out / "metrics.json").read_bytes() == before


def test_resume_adds_the_tta_accuracy_to_a_run_finished_without_it(reference, tmp_path, capsys):
    # Runs made before test-time augmentation was measured lack "tta": --resume computes it from the
    # run's fine-tuned checkpoint and test sample, to the number a fresh run records.
    import shutil

    out = tmp_path / "old"
    shutil.copytree(reference, out)
    ref_run = json.loads((reference / "runs" / "mae" / "seed0" / "metrics.json").read_text())
    assert ref_run["tta"]["views"] == 8 and 0 <= ref_run["tta"]["accuracy"] <= 1
    old = {k: v for k, v in ref_run.items() if k != "tta"}
    (out / "runs" / "mae" / "seed0" / "metrics.json").write_text(json.dumps(old))
    code, _, err = run_cli(["reproduce", "--out", out, *JOB, "--resume"], capsys)
    assert code == 0, err
    again = json.loads((out / "runs" / "mae" / "seed0" / "metrics.json").read_text())
    assert again["tta"] == ref_run["tta"]
    assert results(out)["runs"] == results(reference)["runs"]


def _arrays(path: Path) -> dict:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_predictions_agree_with_the_metrics_and_resume_recreates_them(reference, tmp_path, capsys):
    # predictions.npz holds what the report's mistakes figure shows: it must describe the very
    # predictions the run's accuracy counts, and --resume rebuilds it for runs made without it.
    import shutil

    import numpy as np

    for method in RUNS:
        run = reference / "runs" / method / "seed0"
        metrics, p = json.loads((run / "metrics.json").read_text()), _arrays(run / "predictions.npz")
        assert p["probs"].shape == (metrics["n_test"], 3) and np.allclose(p["probs"].sum(1), 1, atol=1e-5)
        wrong = np.flatnonzero(p["probs"].argmax(1) != p["y"])
        assert len(wrong) == metrics["n_test"] - sum(metrics["confusion"][i][i] for i in range(3))
        assert p["error_index"].tolist() == wrong.tolist()
        assert p["error_images"].shape == (len(wrong), 28, 28) and p["error_images"].dtype == np.uint8
    out = tmp_path / "old"
    shutil.copytree(reference, out)
    (out / "runs" / "mae" / "seed0" / "predictions.npz").unlink()
    code, _, err = run_cli(["reproduce", "--out", out, *JOB, "--resume"], capsys)
    assert code == 0, err
    again, ref = (_arrays(d / "runs" / "mae" / "seed0" / "predictions.npz") for d in (out, reference))
    assert again.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(again[k], ref[k], err_msg=k)


def test_a_batched_methods_seeds_pretrain_on_several_workers_and_resume_the_same(tmp_path, capsys):
    """With --jobs 2 and two seeds, MAE's two pretrainings run at once (each worker holds in its
    pretraining epoch 2 until the stop, so both can only be saved at epoch 1 if both ran at the
    same time), then one batched fine-tuning; stopped there and resumed, the job equals --jobs 1,
    where the two seeds pretrain as one batched model: the same numbers, byte for byte."""
    two = [*JOB, "--seeds", "2", "--no-baselines"]
    ref = tmp_path / "ref"
    assert main(["reproduce", "--out", str(ref), *two, "--jobs", "1"]) == 0
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MPLBACKEND="Agg", MNIST_SSL_TEST_HOLD_AT=HOLD_IN_PRETRAIN_EPOCH_2)
    proc = subprocess.Popen([sys.executable, "-m", "mnist_ssl", "reproduce", "--out", str(out), *two,
                             "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        runs = [out / "runs" / "mae" / f"seed{s}" for s in (0, 1)]
        wait_for(lambda: all(saved_epoch(r) == ("pretrain", 1) for r in runs), proc,
                 "both MAE seeds' first pretraining epochs were saved")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    for s in (0, 1):
        assert f"mae seed {s} continues after pretrain epoch 1" in stderr

    code, _, err = run_cli(["reproduce", "--out", out, *two, "--jobs", "2", "--resume"], capsys)
    assert code == 0, err
    mine = json.loads((out / "metrics.json").read_text())["runs"]
    theirs = json.loads((ref / "metrics.json").read_text())["runs"]
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_time_s"}  # noqa: E731
    assert [strip(r) for r in mine] == [strip(r) for r in theirs]
    assert all(r["batched_finetune"] == {"seeds": [0, 1]} for r in mine)
    for r in mine:  # the batched fine-tuning took the pretraining from the saved encoder, not again
        if r["method"] == "mae":
            log = map(json.loads, (out / "runs" / "mae" / f"seed{r['seed']}" / "log.jsonl").read_text().splitlines())
            epochs = sum(line["time_s"] for line in log if line["phase"] == "pretrain")
            assert r["wall_time_s"]["pretrain"] == pytest.approx(epochs, abs=0.01)
    for s in (0, 1):
        for name in ("log.jsonl", "pretrained.safetensors", "finetuned.safetensors"):
            a = (out / "runs" / "mae" / f"seed{s}" / name).read_bytes()
            b = (ref / "runs" / "mae" / f"seed{s}" / name).read_bytes()
            if name == "log.jsonl":  # without the per-epoch times and how many models shared a step
                a, b = ([{k: v for k, v in json.loads(line).items() if k not in ("time_s", "batched_models")}
                         for line in x.splitlines()] for x in (a, b))
            assert a == b, (s, name)
