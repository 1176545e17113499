"""Transformer building blocks: attention, feed-forward, pre-norm block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout's scaled keep mask for ``x`` (same shape and dtype): 0 or 1 / (1 - p), on the CPU.

    One 64-bit random word from torch's global CPU generator gives the
    decisions of four elements (16 bits each), so ``p`` is rounded to a
    multiple of 1/65536.
    """
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits random
    bits = words.view(torch.int16)[:n].view(x.shape)  # uniform in [-32768, 32767]
    dropped = round(p * 65536)
    return (bits >= dropped - 32768).to(x.dtype).mul_(65536 / (65536 - dropped))


if hasattr(torch.library, "custom_op"):  # torch >= 2.4: opaque to torch.compile, no graph break
    _keep_mask_op = torch.library.custom_op("mnist_ssl::keep_mask", _keep_mask, mutates_args=())
    _keep_mask_op.register_fake(lambda x, p: torch.empty_like(x))
else:
    _keep_mask_op = _keep_mask
# The custom op only matters inside a compiled graph; in eager mode its dispatch is pure
# overhead for the same mask (docs/benchmarks.md, the dropout mask).
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on the CPU; ``F.dropout`` elsewhere.

    On the CPU, torch's dropout draws one Bernoulli number per element, which
    measured at a quarter of an MAE train step, and torch.compile's own
    dropout was slower still (docs/benchmarks.md). Here the mask comes from
    :func:`_keep_mask`, about 2-3x faster, also inside a compiled graph (as a
    custom op). On CUDA/MPS, where dropout is a fused kernel, it is ``F.dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0:
            return F.dropout(x, self.p, True, self.inplace)
        keep = (_keep_mask_op if _is_compiling() else _keep_mask)(x.detach(), self.p)
        return x.mul_(keep) if self.inplace else x * keep


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    x: (B, N, D) -> (B, N, D). Heads split D into ``heads`` slices of D/heads.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} does not divide dim={dim}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # Dropout on the attention weights makes SDPA leave its fused kernel
        # (and costs a random number per weight): off unless asked for.
        self.attn_dropout = attn_dropout
        self.proj_drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, D/heads)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(out))


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout. x: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + FFN(LN(x)).

    The residual connections and the LayerNorm before each sub-layer keep
    training stable without a warm-up at these small sizes.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout, attn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform linears, zero biases, unit LayerNorms (as the MAE reference code)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
