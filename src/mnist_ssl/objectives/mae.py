"""Masked autoencoding of image patches, in the source document's way and the MAE paper's.

- ``masking="zero"`` (the document): masked patches are set to zero in the
  input image, the whole sequence is encoded, a linear reconstruction layer
  predicts every patch, the loss is taken over the masked patches.
- ``masking="drop"`` (He et al., 2021): a per-sample random shuffle keeps a
  subset of tokens; the encoder sees the CLS token and the visible patches
  only; a small transformer decoder with a mask token and its own position
  embedding reconstructs every patch; the loss is taken over the masked patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnist_ssl.config import check_choice, check_positive, check_ratio
from mnist_ssl.errors import ConfigError
from mnist_ssl.models.layers import Block, init_weights
from mnist_ssl.models.patch_embed import PositionEmbedding
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.base import Objective, ObjectiveOutput, figure_pixels


# The recipe this method pretrains with unless told otherwise (RunConfig overrides the registry
# applies before the user's own): the section's defaults above are the source document's
# zero-masking; at its 15 epochs the reconstructions stay at the mean patch, and encoding only
# the visible half of the patches with a decoder, trained 300 epochs, is what made the features
# learn (docs/results.md, "Why pretraining learned nothing"). configs/document.json restores
# the document's recipe.
RECIPE: dict = {"masking": "drop", "mask_ratio": 0.5}
PRETRAIN: dict = {"epochs": 300, "lr": 2e-3, "warmup_epochs": 10.0}
PRESET: dict = {"mae": RECIPE, "pretrain": PRETRAIN}


@dataclass
class MAEConfig:
    """Masked autoencoding of image patches."""

    masking: str = "zero"  # "zero" (the document's) or "drop" (the MAE paper's)
    mask_ratio: float = 0.75
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = False
    loss: str = "mse"  # "mse" or "l1"

    def validate(self, where: str = "mae") -> None:
        check_choice(self, "masking", ("zero", "drop"), where=where)
        check_choice(self, "loss", ("mse", "l1"), where=where)
        check_ratio(self.mask_ratio, f"{where}.mask_ratio")
        check_positive(self, "decoder_dim", "decoder_heads", where=where)
        if self.decoder_depth < 0:
            raise ConfigError(f"{where}.decoder_depth={self.decoder_depth} must be >= 0")
        if self.decoder_dim % self.decoder_heads:
            raise ConfigError(
                f"{where}.decoder_heads={self.decoder_heads} does not divide decoder_dim={self.decoder_dim}"
            )


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches the masking keeps visible: round(N * (1 - ratio)), at least 1 and at most N - 1."""
    return max(1, min(num_patches - 1, int(round(num_patches * (1 - mask_ratio)))))


def random_masking(batch: int, num_patches: int, mask_ratio: float, device: torch.device):
    """Per-sample random masking by shuffling noise (the MAE reference's method).

    Returns
        keep_idx: (B, K) indices of visible patches, K = :func:`num_visible`
        mask: (B, N) float, 1 = masked, 0 = visible, in the original patch order
        restore_idx: (B, N) permutation that puts [visible, masked] back in patch order
    """
    noise = torch.rand(batch, num_patches, device=device)
    return masking_from_noise(noise, num_visible(num_patches, mask_ratio))


def masking_from_noise(noise: torch.Tensor, num_keep: int):
    """:func:`random_masking`'s outputs from its noise (B, N): the ``num_keep`` patches of
    lowest noise stay visible. Split out so that batched training draws each model's noise
    from its own generator (engine/batched.py)."""
    shuffle_idx = torch.argsort(noise, dim=1)
    restore_idx = torch.argsort(shuffle_idx, dim=1)
    keep_idx = shuffle_idx[:, :num_keep]
    mask = torch.ones_like(noise)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, 1, restore_idx)
    return keep_idx, mask, restore_idx


