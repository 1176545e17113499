"""Batched, seeded augmentations for digits, run on the batch's device.

One random affine per image (rotation, translation, scale, shear), optionally
composed with an elastic distortion (Simard et al., 2003), applied to the
whole batch with a single ``grid_sample`` call; then, optionally, one random
rectangle erased per image and Gaussian pixel noise. No per-image Python.

Never a flip: a mirrored digit is another symbol (or none). Every geometric
map here preserves orientation: the affine part is rotation x shear x a
positive scale (determinant scale**2 > 0), and the elastic field is a smooth
small displacement.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mnist_ssl.config import AugmentConfig

# Random erasing: the rectangle covers this fraction of the image, with an
# aspect ratio (h / w) log-uniform in ERASE_RATIO (the random-erasing paper's
# ranges, with a smaller top area: a 28 x 28 digit loses its identity fast).
ERASE_AREA = (0.02, 0.15)
ERASE_RATIO = (0.3, 3.3)


def gaussian_kernel1d(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ceil(3 sigma): (K,)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), per channel, zero padding."""
    C = field.shape[1]
    k = gaussian_kernel1d(sigma, field.device, field.dtype)
    r = k.numel() // 2
    field = F.conv2d(field, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), padding=(0, r), groups=C)
    return F.conv2d(field, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), padding=(r, 0), groups=C)


class Augmenter:
    """Callable: images (B, C, H, W) float in [0, 1] -> augmented images of the same shape.

    Randomness comes from ``generator`` when given (reproducible views; drawn
    on the CPU, then moved), else from torch's global RNG (which the engine
    seeds and checkpoints). Optional stages draw random numbers only when
    enabled, so turning one on leaves the others' draws unchanged.
    """

    def __init__(self, cfg: AugmentConfig, generator: torch.Generator | None = None) -> None:
        self.cfg = cfg
        self.generator = generator

    # ----- random numbers ------------------------------------------------
    def _rand(self, shape: tuple[int, ...], device: torch.device, normal: bool = False) -> torch.Tensor:
        where = "cpu" if self.generator is not None else device
        draw = torch.randn if normal else torch.rand
        return draw(shape, generator=self.generator, device=where).to(device)

    def _uniform(self, n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
        return lo + (hi - lo) * self._rand((n,), device)

    # ----- geometry ------------------------------------------------------
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

    def elastic_field(self, n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(n, h, w, 2) displacement in normalised coordinates (x, y).

        Uniform noise in [-1, 1] per pixel and axis, blurred by a Gaussian of
        ``elastic_sigma`` pixels, rescaled so that each image's RMS displacement
        is ``elastic`` pixels.
        """
        c = self.cfg
        field = self._rand((n, 2, h, w), device) * 2 - 1
        field = smooth(field, c.elastic_sigma)
        rms = field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-8)
        field = field / rms * c.elastic
        # pixels -> normalised coordinates (align_corners=False: 2 / size per pixel)
        scale = torch.tensor([2.0 / w, 2.0 / h], device=device).view(1, 2, 1, 1)
        return (field * scale).permute(0, 2, 3, 1)

    # ----- pixel stages --------------------------------------------------
    def erase(self, x: torch.Tensor) -> torch.Tensor:
        """With probability ``erase`` per image, set one random rectangle to 0 (the background)."""
        B, _, H, W = x.shape
        d = x.device
        apply = self._rand((B,), d) < self.cfg.erase
        area = self._uniform(B, *ERASE_AREA, d) * H * W
        log_r = self._uniform(B, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), d)
        ratio = torch.exp(log_r)
        eh = (area * ratio).sqrt().round().clamp(1, H)
        ew = (area / ratio).sqrt().round().clamp(1, W)
        top = (self._rand((B,), d) * (H - eh + 1)).floor()
        left = (self._rand((B,), d) * (W - ew + 1)).floor()
        rows = torch.arange(H, device=d, dtype=eh.dtype).view(1, H, 1)
        cols = torch.arange(W, device=d, dtype=ew.dtype).view(1, 1, W)
        inside = ((rows >= top.view(B, 1, 1)) & (rows < (top + eh).view(B, 1, 1))
                  & (cols >= left.view(B, 1, 1)) & (cols < (left + ew).view(B, 1, 1)))
        inside = inside & apply.view(B, 1, 1)
        return x.masked_fill(inside.unsqueeze(1), 0.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.enabled:
            return x
        c = self.cfg
        B, _, H, W = x.shape
        theta = self.affine_matrices(B, x.device).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if c.elastic > 0:
            grid = grid + self.elastic_field(B, H, W, x.device).to(x.dtype)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if c.erase > 0:
            out = self.erase(out)
        if c.noise > 0:
            out = out + c.noise * self._rand(tuple(out.shape), x.device, normal=True).to(x.dtype)
        return out.clamp_(0.0, 1.0)
