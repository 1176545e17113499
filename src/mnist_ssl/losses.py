"""NT-Xent, the InfoNCE loss of SimCLR (Chen et al., 2020), on two batches of embeddings.

The loss takes the two embedding batches and a temperature, nothing else, so
that across processes (torchrun) it can gather ``z1`` and ``z2`` from every
process, with gradient (:func:`gather_with_grad`), and compute the same loss of
the global batch on each. This module depends on torch alone.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the summed gradient of its own slice.

    Every rank computes the same loss of the gathered batch, so each rank's
    gradient of its slice is the same; summing them over the ranks (all_reduce)
    and letting DDP average the weight gradients gives exactly the gradient of
    the loss in one process.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        g = torch.stack([x.contiguous() for x in grads])
        dist.all_reduce(g)
        return g[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each of N ranks -> (N * n, ...), slices in rank order; identity in one process.

    Gradients flow back to every rank's ``x``. Every rank must compute the same loss of the
    result, and ``n`` must be equal on every rank (the engine's batch sharding makes it so).
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x
    return torch.cat(_GatherWithGrad.apply(x))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool = True) -> torch.Tensor:
    """Normalised-temperature cross-entropy over the 2N views of a batch.

    z1, z2: (N, D) embeddings of two views of the same N images (row i of z1
    and row i of z2 are a positive pair). Each embedding is L2-normalised;
    the logits are the cosine similarities divided by ``temperature``. Each of
    the 2N views is an anchor whose positive is the other view of its image
    and whose negatives are the other 2N - 2 views. Returns the mean over the
    2N anchors (a scalar), so it is symmetric in ``z1`` and ``z2``.
    gather: across processes, first collect ``z1`` and ``z2`` of every rank with
    gradient (:func:`gather_with_grad`), so the negatives are those of the global
    batch and every rank computes the same loss.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent needs two (N, D) batches of the same shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    n = z1.shape[0]
    z = torch.cat([z1, z2])
    z = F.normalize(z.to(torch.promote_types(z.dtype, torch.float32)), dim=1)  # (2N, D), >= fp32
    logits = z @ z.t() / temperature  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    positives = torch.cat([idx + n, idx])  # anchor i <-> i + N
    return F.cross_entropy(logits, positives)
