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
        "--set", "pretrain.batch_size=16", "--set", "pretrain.epochs=3", "--quiet"]


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
