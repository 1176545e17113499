"""Several processes (engine/distributed.py): 2 CPU processes with gloo on 127.0.0.1.

The two processes are spawned with the environment torchrun gives them (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which is all that
``torchrun --nproc_per_node=2 -m mnist_ssl pretrain ...`` adds; spawning them
here saves the launcher's start-up. They check that

- the gradient of NT-Xent on gathered embeddings, averaged by DDP over 2 ranks,
  equals the one-process gradient on the global batch (to 1e-5);
- ``mnist-ssl pretrain`` on 2 processes gives the loss curve of one process
  with the same global batch (16): InfoNCE without dropout or augmentation is
  deterministic, so the curves agree to 1e-4 (relative) per epoch;
- only rank 0 writes files and prints.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mnist_ssl.cli import main
from mnist_ssl.engine import distributed

TINY = ["--data", "embedded", "--classes", "0,1,2", "--train-per-class", "16", "--test-per-class", "4",
        "--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2",
        "--set", "model.dropout=0.0", "--set", "pretrain_augment.enabled=false",
        "--set", "pretrain.batch_size=16", "--set", "pretrain.epochs=3", "--set", "pretrain.warmup_epochs=0",
        "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- one process: everything is the identity ----------------------------------
def test_one_process_is_unchanged():
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    perm = torch.randperm(10)
    assert [b.tolist() for b in distributed.shard_batches(perm, 4)] == [b.tolist() for b in perm.split(4)]
    assert distributed.num_steps(10, 4) == 3
    x = torch.randn(3, 2)
    assert distributed.gather_with_grad(x) is x
    total, seen, terms = distributed.reduce_sums(torch.tensor(2.0), 5, {"a": torch.tensor(1.0)})
    assert seen == 5 and total.item() == 2.0 and terms["a"].item() == 1.0


# ----- two processes: what torchrun starts, spawned here --------------------------
def _worker(rank: int, port: int, world: int, tmp: str) -> None:
    """One rank, with torchrun's environment: a gradient check, then ``mnist-ssl pretrain``."""
    import contextlib
    import io

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                      RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mnist_ssl.losses import nt_xent

    dist.init_process_group("gloo", rank=rank, world_size=world)
    # 1. NT-Xent of the gathered embeddings, gradients averaged by DDP, against one
    #    process on the global batch.
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5))
    x1, x2 = torch.randn(8, 6), torch.randn(8, 6)  # the global batch, the same on every rank
    loss_ref = nt_xent(head(x1), head(x2), 0.2, gather=False)
    ref_grads = torch.autograd.grad(loss_ref, list(head.parameters()))
    ddp = DistributedDataParallel(head)
    n = x1.shape[0] // world
    mine = slice(rank * n, (rank + 1) * n)
    loss = nt_xent(ddp(x1[mine]), ddp(x2[mine]), 0.2)  # gathers with gradient
    loss.backward()
    grads = {"loss": loss.item(), "loss_ref": loss_ref.item(),
             "max_err": max((p.grad - g).abs().max().item() for p, g in zip(head.parameters(), ref_grads)),
             "max_grad": max(g.abs().max().item() for g in ref_grads)}
    # 2. The pretrain command as torchrun runs it (the process group is already joined).
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["pretrain", "--method", "infonce", "--out", str(Path(tmp, "two")), *TINY])
    Path(tmp, f"rank{rank}.json").write_text(json.dumps({**grads, "code": code, "stdout": out.getvalue(),
                                                         "stderr": err.getvalue()}))


