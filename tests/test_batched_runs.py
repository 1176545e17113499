"""Several seeds of one method with their fine-tuning batched: the same runs, files and resume."""

from __future__ import annotations

import json

import pytest

from mnist_ssl.engine.callbacks import TrainingInterrupted
from mnist_ssl.experiment.batched_runs import run_experiments_batched
from mnist_ssl.experiment.run import run_experiment
from mnist_ssl.objectives.registry import RunConfig


def tiny(seed: int, method: str = "mae") -> RunConfig:
    cfg = RunConfig(method=method, seed=seed)
    cfg.pretrain.epochs, cfg.finetune.epochs = 1, 2
    cfg.data.train_per_class = cfg.data.test_per_class = 10
    cfg.eval.tta_views = 1
    cfg.eval.linear_probe = cfg.eval.knn = False  # not what is tested here; seconds each
    return cfg


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()
            if json.loads(line)["phase"] == "finetune"]


def test_batched_seeds_give_the_runs_one_at_a_time_give(tmp_path):
    dirs = [tmp_path / "batched" / f"seed{s}" for s in (0, 1)]
    got = run_experiments_batched([tiny(0), tiny(1)], dirs, quiet=True)
    for s, metrics in zip((0, 1), got):
        alone = run_experiment(tiny(s), tmp_path / "alone" / f"seed{s}", quiet=True)
        assert metrics["accuracy"] == alone["accuracy"]
        assert losses(dirs[s]) == pytest.approx(losses(tmp_path / "alone" / f"seed{s}"), rel=1e-5)
        assert metrics["batched_finetune"] == {"seeds": [0, 1]}
        for name in ("metrics.json", "finetuned.safetensors", "predictions.npz", "pretrained.safetensors"):
            assert (dirs[s] / name).exists()
        assert not (dirs[s] / "resume.json").exists()


def test_a_stopped_batched_job_resumes_to_the_same_result(tmp_path):
    cfgs = lambda: [tiny(0, "supervised"), tiny(1, "supervised")]  # noqa: E731
    whole = run_experiments_batched(cfgs(), [tmp_path / "whole" / f"seed{s}" for s in (0, 1)], quiet=True)
    dirs = [tmp_path / "stopped" / f"seed{s}" for s in (0, 1)]
    polls = iter([False] * 4 + [True])  # 30 images, batch 8: the 5th poll starts epoch 2
    with pytest.raises(TrainingInterrupted):
        run_experiments_batched(cfgs(), dirs, quiet=True, stop_requested=lambda: next(polls, True))
    assert all(json.loads((d / "resume.json").read_text())["epoch"] == 1 for d in dirs)
    resumed = run_experiments_batched(cfgs(), dirs, quiet=True, resume=True)
    for a, b, d, w in zip(resumed, whole, dirs, [tmp_path / "whole" / f"seed{s}" for s in (0, 1)]):
        assert a["accuracy"] == b["accuracy"]
        assert losses(d) == losses(w)


def test_reproduce_batches_the_seeds_of_a_method_unless_told_not_to(tmp_path):
    from mnist_ssl.experiment.reproduce import reproduce

    jobs = {}
    for batch in (True, False):
        cfg = tiny(0, "supervised")
        cfg.run.batch_models = batch
        jobs[batch] = reproduce({"supervised": cfg}, tmp_path / str(batch), seeds=2, baselines=False,
                                quiet=True, report=False)
    batched, alone = jobs[True]["runs"], jobs[False]["runs"]
    assert [(r["method"], r["seed"]) for r in batched] == [("supervised", 0), ("supervised", 1)]
    assert [r["batched_finetune"] for r in batched] == [{"seeds": [0, 1]}] * 2
    assert all("batched_finetune" not in r for r in alone)
    assert [r["accuracy"] for r in batched] == [r["accuracy"] for r in alone]


def test_cli_job_with_workers_batches_seeds_and_matches_one_at_a_time(tmp_path):
    from mnist_ssl.cli import main

    job = ["--methods", "mae,supervised", "--seeds", "2", "--no-report", "--no-baselines", "--epochs", "2",
           "--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2",
           "--set", "pretrain.warmup_epochs=0", "--set", "eval.linear_probe=false", "--set", "eval.knn=false",
           "--train-per-class", "10", "--test-per-class", "10", "--device", "cpu", "--quiet"]
    assert main(["reproduce", "--out", str(tmp_path / "b"), "--jobs", "2", *job]) == 0  # a group a worker
    assert main(["reproduce", "--out", str(tmp_path / "u"), "--jobs", "1", *job,
                 "--set", "run.batch_models=false"]) == 0
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["runs"]
    u = json.loads((tmp_path / "u" / "metrics.json").read_text())["runs"]
    assert [(r["method"], r["seed"]) for r in b] == [(r["method"], r["seed"]) for r in u] == \
        [("mae", 0), ("supervised", 0), ("mae", 1), ("supervised", 1)]
    assert all(r["batched_finetune"] == {"seeds": [0, 1]} for r in b)
    assert [r["accuracy"] for r in b] == [r["accuracy"] for r in u]


