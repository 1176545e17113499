"""Optimiser and learning-rate schedule for one training phase."""

from __future__ import annotations

import math

import torch
from torch import nn

from mnist_ssl.config import OptimConfig


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, tokens and position tables (1-D parameters), as in MAE/timm."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or p.shape[0] == 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(module: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    # The fused kernels exist on CUDA (and on CPU in recent torch); foreach elsewhere.
    kwargs: dict = {"lr": cfg.lr}
    if device.type == "cuda":
        kwargs["fused"] = True
    if cfg.optimizer == "adam":
        # Adam's weight decay is L2 in the gradient; the document used plain Adam.
        return torch.optim.Adam(param_groups(module, cfg.weight_decay), **kwargs)
    return torch.optim.AdamW(param_groups(module, cfg.weight_decay), **kwargs)


def make_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    """Per-step LambdaLR: linear warm-up over ``warmup_epochs``, then cosine to 0 (or constant)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
