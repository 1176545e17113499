"""Several processes on the one engine: torch.distributed with DistributedDataParallel.

Launch with torchrun; every process runs the same command:

    torchrun --nproc_per_node=2 -m mnist_ssl pretrain --method infonce ...

What changes when ``WORLD_SIZE`` > 1 (and nothing changes otherwise):

- :func:`init_from_env` joins the process group (gloo on the CPU, nccl on
  CUDA, where process k trains on ``cuda:LOCAL_RANK``).
- The global batch is ``batch_size`` images, as in one process: every rank
  draws the same permutation of the epoch (rank 0's, broadcast), cuts the same
  global batches, and takes its own contiguous slice of each
  (:func:`shard_batches`); ``batch_size`` must be divisible by the number of
  processes. A last partial batch is cut to a multiple of the number of
  processes (at most N - 1 images of an epoch are left out, different ones
  each epoch).
- :func:`prepare_forward` wraps the objective in DistributedDataParallel, which
  averages gradients over the ranks, so a step equals a one-process step on the
  global batch when the loss is a mean over the batch. Ranks other than 0 then
  reseed their random streams (masks, augmentation, dropout differ per rank).
- :func:`gather_with_grad` is how InfoNCE sees the negatives of every rank:
  ``mnist_ssl.losses.nt_xent`` gathers both embedding batches, with gradient.
- :func:`reduce_sums` adds the epoch's loss sums over the ranks for the log.
- Only rank 0 prints and writes files (:func:`is_main`).
- A stop (SIGINT / SIGTERM, which torchrun, SLURM and Kubernetes send to every
  worker) is agreed on before each batch (:func:`agreed_stop`): every rank stops
  at the same batch, so none waits forever in a collective the others left.
- A worker that loses its peers (one was killed, ran out of memory, lost its
  node) stops with :class:`PeerLost`, one line (:func:`peer_guard`); the state
  rank 0 saved at the end of the last completed epoch stays, and the same
  command with ``--resume`` (or torchrun's ``--max-restarts``) continues it.

docs/scaling.md tells how to run on several machines.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from mnist_ssl.errors import ConfigError, MnistSSLError
from mnist_ssl.losses import gather_with_grad  # noqa: F401  (re-exported; it lives beside the loss that uses it)


class PeerLost(MnistSSLError):
    """Another process of the group stopped (killed, out of memory, lost node) during training."""


# ----- who am I ---------------------------------------------------------------
def launched() -> bool:
    """True in a process started by torchrun (or anything that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank; before the group is joined, the launcher's RANK (0 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that prints and writes files."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group described by torchrun's environment, if there is one.

    MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (and LOCAL_RANK) come from the
    launcher. Backend: nccl on CUDA, gloo otherwise. Returns the device this
    process trains on (``cuda:LOCAL_RANK`` on CUDA, else ``device`` unchanged).
    """
    if not launched():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group (at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        # Every rank reaches the barrier before any tears gloo down: a rank that left
        # while its peer still had a collective in flight aborted the peer (SIGABRT in CI).
        with peer_guard():
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """``with process_group(device) as device:`` a command's body under torchrun (nothing in one
    process): joins the group (:func:`init_from_env`), turns a lost peer into :class:`PeerLost`,
    and leaves the group: with a barrier when the body succeeded, at once when it raised (its
    peers stopped too, or are gone; an exiting process that still held a group aborted)."""
    device = init_from_env(device)
    try:
        with peer_guard():
            yield device
    except BaseException:
        abandon()
        raise
    shutdown()


def abandon() -> None:
    """Leave the process group without waiting for the others (after an error: a barrier
    would wait for peers that are gone or stopped elsewhere)."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


# ----- stopping together, and losing a peer ------------------------------------
def agreed_stop(stop_requested: Callable[[], bool], every: int | None = None) -> Callable[[], bool]:
    """``stop_requested`` as every rank sees it: true on all ranks as soon as it is true on one.

    The engine polls it before each batch; across processes each poll is one
    all_reduce (MAX) of a flag, every ``every`` polls (default: each poll with
    gloo; every 16 with nccl, where each is a device sync), so the ranks stop
    at the same batch. One process: ``stop_requested`` itself.
    """
    if not active():
        return stop_requested
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    every = every or (16 if device.type == "cuda" else 1)
    polls = {"n": 0, "stopped": False}

    def poll() -> bool:
        if polls["stopped"]:
            return True
        polls["n"] += 1
        if polls["n"] % every:
            return False
        flag = torch.tensor([1 if stop_requested() else 0], device=device)
        with peer_guard():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        polls["stopped"] = bool(flag.item())
        return polls["stopped"]

    poll.local = stop_requested  # this rank's own flag, read without a collective
    return poll