def patch_targets(patches: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Reconstruction targets (B, N, P): raw pixels, or each patch normalised to zero mean, unit variance.

    The 1e-6 keeps all-black patches (variance 0, common in MNIST) finite: they become zeros.
    """
    if not norm_pix:
        return patches
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=False)
    return (patches - mean) / (var + 1e-6).sqrt()


def masked_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                               kind: str = "mse") -> torch.Tensor:
    """Mean over masked patches of the per-patch mean error.

    pred, target: (B, N, P); mask: (B, N), 1 = masked. Visible patches contribute nothing.
    """
    err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
    per_patch = err.mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


class MaskDecoder(nn.Module):
    """The MAE paper's decoder: embed visible tokens, insert mask tokens, transformer, predict pixels.

    latent: (B, 1 + K, D) from the encoder; restore_idx: (B, N) -> pixels (B, N, P).
    """

    def __init__(self, encoder: ViTEncoder, dim: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        cfg = encoder.cfg
        self.embed = nn.Linear(encoder.dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed sin-cos, as in the reference: the decoder is thrown away anyway.
        self.pos_embed = PositionEmbedding(dim, cfg.grid, cfg.frames // cfg.tubelet, "sincos")
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, 0.0) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, encoder.patch_dim)
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, restore_idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(latent)
        B, N = restore_idx.shape
        cls, visible = x[:, :1], x[:, 1:]
        masks = self.mask_token.expand(B, N - visible.shape[1], -1)
        x = torch.cat([visible, masks], dim=1)
        x = torch.gather(x, 1, restore_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([cls, x + self.pos_embed()], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]


class MAE(Objective):
    """Masked autoencoder around the shared encoder. views: [images (B, C, H, W)]."""

    views = 1
    loss_label = "Loss"

    zero_masking = False  # the document's masking: masked patches zeroed, every token encoded
    norm_pix = False  # targets: each patch normalised (norm_pix_loss)

    def __init__(self, encoder: ViTEncoder, cfg: MAEConfig) -> None:
        super().__init__()
        cfg.validate()
        self.encoder = encoder
        self.cfg = cfg
        self.zero_masking = cfg.masking == "zero"
        self.norm_pix = cfg.norm_pix_loss
        if self.zero_masking:
            # The document's "reconstruction layer": one linear map per token.
            self.decoder = nn.Linear(encoder.dim, encoder.patch_dim)
            init_weights(self.decoder)
        else:
            self.decoder = MaskDecoder(encoder, cfg.decoder_dim, cfg.decoder_depth,
                                       cfg.decoder_heads, encoder.cfg.mlp_ratio)

    @property
    def num_keep(self) -> int:
        """Visible patches per image."""
        return num_visible(self.encoder.num_patches, self.cfg.mask_ratio)

    # ----- the method's stages ------------------------------------------
    def masking(self, batch: int, device: torch.device):
        """-> keep_idx (B, K), mask (B, N), restore_idx (B, N): independent random masking."""
        return random_masking(batch, self.encoder.num_patches, self.cfg.mask_ratio, device)

    def forward_encoder(self, x: torch.Tensor):
        """x: images or clips -> (latent (B, 1+N', D), mask (B, N), restore_idx (B, N) or None)."""
        keep_idx, mask, restore_idx = self.masking(x.shape[0], x.device)
        if self.zero_masking:
            patches = self.encoder.patchify(x) * (1 - mask).unsqueeze(-1)
            return self.encoder.encode(self.encoder.unpatchify(patches)), mask, None
        return self.encoder.encode(x, keep_idx=keep_idx), mask, restore_idx

    def forward_decoder(self, latent: torch.Tensor, restore_idx: torch.Tensor | None) -> torch.Tensor:
        """-> predicted patches (B, N, P)."""
        if restore_idx is None:
            return self.decoder(latent[:, 1:])
        return self.decoder(latent, restore_idx)

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = patch_targets(self.encoder.patchify(x), self.norm_pix)
        return masked_reconstruction_loss(pred, target, mask, self.cfg.loss)

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        x = views[0]
        latent, mask, restore_idx = self.forward_encoder(x)
        pred = self.forward_decoder(latent, restore_idx)
        loss = self.forward_loss(x, pred, mask)
        return ObjectiveOutput(loss, {"mae": loss.detach()})

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor):
        """-> (masked input, reconstruction) as images/clips; visible patches pasted from the input."""
        latent, mask, restore_idx = self.forward_encoder(x)
        pred = self.forward_decoder(latent, restore_idx)
        patches = self.encoder.patchify(x)
        if self.norm_pix:
            # Undo the per-patch normalisation with the true statistics, to show pixels.
            mean = patches.mean(-1, keepdim=True)
            std = (patches.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt()
            pred = pred * std + mean
        m = mask.unsqueeze(-1)
        masked = self.encoder.unpatchify(patches * (1 - m))
        recon = self.encoder.unpatchify(patches * (1 - m) + pred.clamp(0, 1) * m)
        return masked, recon

    @torch.no_grad()
    @torch.no_grad()
    def masked_patch_error(self, images: torch.Tensor, mean_patch: torch.Tensor, seed: int = 0) -> dict:
        """Mean squared pixel error over the masked patches of ``images`` (B, C, H, W) floats, of the
        reconstruction and of predicting ``mean_patch`` (N, P) at every position: a reconstruction
        that does not beat the mean patch has learned nothing. Masks are drawn from ``seed``,
        without touching the global random state; eval mode (no dropout)."""
        was_training = self.training
        self.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = self.encoder.as_clip(images) if self.encoder.cfg.frames > 1 else images
            latent, mask, restore_idx = self.forward_encoder(x)
            pred = self.forward_decoder(latent, restore_idx)
        self.train(was_training)
        patches = self.encoder.patchify(x)
        if getattr(self.cfg, "norm_pix_loss", False):  # back to pixels with the true statistics, as the figure does
            mean = patches.mean(-1, keepdim=True)
            pred = pred * (patches.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt() + mean
        masked = mask.bool()
        model = ((pred - patches) ** 2).mean(-1)[masked].mean()
        baseline = ((mean_patch.to(patches) - patches) ** 2).mean(-1)[masked].mean()
        return {"masked_mse": float(model), "mean_patch_mse": float(baseline)}

    def figure(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """What the reconstruction figure shows for a few images (B, C, H, W): the ``original``,
        ``masked`` and ``reconstruction``, each (B, H, W) (colour: (B, H, W, 3)), or (B, T, H, W[, 3])
        for clips."""
        was_training = self.training
        self.eval()
        masked, recon = self.reconstruct(images)
        self.train(was_training)
        original = self.encoder.as_clip(images) if masked.dim() == 5 else images
        return {"original": figure_pixels(original), "masked": figure_pixels(masked),
                "reconstruction": figure_pixels(recon)}


def build(encoder: ViTEncoder, cfg) -> MAE:
    return MAE(encoder, cfg.mae)

