"""Batched, seeded augmentations for digits, run on the batch's device.

One random affine per image (rotation, translation, scale, shear) applied to
the whole batch with a single ``affine_grid`` + ``grid_sample`` call: no
per-image Python. Never a flip: a mirrored digit is another symbol (or none).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mnist_ssl.config import AugmentConfig


class Augmenter:
    """Callable: images (B, C, H, W) float in [0, 1] -> augmented images of the same shape.

    Randomness comes from ``generator`` when given (reproducible views), else
    from torch's global RNG (which the engine seeds and checkpoints).
    """

    def __init__(self, cfg: AugmentConfig, generator: torch.Generator | None = None) -> None:
        self.cfg = cfg
        self.generator = generator

    def _uniform(self, n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator, device="cpu" if self.generator is not None else device)
        return (lo + (hi - lo) * u).to(device)

    def affine_matrices(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) sampling matrices in normalised coordinates (output -> input)."""
        c = self.cfg
        angle = self._uniform(n, -c.rotate, c.rotate, device) * (math.pi / 180)
        shear = self._uniform(n, -c.shear, c.shear, device) * (math.pi / 180)
        scale = self._uniform(n, c.scale_min, c.scale_max, device)
        # translate is a fraction of the image; normalised coordinates span 2.
        tx = self._uniform(n, -c.translate, c.translate, device) * 2
        ty = self._uniform(n, -c.translate, c.translate, device) * 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        # forward map A = R(angle) @ Shear @ scale; grid_sample needs its inverse.
        a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        sh = torch.zeros(n, 2, 2, device=device)
        sh[:, 0, 0] = 1
        sh[:, 0, 1] = torch.tan(shear)
        sh[:, 1, 1] = 1
        fwd = a @ sh * scale[:, None, None]
        inv = torch.linalg.inv(fwd)
        t = torch.stack([tx, ty], -1)[:, :, None]
        return torch.cat([inv, -inv @ t], dim=2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.enabled:
            return x
        B = x.shape[0]
        theta = self.affine_matrices(B, x.device).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.cfg.noise > 0:
            noise = torch.randn(out.shape, generator=self.generator,
                                device="cpu" if self.generator is not None else x.device).to(x.device)
            out = out + self.cfg.noise * noise
        return out.clamp_(0.0, 1.0)
