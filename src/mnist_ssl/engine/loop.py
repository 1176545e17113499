"""The training engine: one loop for every objective and for fine-tuning.

It knows nothing about methods. Per step it cuts a batch by index from the
uint8 images held on the device, makes the views the objective asks for,
calls the objective, steps the optimiser and the schedule. Per epoch it hands
a record to the callbacks (printing, JSONL log, checkpoints, progress).
Losses are accumulated on the device and read once per epoch: no sync per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn

from mnist_ssl.config import OptimConfig
from mnist_ssl.engine.optim import make_optimizer, make_schedule
from mnist_ssl.errors import TrainingDiverged


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
    return list(perm.split(batch_size))


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
) -> TrainState:
    """Train ``module`` (an Objective) for ``cfg.epochs`` epochs.

    images: uint8 (N, C, H, W) on the training device; labels: (N,) class
    indices or None; view: makes one augmented view (float in [0, 1]) of a
    float batch; called ``module.views`` times per step.
    resume: a state dict from :func:`mnist_ssl.engine.checkpoint.load_resume_state`.
    """
    device = images.device
    n = images.shape[0]
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    optimizer = make_optimizer(module, cfg, device)
    scheduler = make_schedule(optimizer, cfg, steps_per_epoch)
    state = TrainState(phase, module, optimizer, scheduler, cfg.epochs, steps_per_epoch,
                       stop_requested=stop_requested)
    if resume is not None:
        from mnist_ssl.engine.checkpoint import restore_train_state

        restore_train_state(state, resume)
    n_views = getattr(module, "views", 1)
    params = [p for p in module.parameters() if p.requires_grad]
    module.train()

    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        term_sums: dict[str, torch.Tensor] = {}
        seen = 0
        for step_in_epoch, idx in enumerate(_batch_order(n, cfg.batch_size, device)):
            x = images[idx].float().div_(255.0)
            views = [view(x) if view is not None else x for _ in range(n_views)]
            out = module(views, labels[idx] if labels is not None else None)
            if not torch.isfinite(out.loss):
                bad = [k for k, v in out.terms.items() if not torch.isfinite(v).all()]
                raise TrainingDiverged(
                    f"{phase}: loss became {out.loss.item()} at epoch {epoch + 1}, step "
                    f"{step_in_epoch + 1} (term {', '.join(bad) or 'loss'}); the last good "
                    f"checkpoint is kept; try a lower learning rate or --set {phase}.grad_clip=1.0"
                )
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
            for cb in callbacks:
                cb.on_step(state)
            if state.stop_requested():
                from mnist_ssl.engine.callbacks import TrainingInterrupted

                raise TrainingInterrupted(phase, epoch + 1)
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
