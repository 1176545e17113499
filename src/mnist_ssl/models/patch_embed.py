"""Patch embedding for images and clips, and position embeddings.

An image is a clip of one frame: both go through one Conv3d whose kernel and
stride are the tubelet (t, p, p), so the image path and the video path share
the same weights and code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """(B, C, T, H, W) -> (B, N, D) with N = T/t * H/p * W/p, tokens ordered (time, row, col)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, tubelet: int = 1) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet = tubelet
        self.proj = nn.Conv3d(
            in_chans, dim, kernel_size=(tubelet, patch_size, patch_size),
            stride=(tubelet, patch_size, patch_size),
        )
        # Initialise like a linear layer on flattened patches (MAE reference code).
        nn.init.xavier_uniform_(self.proj.weight.view(dim, -1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        if self.tubelet == 1:
            # Same maths as the Conv3d, but conv2d over B*T frames is several
            # times faster on CPU for one-frame tubelets.
            y = F.conv2d(x.transpose(1, 2).reshape(B * T, C, H, W),
                         self.proj.weight[:, :, 0], self.proj.bias, stride=self.patch_size)
            D = y.shape[1]
            return y.reshape(B, T, D, -1).permute(0, 1, 3, 2).reshape(B, -1, D)
        y = self.proj(x)  # (B, D, T', H', W')
        return y.flatten(2).transpose(1, 2)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Fixed sin-cos embedding of 1-D positions: (L,) -> (L, dim)."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = positions.double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).float()


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding of a grid x grid patch layout: (grid*grid, dim).

    Half the channels encode the row, half the column (as in MAE's reference code).
    """
    coords = torch.arange(grid)
    rows = coords.repeat_interleave(grid)
    cols = coords.repeat(grid)
    return torch.cat([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], dim=1)


class PositionEmbedding(nn.Module):
    """Separable space + time position embedding for (T' x grid x grid) tokens.

    ``kind="sincos"`` is fixed; ``kind="learned"`` is trained from a small random
    start (truncated normal, std 0.02, as ViT/timm): on 300 MNIST images a ViT
    with it fits its training set within 10 epochs, while with the fixed table
    (amplitude 1 per channel, which swamps 16-pixel patch embeddings) it did not
    (docs/results.md). The time term is used only when there is more than one
    token per spatial position, so an image model and a one-frame clip model
    produce identical tokens.
    """

    def __init__(self, dim: int, grid: int, time_steps: int, kind: str = "sincos") -> None:
        super().__init__()
        self.time_steps = time_steps
        spatial = sincos_2d(dim, grid)
        temporal = sincos_1d(dim, torch.arange(time_steps))
        if kind == "learned":
            self.spatial = nn.Parameter(nn.init.trunc_normal_(torch.empty_like(spatial), std=0.02))
            self.temporal = (nn.Parameter(nn.init.trunc_normal_(torch.empty_like(temporal), std=0.02))
                             if time_steps > 1 else None)
        else:
            self.register_buffer("spatial", spatial, persistent=False)
            self.register_buffer("temporal", temporal if time_steps > 1 else None, persistent=False)

    def forward(self) -> torch.Tensor:
        """The (T'*grid*grid, D) table, tokens ordered (time, row, col)."""
        if self.time_steps == 1:
            return self.spatial
        return (self.temporal[:, None, :] + self.spatial[None, :, :]).reshape(-1, self.spatial.shape[1])
