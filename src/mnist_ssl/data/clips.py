"""Clips made from still digits, built on the batch's device (the data layer's half of Video MAE).

- ``replicate`` (the source document's): the image repeated ``frames`` times,
  so there is no temporal signal at all.
- ``motion``: frame 0 is the image; each later frame is the previous one moved
  by a small random rotation and shift (a random walk, one per image). Frame k
  is sampled from the original image with the composed transform of steps 1..k,
  so frames do not blur by repeated resampling. One ``affine_grid`` +
  ``grid_sample`` call for the whole batch: no per-image Python.

Objectives mask; this module only builds clips, and knows nothing about masking.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mnist_ssl.errors import ConfigError

CLIP_MODES = ("replicate", "motion")


def make_clips(images: torch.Tensor, frames: int, mode: str = "replicate",
               generator: torch.Generator | None = None, *,
               max_rotate: float = 5.0, max_shift: float = 0.05) -> torch.Tensor:
    """Images (B, C, H, W) float in [0, 1] -> clips (B, C, T, H, W) with T = ``frames``.

    mode: "replicate" or "motion". For "motion", each step between consecutive
    frames rotates by an angle uniform in [-max_rotate, max_rotate] degrees and
    shifts by up to ``max_shift`` of the image size along each axis (defaults:
    5 degrees and 0.05 x 28 = 1.4 pixels per step). Randomness comes from
    ``generator`` when given (drawn on the CPU, so a seed gives the same clips on
    any device), else from torch's global RNG (which the engine seeds).
    """
    if images.dim() != 4:
        raise ValueError(f"make_clips expects images (B, C, H, W), got shape {tuple(images.shape)}")
    if frames < 1:
        raise ConfigError(f"frames={frames} must be >= 1")
    if mode not in CLIP_MODES:
        raise ConfigError(f"clip mode {mode!r} is not one of {', '.join(CLIP_MODES)}")
    B, C, H, W = images.shape
    if mode == "replicate" or frames == 1:
        return images.unsqueeze(2).expand(B, C, frames, H, W).contiguous()

    steps = frames - 1
    theta = _motion_matrices(B, steps, max_rotate, max_shift, images.device, generator).to(images.dtype)
    moving = images.unsqueeze(1).expand(B, steps, C, H, W).reshape(B * steps, C, H, W)
    grid = F.affine_grid(theta.reshape(B * steps, 2, 3), [B * steps, C, H, W], align_corners=False)
    moved = F.grid_sample(moving, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    moved = moved.clamp_(0.0, 1.0).reshape(B, steps, C, H, W)
    return torch.cat([images.unsqueeze(1), moved], dim=1).transpose(1, 2).contiguous()


def _motion_matrices(batch: int, steps: int, max_rotate: float, max_shift: float,
                     device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """(B, steps, 2, 3) sampling matrices (output -> input, normalised coordinates) of frames 1..steps.

    Each step is a rigid move x -> R x + t; frame k's forward map is the product
    of steps 1..k, and ``grid_sample`` needs its inverse.
    """
    draw_on = "cpu" if generator is not None else device
    u = torch.rand(batch, steps, 3, generator=generator, device=draw_on).to(device) * 2 - 1
    angle = u[..., 0] * (max_rotate * math.pi / 180)
    shift = u[..., 1:] * (max_shift * 2)  # normalised coordinates span 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    step = torch.zeros(batch, steps, 3, 3, device=device)
    step[..., 0, 0], step[..., 0, 1], step[..., 0, 2] = cos, -sin, shift[..., 0]
    step[..., 1, 0], step[..., 1, 1], step[..., 1, 2] = sin, cos, shift[..., 1]
    step[..., 2, 2] = 1
    forward = []
    acc = torch.eye(3, device=device).expand(batch, 3, 3)
    for k in range(steps):  # a loop over frames (T-1 <= a handful), batched over images
        acc = step[:, k] @ acc
        forward.append(acc)
    inv = torch.linalg.inv(torch.stack(forward, dim=1))
    return inv[..., :2, :]