def _is_peer_failure(e: BaseException) -> bool:
    if isinstance(e, (dist.DistError, ConnectionError)):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        s in text for s in ("connection closed", "connection reset", "broken pipe", "gloo", "nccl",
                            "timed out", "socket", "peer"))


@contextlib.contextmanager
def peer_guard() -> Iterator[None]:
    """Turn the error a collective raises when another rank is gone into :class:`PeerLost`,
    one line. Wrap a command's training (the collectives inside DDP's backward pass too)."""
    try:
        yield
    except RuntimeError as e:
        if not (dist.is_available() and dist.is_initialized()) or not _is_peer_failure(e):
            raise
        detail = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise PeerLost(
            f"rank {dist.get_rank()} of {dist.get_world_size()}: another worker stopped during training "
            f"({detail[:160]}); the state saved at the end of the last completed epoch is kept: "
            "run the same command with --resume to continue"
        ) from None


# ----- the data: one slice of every global batch per rank -----------------------
def num_steps(n: int, batch_size: int) -> int:
    """Steps in an epoch of ``n`` images at global batch ``batch_size`` (see :func:`shard_batches`)."""
    w = world_size()
    if batch_size % w:
        raise ConfigError(f"batch_size={batch_size} is not divisible by the {w} processes: "
                          f"choose a multiple of {w} (the batch is the global batch over all processes)")
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= w else 0)


def shard_batches(perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """An epoch's permutation -> this rank's indices of each global batch.

    One process: ``perm`` cut into batches of ``batch_size``. N processes: rank
    0's permutation is broadcast, each global batch is cut into N equal
    contiguous slices and rank k keeps slice k; the last batch is cut to a
    multiple of N. Gathering the ranks' slices in rank order gives the global
    batch back (what :func:`gather_with_grad` relies on).
    """
    w = world_size()
    if w == 1:
        return list(perm.split(batch_size))
    dist.broadcast(perm, src=0)
    batches = list(perm.split(batch_size))
    last = len(batches[-1]) - len(batches[-1]) % w
    batches[-1] = batches[-1][:last]
    if last == 0:
        batches.pop()
    r = rank()
    return [b.tensor_split(w)[r] for b in batches]


# ----- the model: DDP (and torch.compile) around the objective -----------------
def prepare_forward(module: nn.Module, device: torch.device, compile: bool = False) -> nn.Module:
    """What the engine calls each step: ``module`` itself, DDP-wrapped across processes, compiled on request.

    The engine keeps ``module`` (plain names, for checkpoints and resume) and
    calls the returned wrapper; both share the same parameters.
    """
    forward: nn.Module = module
    if active():
        from torch.nn.parallel import DistributedDataParallel

        # DDP broadcasts rank 0's weights and buffers, so every rank starts equal.
        forward = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        if rank() > 0:
            # Rank 0 keeps the stream of a one-process run; the others get their own.
            torch.manual_seed(torch.initial_seed() + 7919 * rank())
    if compile:
        forward = torch.compile(forward)
    return forward


def reduce_sums(loss_sum: torch.Tensor, seen: int, terms: dict) -> tuple[torch.Tensor, int, dict]:
    """Sum an epoch's (loss * batch) sums, image count and term sums over the ranks (identity in one process)."""
    if not active():
        return loss_sum, seen, terms
    keys = sorted(terms)
    flat = torch.stack([loss_sum.float(), torch.tensor(float(seen), device=loss_sum.device)]
                       + [torch.as_tensor(terms[k], device=loss_sum.device).float() for k in keys])
    dist.all_reduce(flat)
    return flat[0], int(flat[1].item()), {k: flat[2 + i] for i, k in enumerate(keys)}


