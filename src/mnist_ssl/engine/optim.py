"""Optimiser and learning-rate schedule for one training phase."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from mnist_ssl.config import OptimConfig


_BLOCK = re.compile(r"(?:^|\.)encoder\.blocks\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)encoder\.(?:patch_embed|cls_token|pos_embed)\b")


def layer_index(name: str, depth: int) -> int:
    """The encoder layer a parameter belongs to: 0 for the patch/position embeddings and the CLS
    token, i + 1 for transformer block i, ``depth + 1`` for everything above (the final norm,
    the head, a decoder)."""
    block = _BLOCK.search(name)
    if block:
        return int(block.group(1)) + 1
    return 0 if _EMBEDDING.search(name) else depth + 1


def param_groups(module: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """No weight decay on biases, norms, tokens and position tables (1-D parameters), as in MAE/timm.

    ``layer_decay`` < 1 scales each encoder layer's learning rate by
    ``layer_decay ** (depth + 1 - layer)`` (layer-wise decay, BEiT/MAE fine-tuning): the
    embeddings move least, the head at the full rate. The factor is each group's ``lr_scale``,
    which :func:`make_optimizer` multiplies into its learning rate."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    depth = 1 + max((int(m.group(1)) for n, _ in named if (m := _BLOCK.search(n))), default=-1)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in named:
        # Without decay every parameter counts as the top layer: the two groups (and so the
        # numbers) of the runs made before layer_decay existed.
        layer = layer_index(name, depth) if layer_decay != 1.0 else depth + 1
        no_decay = p.ndim <= 1 or p.shape[0] == 1
        group = groups.setdefault((layer, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": layer_decay ** (depth + 1 - layer)})
        group["params"].append(p)
    # Decayed group first, then the rest, top layer first: group 0 carries the head's rate,
    # which is what the per-epoch log reports.
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], k[1]))]


def make_optimizer(module: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam or AdamW over :func:`param_groups`, with the fused kernel where this torch has one for
    the device (CUDA; CPU since torch 2.4; docs/benchmarks.md has the timings), else torch's
    default implementation."""
    # Adam's weight decay is L2 in the gradient; the document used plain Adam.
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    groups = param_groups(module, cfg.weight_decay, cfg.layer_decay)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]
    try:
        return cls(groups, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device / torch
        return cls(groups, lr=cfg.lr)


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
