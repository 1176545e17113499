"""A run's frozen evaluations in a forked child beside its fine-tuning: the same files and
numbers as in the run's own process, the child ended when the run stops, its errors raised."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from mnist_ssl.engine.callbacks import TrainingInterrupted
from mnist_ssl.experiment import beside, run
from mnist_ssl.experiment.batched_runs import run_experiments_batched
from mnist_ssl.experiment.run import run_experiment
from mnist_ssl.objectives.registry import RunConfig

SAME_FILES = ("features.npz", "finetuned.safetensors", "predictions.npz", "log.jsonl")


def tiny(seed: int = 0, method: str = "mae") -> RunConfig:
    cfg = RunConfig(method=method, seed=seed)
    cfg.pretrain.epochs, cfg.finetune.epochs = 1, 2
    cfg.data.train_per_class = cfg.data.test_per_class = 10
    cfg.eval.tta_views = 1
    return cfg


@pytest.fixture
def forks(monkeypatch):
    """Force the decision (a loaded test machine may have no idle core); -> the children started."""
    started = []

    class Recorded(beside.Beside):
        def __init__(self, work):
            super().__init__(work)
            started.append(self)

    def force(spare: bool):
        monkeypatch.setattr(run, "has_spare_core", lambda device_type, threads: spare)
        monkeypatch.setattr(run, "Beside", Recorded)
        return started
    return force


def without_times(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("wall_time_s", "checkpoint")}


def log_lines(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("time_s", "time")}
            for line in path.read_text().splitlines()]


def assert_same_run(a, b, ma: dict, mb: dict) -> None:
    assert without_times(ma) == without_times(mb)
    for name in SAME_FILES[:3]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert log_lines(a / "log.jsonl") == log_lines(b / "log.jsonl")


def test_frozen_evaluations_in_a_child_give_the_run_it_gives_alone(tmp_path, forks):
    started = forks(False)
    here = run_experiment(tiny(), tmp_path / "here", quiet=True, spare_core=True)
    assert started == []
    forks(True)
    child = run_experiment(tiny(), tmp_path / "child", quiet=True, spare_core=True)
    assert len(started) == 1  # the child did the evaluations
    assert_same_run(tmp_path / "here", tmp_path / "child", here, child)
    assert child["linear_probe"] == here["linear_probe"] and child["knn"] == here["knn"]
    assert child["random_init"] == here["random_init"]
    assert child["wall_time_s"]["eval"] > 0  # the child's seconds are counted


def test_a_worker_of_several_never_forks(tmp_path, forks):
    started = forks(True)
    run_experiment(tiny(), tmp_path / "run", quiet=True)  # spare_core=False: pool workers
    assert started == []


def test_batched_seeds_with_their_evaluations_in_a_child_match_each_seed_alone(tmp_path, forks):
    dirs = [tmp_path / "batched" / f"seed{s}" for s in (0, 1)]
    started = forks(True)
    got = run_experiments_batched([tiny(0, "supervised"), tiny(1, "supervised")], dirs, quiet=True, spare_core=True)
    assert len(started) == 1  # one child for the group's runs
    forks(False)
    for s, metrics in zip((0, 1), got):
        alone = run_experiment(tiny(s, "supervised"), tmp_path / "alone" / f"seed{s}", quiet=True)
        assert metrics["linear_probe"] == alone["linear_probe"]
        assert metrics["knn_weighted"] == alone["knn_weighted"]
        assert (dirs[s] / "features.npz").read_bytes() == (tmp_path / "alone" / f"seed{s}" / "features.npz").read_bytes()


def test_a_stopped_run_ends_its_child_and_resumes_to_the_same_result(tmp_path, forks):
    forks(True)
    whole = run_experiment(tiny(method="supervised"), tmp_path / "whole", quiet=True, spare_core=True)
    polls = iter([False] * 3 + [True])  # 30 images, batch 8: a stop in the first epoch
    with pytest.raises(TrainingInterrupted):
        run_experiment(tiny(method="supervised"), tmp_path / "stopped", quiet=True, spare_core=True,
                       stop_requested=lambda: next(polls, True))
    assert multiprocessing.active_children() == []
    resumed = run_experiment(tiny(method="supervised"), tmp_path / "stopped", quiet=True, spare_core=True,
                             resume=True)
    assert without_times(resumed) == without_times(whole)


def test_the_childs_error_is_raised_in_the_run():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"), beside.Beside(lambda: 1 / 0) as child:
        child.result()
    assert beside.Beside(lambda: {"probe": 0.5}).result()[0] == {"probe": 0.5}


def test_no_child_off_the_cpu():
    assert not beside.has_spare_core("cuda", 1)
    assert not beside.has_spare_core("mps", 1)


def test_what_this_process_had_not_written_yet_is_written_once(tmp_path):
    import subprocess
    import sys

    # multiprocessing flushes the standard streams before it forks; os.fork alone would not.
    script = ("import sys; from mnist_ssl.experiment.beside import Beside\n"
              "sys.stdout.write('before the child\\n')\n"  # a pipe: block-buffered, not yet written
              "Beside(lambda: 0).result()\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == "before the child\n"
