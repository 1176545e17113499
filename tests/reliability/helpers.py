"""Helpers of the reliability tests: a tiny job, and ways to run it and compare two runs.

The tiny job: MAE and the supervised baseline, a 1-block 32-wide ViT, 10 train
and 10 test images per class of 0-2, 2 epochs of 4 batches per phase, 1 thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mnist_ssl.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"

TINY = ["--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2",
        "--train-per-class", "10", "--test-per-class", "10", "--threads", "1", "--quiet"]
# 30 training images in batches of 8: 4 steps per epoch, 2 epochs per phase.
# Warm-up pinned to 0: the methods' presets warm up for more epochs than the tiny job has.
# --jobs 1: the runs in this process, where the tests patch the engine and the file system
# (reproduce's default is one worker per core).
JOB = ["--methods", "mae,supervised", "--no-baselines", "--no-report", "--epochs", "2", "--jobs", "1",
       "--set", "pretrain.batch_size=8", "--set", "finetune.batch_size=8", "--set", "pretrain.warmup_epochs=0",
       *TINY]
RUNS = ("mae", "supervised")


def job(methods: str) -> list[str]:
    """JOB with other methods (each run's result does not depend on the others)."""
    args = list(JOB)
    args[args.index("--methods") + 1] = methods
    return args


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``mnist-ssl ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> str:
    """Assert the CLI's bad-input contract: exit 2, exactly one stderr line holding every needle."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# MAE's pretraining step 6 is step 2 of epoch 2 (4 steps an epoch): a job started with this hold
# waits there, after epoch 1's state is committed, until it is signalled (ResumeWriter's test hook).
HOLD_IN_PRETRAIN_EPOCH_2 = "pretrain:6"


def start_job(out: Path, *extra: str, hold: str = "", cwd: Path | None = None) -> subprocess.Popen:
    """``python -m mnist_ssl reproduce --out OUT <JOB>`` in a subprocess; ``hold``: where it waits
    for a stop (MNIST_SSL_TEST_HOLD_AT, e.g. HOLD_IN_PRETRAIN_EPOCH_2; none by default)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               MNIST_SSL_TEST_HOLD_AT=hold)
    return subprocess.Popen([sys.executable, "-m", "mnist_ssl", "reproduce", "--out", str(out), *JOB, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def log_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return out


def run_result(out: Path, method: str) -> dict:
    """What must be identical between two runs of the same job: metrics, losses, weights."""
    run = out / "runs" / method / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("wall_time_s")
    metrics["checkpoint"] = "/".join(Path(metrics["checkpoint"]).parts[-4:])  # absolute in the run's file
    losses = [{k: r[k] for k in ("phase", "epoch", "loss", "terms", "lr")} for r in log_lines(run)]
    weights = {p.name: p.read_bytes() for p in sorted(run.glob("*.safetensors"))}
    return {"metrics": metrics, "losses": losses, "weights": weights}


def assert_same_job(a: Path, b: Path, methods: tuple[str, ...] = RUNS) -> None:
    """The runs of ``methods`` in job folders a and b have identical losses, metrics and weights,
    and b's runs left no resume files behind."""
    for method in methods:
        ra, rb = run_result(a, method), run_result(b, method)
        assert ra["losses"] == rb["losses"], method
        assert ra["metrics"] == rb["metrics"], method
        assert ra["weights"].keys() == rb["weights"].keys(), method
        for name in ra["weights"]:
            assert ra["weights"][name] == rb["weights"][name], (method, name)
        leftovers = sorted(p.name for p in (b / "runs" / method / "seed0").glob("resume*"))
        assert not leftovers, f"resume files left after the run finished: {leftovers}"


def saved_epoch(run_dir: Path) -> tuple[str, int] | None:
    """(phase, epoch) of the resume state committed in ``run_dir`` (resume.json), or None.

    resume.json is written atomically (temp file + rename) and is the commit point of a save,
    so a file that parses is a complete state.
    """
    try:
        saved = json.loads((run_dir / "resume.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved.get("phase"), saved.get("epoch")


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    """Poll ``condition()`` until true; fail if ``proc`` ends first or ``timeout`` s pass."""
    t0 = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended ({proc.returncode}) before {what}: {proc.communicate()[1]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} did not happen in {timeout:.0f} s")
        time.sleep(0.02)


class SignalledJobs:
    """The tiny job three times, side by side in subprocesses, each signalled in MAE's pretraining
    epoch 2: "kill" gets SIGKILL, "int" SIGINT (Ctrl-C), "term" SIGTERM (what SLURM, Kubernetes
    and `timeout` send before they kill).

    The signal goes as soon as the state of epoch 1 is committed to disk (resume.json), the
    state the tests need; each job holds after step 2 of epoch 2 until it is signalled
    (HOLD_IN_PRETRAIN_EPOCH_2), so epoch 2 cannot end before the signal however busy the
    machine is, and no step waits for a fixed time. A watcher thread does the waiting, so the
    jobs run while other tests do. Both stop before the first figure and probe, so the
    subprocesses never import matplotlib or scikit-learn.
    """

    PLANS = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mnist-ssl-signalled-"))
        self.procs = {name: start_job(self.root / name, hold=HOLD_IN_PRETRAIN_EPOCH_2) for name in self.PLANS}
        self.error: str | None = None
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        signalled: set[str] = set()
        t0 = time.monotonic()
        while len(signalled) < len(self.PLANS):
            for name, sig in self.PLANS.items():
                proc = self.procs[name]
                if name in signalled:
                    continue
                if proc.poll() is not None:
                    self.error = f"job {name} ended ({proc.returncode}) before its signal"
                    return
                if saved_epoch(self.root / name / "runs" / "mae" / "seed0") == ("pretrain", 1):
                    proc.send_signal(sig)
                    signalled.add(name)
            if time.monotonic() - t0 > 600:
                self.error = "the jobs did not commit their first epoch in 600 s"
                return
            time.sleep(0.02)

    def results(self) -> dict:
        """{name: (out folder, return code, stdout, stderr)} once both jobs have ended."""
        self.thread.join()  # the watcher gives up by itself after its own 600 s
        if self.error:
            self.close()
            raise AssertionError(self.error + ": " + " | ".join(p.communicate()[1] for p in self.procs.values()))
        outputs = {name: proc.communicate(timeout=120) for name, proc in self.procs.items()}
        return {name: (self.root / name, self.procs[name].returncode, *outputs[name]) for name in self.procs}

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def tiny_state(value: float):
    """A TrainState of a 3->2 linear layer whose weights all equal ``value`` (epoch 1 of 2)."""
    import torch

    from mnist_ssl.engine.loop import TrainState
    from mnist_ssl.engine.optim import make_optimizer, make_schedule
    from mnist_ssl.config import OptimConfig

    module = torch.nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.fill_(value)
    cfg = OptimConfig(epochs=2, batch_size=4)
    opt = make_optimizer(module, cfg, torch.device("cpu"))
    return TrainState("pretrain", module, opt, make_schedule(opt, cfg, 1), 2, 1, epoch=1, step=1)
