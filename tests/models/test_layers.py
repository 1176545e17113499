import math

import pytest
import torch

from mnist_ssl.models.layers import Attention, Block, FeedForward


def naive_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V per head, written out by hand."""
    B, N, D = x.shape
    h = attn.heads
    d = D // h
    qkv = attn.qkv(x)
    q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
    outs = []
    for i in range(h):
        qi, ki, vi = (t[..., i * d:(i + 1) * d] for t in (q, k, v))
        w = torch.softmax(qi @ ki.transpose(1, 2) / math.sqrt(d), dim=-1)
        outs.append(w @ vi)
    return attn.proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("dim,heads,n", [(16, 1, 5), (32, 4, 9), (64, 8, 50)])
def test_attention_matches_naive_softmax(dim, heads, n):
    torch.manual_seed(0)
    attn = Attention(dim, heads).eval()
    x = torch.randn(3, n, dim)
    torch.testing.assert_close(attn(x), naive_attention(attn, x), atol=1e-5, rtol=1e-4)


def test_attention_refuses_heads_not_dividing_dim():
    with pytest.raises(ValueError, match="heads=3 does not divide dim=16"):
        Attention(16, 3)


def test_feedforward_uses_gelu_and_dropout():
    ff = FeedForward(8, 32, dropout=0.5)
    x = torch.randn(2, 4, 8)
    ff.eval()
    torch.testing.assert_close(ff(x), ff.fc2(torch.nn.functional.gelu(ff.fc1(x))))
    ff.train()
    torch.manual_seed(0)
    assert not torch.allclose(ff(x), ff(x)), "dropout should make training outputs random"


def test_block_is_pre_norm_residual():
    torch.manual_seed(0)
    blk = Block(16, 2).eval()
    x = torch.randn(2, 5, 16)
    h = x + blk.attn(blk.norm1(x))
    torch.testing.assert_close(blk(x), h + blk.mlp(blk.norm2(h)))