def test_batched_seeds_run_the_semi_stage_of_each_as_one_at_a_time_does(tmp_path):
    def cfg(seed):
        c = tiny(seed, "supervised")
        c.semi.enabled, c.semi.kind, c.semi.epochs, c.semi.batch_size = True, "fixmatch", 1, 16
        return c

    dirs = [tmp_path / "batched" / f"seed{s}" for s in (0, 1)]
    got = run_experiments_batched([cfg(0), cfg(1)], dirs, quiet=True)
    for s, metrics in zip((0, 1), got):
        alone = run_experiment(cfg(s), tmp_path / "alone" / f"seed{s}", quiet=True)
        assert metrics["semi"]["kind"] == "fixmatch" and metrics["semi"]["unlabelled_images"] == 30
        assert metrics["semi"]["accuracy"] == alone["semi"]["accuracy"]
        assert metrics["accuracy"] == alone["accuracy"]
        assert metrics["wall_time_s"]["total"] >= metrics["wall_time_s"]["semi"] > 0
        phases = [json.loads(line)["phase"] for line in (dirs[s] / "log.jsonl").read_text().splitlines()]
        assert phases[-1] == "semi"


def test_reproduce_batches_seeds_with_the_semi_stage_too(tmp_path):
    from mnist_ssl.experiment.reproduce import reproduce

    cfg = tiny(0, "supervised")
    cfg.semi.enabled, cfg.semi.epochs, cfg.semi.batch_size = True, 1, 16
    runs = reproduce({"supervised": cfg}, tmp_path, seeds=2, baselines=False, quiet=True, report=False)["runs"]
    assert [r["batched_finetune"] for r in runs] == [{"seeds": [0, 1]}] * 2
    assert all(r["semi"]["kind"] == "distill" for r in runs)


def pretrain_losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()
            if json.loads(line)["phase"] == "pretrain"]


def test_mae_seeds_pretrain_as_one_batched_model_with_the_files_of_one_at_a_time(tmp_path):
    from mnist_ssl.engine.checkpoint import load_encoder
    from mnist_ssl.experiment.batched_runs import pretrain_runs
    from mnist_ssl.experiment.run import pretrain_run

    def cfg(seed):
        c = tiny(seed)
        c.pretrain.epochs = 2
        return c

    dirs = [tmp_path / "batched" / f"seed{s}" for s in (0, 1)]
    assert pretrain_runs([cfg(0), cfg(1)], dirs, quiet=True) > 0
    for s, d in zip((0, 1), dirs):
        alone = tmp_path / "alone" / f"seed{s}"
        pretrain_run(cfg(s), alone, quiet=True)
        for name in ("pretrained.safetensors", "pretrained.json", "config.json", "reconstruction.png",
                     "reconstruction.json"):
            assert (d / name).exists(), name
        assert not (d / "resume.json").exists()
        records = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
        assert [r["batched_models"] for r in records] == [2, 2]
        assert pretrain_losses(d) == pytest.approx(pretrain_losses(alone), rel=1e-5)
        batched_check = json.loads((d / "reconstruction.json").read_text())
        alone_check = json.loads((alone / "reconstruction.json").read_text())
        assert batched_check == pytest.approx(alone_check, rel=1e-3)
        assert load_encoder(d / "pretrained.safetensors")[0].cfg == load_encoder(alone / "pretrained.safetensors")[0].cfg


def test_a_stopped_batched_pretraining_resumes_to_the_same_encoders(tmp_path):
    from mnist_ssl.experiment.batched_runs import pretrain_runs

    def cfgs():
        out = [tiny(s) for s in (0, 1)]
        for c in out:
            c.pretrain.epochs = 2
        return out

    whole = [tmp_path / "whole" / f"seed{s}" for s in (0, 1)]
    pretrain_runs(cfgs(), whole, quiet=True)
    dirs = [tmp_path / "stopped" / f"seed{s}" for s in (0, 1)]
    polls = iter([False, True])  # 30 images at batch 32: one step an epoch; the 2nd poll starts epoch 2
    with pytest.raises(TrainingInterrupted):
        pretrain_runs(cfgs(), dirs, quiet=True, stop_requested=lambda: next(polls, True))
    assert all(json.loads((d / "resume.json").read_text())["phase"] == "pretrain" for d in dirs)
    pretrain_runs(cfgs(), dirs, quiet=True, resume=True)
    for d, w in zip(dirs, whole):
        assert pretrain_losses(d) == pretrain_losses(w)
        assert (d / "pretrained.safetensors").read_bytes() == (w / "pretrained.safetensors").read_bytes()


def test_reproduce_pretrains_mae_seeds_batched_unless_told_not_to(tmp_path):
    from mnist_ssl.experiment.reproduce import reproduce

    shared = {}
    for batch in (True, False):
        cfg = tiny(0)
        cfg.run.batch_models = batch
        runs = reproduce({"mae": cfg}, tmp_path / str(batch), seeds=2, baselines=False, quiet=True,
                         report=False)["runs"]
        log = [json.loads(line) for line in
               (tmp_path / str(batch) / "runs" / "mae" / "seed1" / "log.jsonl").read_text().splitlines()]
        shared[batch] = [r.get("batched_models") for r in log]
        # each run counts its share of a shared epoch, so that the runs' times add up to the job's
        assert not batch or runs[1]["wall_time_s"]["pretrain"] == pytest.approx(
            sum(r["time_s"] / r.get("batched_models", 1) for r in log if r["phase"] == "pretrain"), abs=0.01)
    assert shared[True] == [2, 2, 2]  # one pretraining epoch, two fine-tuning epochs, each with both seeds
    assert shared[False] == [None, None, None]
