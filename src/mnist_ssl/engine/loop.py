"""The training engine: one loop for every objective and for fine-tuning.

It knows nothing about methods. Per step it cuts a batch by index from the
uint8 images held on the device, makes the views the objective asks for,
calls the objective, steps the optimiser and the schedule. Per epoch it hands
a record to the callbacks (printing, JSONL log, checkpoints, progress).
Losses are accumulated on the device and read once per epoch: no sync per step.
A non-finite loss stops training at once on the CPU, and within
``CHECK_EVERY`` steps on an accelerator (where each check is a device sync).

Test hook: the environment variable ``MNIST_SSL_TEST_STEP_DELAY`` (seconds)
makes every step sleep that long, so that the reliability tests can interrupt
or kill a tiny run in the middle of an epoch (docs/reliability.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn

from mnist_ssl.config import OptimConfig
from mnist_ssl.engine import distributed
from mnist_ssl.engine.optim import make_optimizer, make_schedule
from mnist_ssl.errors import TrainingDiverged

# Steps between two finiteness checks of the loss on an accelerator (each is a sync).
CHECK_EVERY = 16


class Callback(Protocol):
    def on_step(self, state: "TrainState") -> None: ...
    def on_epoch_end(self, state: "TrainState", record: dict) -> None: ...


@dataclass
class TrainState:
    """What the loop and its callbacks share; also what a resumable checkpoint holds."""

    phase: str
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    steps_per_epoch: int
    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps in total
    history: list[dict] = field(default_factory=list)
    stop_requested: Callable[[], bool] = lambda: False


def _batch_order(n: int, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    # The permutation comes from torch's global RNG, which is seeded per phase
    # and saved with resumable state, so a resumed epoch sees the same order.
    perm = torch.randperm(n).to(device)
    return distributed.shard_batches(perm, batch_size)  # one process: perm.split(batch_size)


class FiniteGuard:
    """Stops training at the first non-finite loss, naming the epoch, step and loss term.

    On the CPU each loss is checked before its backward pass (no NaN ever reaches
    the weights). On an accelerator the losses are kept on the device and checked
    together every ``every`` steps and at the end of each epoch, so there is no
    sync per step; the weights of the few steps after a bad one are never saved,
    because the epoch-end check runs before the callbacks that write files.
    """

    def __init__(self, phase: str, device: torch.device, every: int = CHECK_EVERY) -> None:
        self.phase = phase
        self.every = 1 if device.type == "cpu" else every
        self.pending: list[tuple[int, int, torch.Tensor, dict[str, torch.Tensor]]] = []

    def add(self, epoch: int, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """epoch, step: 1-based, within the phase and the epoch."""
        self.pending.append((epoch, step, loss.detach(), {k: v.detach() for k, v in terms.items()}))
        if len(self.pending) >= self.every:
            self.check()

    def check(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        finite = torch.isfinite(torch.stack([p[2].float() for p in pending]))
        if bool(finite.all()):
            return
        epoch, step, loss, terms = pending[int((~finite).nonzero()[0, 0])]
        bad = [k for k, v in terms.items() if not bool(torch.isfinite(v).all())]
        raise TrainingDiverged(
            f"{self.phase}: loss became {loss.item()} at epoch {epoch}, step {step} "
            f"(loss term {', '.join(bad) or 'loss'}); training stopped, and only what finished epochs "
            f"wrote is kept; try a lower learning rate or --set {self.phase}.grad_clip=1.0"
        )


def _step_delay() -> float:
    """The test hook MNIST_SSL_TEST_STEP_DELAY, in seconds (0 when unset or not a number)."""
    try:
        return max(0.0, float(os.environ.get("MNIST_SSL_TEST_STEP_DELAY", "0") or 0))
    except ValueError:
        return 0.0


def train(
    module: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    cfg: OptimConfig,
    *,
    phase: str,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    callbacks: list = (),
    resume: dict | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    compile: bool = False,
) -> TrainState:
    """Train ``module`` (an Objective) for ``cfg.epochs`` epochs.

    images: uint8 (N, C, H, W) on the training device; labels: (N,) class
    indices or None; view: makes one augmented view (float in [0, 1]) of a
    float batch; called ``module.views`` times per step.
    resume: a saved state from :func:`mnist_ssl.engine.resume.load_train_state`;
    training continues after its last completed epoch, RNG states included.
    stop_requested: polled before every batch; when true, raises
    :class:`~mnist_ssl.engine.callbacks.TrainingInterrupted` (the last epoch's
    state, saved by a callback, is what a resume starts from).
    compile: call the objective through ``torch.compile`` (``module`` keeps its plain names).
    Under torchrun the objective runs in DistributedDataParallel (engine/distributed.py);
    on CUDA the forward pass runs under bf16 autocast.
    """
    from mnist_ssl.engine.callbacks import TrainingInterrupted

    device = images.device
    n = images.shape[0]
    steps_per_epoch = distributed.num_steps(n, cfg.batch_size)  # one process: ceil(n / batch_size)
    optimizer = make_optimizer(module, cfg, device)
    scheduler = make_schedule(optimizer, cfg, steps_per_epoch)
    state = TrainState(phase, module, optimizer, scheduler, cfg.epochs, steps_per_epoch,
                       stop_requested=stop_requested)
    if resume is not None:
        from mnist_ssl.engine.resume import restore_train_state

        restore_train_state(state, resume)
    n_views = getattr(module, "views", 1)
    # An objective's own per-step update after the optimiser's (DINO's EMA teacher), with the
    # completed steps and the phase's total; objectives without one train exactly as before.
    after_step = getattr(module, "after_step", None)
    total_steps = cfg.epochs * steps_per_epoch
    params = [p for p in module.parameters() if p.requires_grad]
    guard = FiniteGuard(phase, device)
    delay = _step_delay()
    forward = distributed.prepare_forward(module, device, compile=compile)
    module.train()

    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        term_sums: dict[str, torch.Tensor] = {}
        seen = 0
        for step_in_epoch, idx in enumerate(_batch_order(n, cfg.batch_size, device)):
            if state.stop_requested():
                raise TrainingInterrupted(phase, epoch + 1)
            x = images[idx].float().div_(255.0)
            views = [view(x) if view is not None else x for _ in range(n_views)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = forward(views, labels[idx] if labels is not None else None)
            guard.add(epoch + 1, step_in_epoch + 1, out.loss, out.terms)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            b = idx.numel()
            seen += b
            loss_sum += out.loss.detach() * b
            for k, v in out.terms.items():
                term_sums[k] = term_sums.get(k, 0) + v.detach().float() * b
            state.step += 1
            if after_step is not None:
                after_step(state.step, total_steps)
            for cb in callbacks:
                cb.on_step(state)
            if delay:
                time.sleep(delay)
        guard.check()  # before anything of this epoch is written
        loss_sum, seen, term_sums = distributed.reduce_sums(loss_sum, seen, term_sums)
        state.epoch = epoch + 1
        record = {
            "phase": phase,
            "epoch": state.epoch,
            "epochs": cfg.epochs,
            "loss": (loss_sum / seen).item(),
            "terms": {k: (v / seen).item() for k, v in term_sums.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "time_s": round(time.perf_counter() - t0, 4),
        }
        state.history.append(record)
        for cb in callbacks:
            cb.on_epoch_end(state, record)
    module.eval()
    return state