def _curve(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def test_two_processes_match_one_process(tmp_path, capsys):
    # spawn, not fork: forking the test process (threads of earlier tests, torch's thread pool)
    # once left a child waiting forever on a lock copied in its locked state (CI hung).
    mp.start_processes(_worker, args=(_free_port(), 2, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        assert r["code"] == 0, r["stderr"]
        assert r["loss"] == pytest.approx(r["loss_ref"], rel=1e-6)
        assert r["max_grad"] > 1e-3  # the check has teeth: the gradient is not ~0
        assert r["max_err"] < 1e-5, r
    # Only rank 0 prints and writes.
    assert "pretrained checkpoint:" in ranks[0]["stdout"] and ranks[1]["stdout"] == "", ranks
    two = tmp_path / "two"
    assert (two / "pretrained.safetensors").exists() and (two / "config.json").exists()
    # One process, the same global batch of 16: the same loss curve.
    one = tmp_path / "one"
    assert main(["pretrain", "--method", "infonce", "--out", str(one), *TINY]) == 0
    c1, c2 = _curve(one), _curve(two)
    assert len(c1) == len(c2) == 3  # one log line per epoch: rank 1 wrote none
    for a, b in zip(c1, c2):
        # Sums over two shards round differently from one sum: agree to 1e-3 after 3 epochs.
        assert b == pytest.approx(a, rel=1e-3), (c1, c2)


def test_batch_must_divide_among_processes():
    # num_steps is where the engine checks it; in one process any batch size is fine.
    assert distributed.num_steps(7, 3) == 3


# ----- a worker killed, or every worker sent SIGTERM, in the middle of training ------
EPOCHS = 3


class _Toy(torch.nn.Module):
    """A deterministic objective (no dropout, no augmentation): a loss curve to compare exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 1)

    def forward(self, views, labels=None):
        from mnist_ssl.objectives.base import ObjectiveOutput

        x = views[0].flatten(1)[:, 200:208]
        loss = (self.lin(x) - x.mean(1, keepdim=True)).pow(2).mean()
        return ObjectiveOutput(loss, {"mse": loss.detach()})


def _train_rank(rank: int, port: int, tmp: str, resume: bool, hold: str) -> None:
    """One rank of a 2-process training run of _Toy (rank 0 saves the resume state in TMP each
    epoch); SIGTERM stops it as Ctrl-C does. ``hold``: MNIST_SSL_TEST_HOLD_AT (rank 0 waits there
    for its stop). Writes TMP/result<rank>.json."""
    import signal

    from mnist_ssl.config import OptimConfig
    from mnist_ssl.engine.callbacks import TrainingInterrupted
    from mnist_ssl.engine.loop import train
    from mnist_ssl.engine.resume import ResumeWriter, load_train_state
    from mnist_ssl.errors import MnistSSLError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                      RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MNIST_SSL_TEST_HOLD_AT=hold)
    torch.set_num_threads(1)
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.update(requested=True))
    result: dict = {}
    steps: list[int] = []

    class Steps:
        def on_step(self, state):
            steps.append(state.step)

        def on_epoch_end(self, state, record):
            pass

    try:
        with distributed.process_group(torch.device("cpu")):
            torch.manual_seed(1)
            images = torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8)  # 6 steps an epoch
            saved = load_train_state(tmp) if resume else None
            callbacks = [Steps()] + ([ResumeWriter(tmp, {}, Path(tmp, "log.jsonl"))] if rank == 0 else [])
            state = train(_Toy(), images, None, OptimConfig(epochs=EPOCHS, batch_size=4, lr=1e-2),
                          phase="pretrain", callbacks=callbacks, resume=saved,
                          stop_requested=distributed.agreed_stop(lambda: stop["requested"]))
            result["losses"] = [r["loss"] for r in state.history]
    except MnistSSLError as e:
        result.update(error=type(e).__name__, message=str(e))
        if isinstance(e, TrainingInterrupted):
            result["step"] = steps[-1] if steps else 0
    Path(tmp, f"result{rank}.json").write_text(json.dumps(result))
    # Leave as a forked worker does (os._exit, no interpreter teardown): in a spawned rank the
    # teardown destroys gloo's threads after a stop and aborts (std::terminate); the CLI's own
    # exit under torchrun is checked by the torchrun test below.
    os._exit(0)


def _start(tmp: Path, resume: bool = False, hold: str = ""):
    # spawn: each rank is a fresh interpreter. A fork of the test process could inherit a lock
    # held by one of its threads, and the forkserver is one per test process: when an earlier
    # test (a reproduce pool) started it, ranks forked from it hung in the full suite.
    return mp.start_processes(_train_rank, args=(_free_port(), str(tmp), resume, hold), nprocs=2,
                              join=False, start_method="spawn")


def _wait_for_epoch_1(ctx, tmp: Path, timeout: float = 300.0) -> None:
    """Until rank 0 has committed the state of epoch 1 (resume.json), not for a time."""
    import time

    t0 = time.monotonic()
    while True:
        try:
            if json.loads((tmp / "resume.json").read_text())["epoch"] >= 1:
                return
        except (OSError, ValueError):
            pass
        assert all(p.is_alive() for p in ctx.processes), "a rank ended before epoch 1 was saved"
        assert time.monotonic() - t0 < timeout, "epoch 1 was not saved in time"
        time.sleep(0.02)


def _join(ctx) -> list[int]:
    for p in ctx.processes:
        p.join(300)
        assert not p.is_alive(), "a rank did not stop"
    return [p.exitcode for p in ctx.processes]


def _result(tmp: Path, rank: int) -> dict:
    return json.loads((tmp / f"result{rank}.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[float]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    assert _join(_start(tmp)) == [0, 0]
    return _result(tmp, 0)["losses"]


@pytest.mark.parametrize("how", ["kill rank 1", "kill rank 0", "sigterm"])
def test_a_worker_lost_or_stopped_then_resumed_gives_the_uninterrupted_curve(tmp_path, uninterrupted, how):
    """Rank 0 holds after step 2 of epoch 2 (MNIST_SSL_TEST_HOLD_AT) until it is asked to stop, so
    the signals, sent once epoch 1's state is on disk, land in epoch 2 however busy the machine."""
    import signal

    from mnist_ssl.engine.resume import load_train_state

    ctx = _start(tmp_path, hold="pretrain:8")  # 6 steps an epoch
    _wait_for_epoch_1(ctx, tmp_path)
    pids = [p.pid for p in ctx.processes]
    if how == "sigterm":  # what torchrun, SLURM and Kubernetes send to every worker
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
    else:
        victim = int(how[-1])
        os.kill(pids[victim], signal.SIGKILL)
        ctx.processes[victim].join(300)
        if victim == 1:  # torchrun then sends SIGTERM to the survivors
            os.kill(pids[0], signal.SIGTERM)
    codes = _join(ctx)
    assert load_train_state(tmp_path)["meta"]["epoch"] == 1, "the state of the last completed epoch stays"
    if how == "sigterm":
        assert codes == [0, 0]
        r0, r1 = _result(tmp_path, 0), _result(tmp_path, 1)
        assert r0["error"] == r1["error"] == "TrainingInterrupted", (r0, r1)
        assert r0["step"] == r1["step"], "both ranks stop at the same batch"
        assert 6 <= r0["step"] <= 8, "in epoch 2, by the hold point"
    else:
        survivor = 1 - int(how[-1])
        assert codes[survivor] == 0  # no abort: the survivor left its process group
        r = _result(tmp_path, survivor)
        assert r["error"] == "PeerLost", r
        assert "\n" not in r["message"] and "another worker stopped" in r["message"] and "--resume" in r["message"]
    # --resume: both ranks start again from the saved epoch and reach the uninterrupted curve.
    for rank in (0, 1):
        (tmp_path / f"result{rank}.json").unlink(missing_ok=True)
    assert _join(_start(tmp_path, resume=True)) == [0, 0]
    assert _result(tmp_path, 0)["losses"] == pytest.approx(uninterrupted, rel=1e-6)


# ----- the same through torchrun and the CLI ----------------------------------------
def _workers(torchrun_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun started (its children, by their RANK)."""
    children = Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        try:
            env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
        except OSError:
            continue
        if "RANK" in env:
            ranks[int(env["RANK"])] = pid
    return ranks


def _torchrun(out: Path, *extra: str, hold: str = ""):
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MPLBACKEND="Agg", GLOO_SOCKET_IFNAME="lo",
               MNIST_SSL_TEST_HOLD_AT=hold)
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "--max-restarts=0", "-m", "mnist_ssl", "pretrain", "--method", "infonce",
                             "--out", str(out), *TINY, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_torchrun_worker_killed_then_resume_gives_the_uninterrupted_curve(tmp_path, capsys):
    """``torchrun --nproc_per_node=2 -m mnist_ssl pretrain``: rank 1 is SIGKILLed in epoch 2 (rank 0
    holds there until torchrun, seeing the dead worker, sends it SIGTERM); the survivor's error is
    one line, the epoch-1 state stays, and ``--resume`` gives the curve of an uninterrupted run."""
    import signal
    import time

    out = tmp_path / "two"
    proc = _torchrun(out, hold="pretrain:4")  # 48 images in batches of 16: step 1 of epoch 2
    try:
        t0 = time.monotonic()
        while True:
            try:
                if json.loads((out / "resume.json").read_text())["epoch"] == 1:
                    break
            except (OSError, ValueError):
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 300, "epoch 1 was not saved in time"
            time.sleep(0.02)
        os.kill(_workers(proc.pid)[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("mnist-ssl:")]
    assert len(ours) == 1 and "another worker stopped" in ours[0] and "--resume" in ours[0], err
    assert json.loads((out / "resume.json").read_text())["epoch"] == 1
    assert len(_curve(out)) == 1

    proc = _torchrun(out, "--resume")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert not (out / "resume.json").exists()
    one = tmp_path / "one"
    assert main(["pretrain", "--method", "infonce", "--out", str(one), *TINY]) == 0
    c1, c2 = _curve(one), _curve(out)
    assert len(c2) == 3
    for a, b in zip(c1, c2):
        assert b == pytest.approx(a, rel=1e-3), (c1, c2)
