"""Video masked autoencoding of digit clips (the source document's fourth method, and VideoMAE's).

A clip (B, C, T, H, W) is cut into T' x g x g tokens (T' = T / tubelet, token
order (time, row, col)) by the shared encoder. Masking:

- ``random`` (the document's): tokens are masked independently over all
  T' * g * g tokens. With replicated frames a hidden patch is usually visible
  in another frame, so the task is partly copying (see docs/videomae.md).
- ``tube`` (Tong et al., 2022): one spatial mask of g * g positions per sample,
  shared by every frame; exactly the same number of tokens is masked in each
  sample.

It is the MAE objective with ``mae.masking="drop"`` (its encoder, decoder, loss
and reconstruction stages, inherited): the encoder sees the CLS token and the
visible tokens only; :class:`MaskDecoder` (a mask token and its own space-time
position embedding) predicts the pixels of every token; the loss (L1, the
document's, or MSE) is taken over the masked tokens only. What is its own: the
config section, tube masking, and clips as input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mnist_ssl.config import check_choice, check_positive, check_ratio
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.base import Objective, ObjectiveOutput, figure_pixels
from mnist_ssl.objectives.mae import MAE, MaskDecoder, num_visible, random_masking


# The recipe unless told otherwise: the section's defaults are the document's (random masking,
# L1). With identical frames, random masking lets every masked token be copied from another
# frame and L1 rewards the median (black); tube masking of half the patches with an MSE
# target, trained 150 epochs, is what made the features learn (docs/results.md).
PRESET: dict = {"model": {"frames": 3}, "videomae": {"masking": "tube", "mask_ratio": 0.5, "loss": "mse"},
                "pretrain": {"epochs": 150, "lr": 2e-3, "warmup_epochs": 10.0}}


@dataclass
class VideoMAEConfig:
    """Masked autoencoding of clips made from images."""

    clip_mode: str = "replicate"  # "replicate" (the document's) or "motion"
    masking: str = "random"  # "random" (the document's) or "tube" (VideoMAE's)
    mask_ratio: float = 0.75
    loss: str = "l1"  # "l1" (the document's) or "mse"
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4

    def validate(self, where: str = "videomae") -> None:
        check_choice(self, "clip_mode", ("replicate", "motion"), where=where)
        check_choice(self, "masking", ("random", "tube"), where=where)
        check_choice(self, "loss", ("l1", "mse"), where=where)
        check_ratio(self.mask_ratio, f"{where}.mask_ratio")
        check_positive(self, "decoder_dim", "decoder_heads", where=where)


def tube_masking(batch: int, time_steps: int, spatial: int, mask_ratio: float, device: torch.device):
    """One random spatial mask per sample, repeated over the ``time_steps`` token frames.

    Returns, like :func:`random_masking`, for N = time_steps * spatial tokens
    ordered (time, row, col):
        keep_idx: (B, T' * K) visible tokens, K = visible positions per frame
        mask: (B, N) float, 1 = masked; identical in every frame, exactly T' * (spatial - K) ones
        restore_idx: (B, N) permutation that puts [visible, masked] back in token order
    """
    K = num_visible(spatial, mask_ratio)
    noise = torch.rand(batch, spatial, device=device)
    rank = torch.argsort(torch.argsort(noise, dim=1), dim=1)  # (B, S): 0..S-1, < K = visible
    # Distinct sort keys: position rank first, frame second, so that the first
    # T' * K tokens of the shuffle are exactly the visible tubes.
    frame = torch.arange(time_steps, device=device).repeat_interleave(spatial)  # (N,)
    key = rank.repeat(1, time_steps) * time_steps + frame
    shuffle_idx = torch.argsort(key, dim=1)
    restore_idx = torch.argsort(shuffle_idx, dim=1)
    keep_idx = shuffle_idx[:, : time_steps * K]
    mask = (rank >= K).float().repeat(1, time_steps)
    return keep_idx, mask, restore_idx


class VideoMAE(MAE):
    """Masked autoencoder of clips around the shared encoder.

    views: [clips (B, C, T, H, W)] (built by the data layer's ``make_clips``);
    images (B, C, H, W) are accepted too and replicated by ``encoder.as_clip``.
    """

    views = 1
    loss_label = "Pretraining Loss"  # as the document prints it

    def __init__(self, encoder: ViTEncoder, cfg: VideoMAEConfig) -> None:
        Objective.__init__(self)
        cfg.validate()
        self.encoder = encoder
        self.cfg = cfg
        m = encoder.cfg
        self.time_steps = m.frames // m.tubelet
        self.spatial = m.grid * m.grid
        self.decoder = MaskDecoder(encoder, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads,
                                   m.mlp_ratio)

    def masking(self, batch: int, device: torch.device):
        """-> keep_idx (B, K), mask (B, N), restore_idx (B, N) for the configured masking."""
        if self.cfg.masking == "tube":
            return tube_masking(batch, self.time_steps, self.spatial, self.cfg.mask_ratio, device)
        return random_masking(batch, self.encoder.num_patches, self.cfg.mask_ratio, device)

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        x = self.encoder.as_clip(views[0])
        latent, mask, restore_idx = self.forward_encoder(x)
        pred = self.forward_decoder(latent, restore_idx)
        loss = self.forward_loss(x, pred, mask)
        return ObjectiveOutput(loss, {"videomae": loss.detach()})

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor):
        """Clips (or images) -> (clip, masked clip, reconstruction), each (B, C, T, H, W)."""
        x = self.encoder.as_clip(x)
        masked, recon = super().reconstruct(x)
        return x, self._clip(masked), self._clip(recon)

    @staticmethod
    def _clip(x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2) if x.dim() == 4 else x  # unpatchify drops T for one-frame models

    @torch.no_grad()
    def figure(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """The reconstruction figure's arrays, each (B, T, H, W), colour (B, T, H, W, 3): frames of
        the ``original`` clip, ``masked`` and ``reconstruction``. Images (B, C, H, W) become clips the way training made
        them (``clip_mode``), from torch's global RNG for ``motion``."""
        from mnist_ssl.data.clips import make_clips

        if images.dim() == 4:
            images = make_clips(images, self.encoder.cfg.frames, self.cfg.clip_mode)
        was_training = self.training
        self.eval()
        clip, masked, recon = self.reconstruct(images)
        self.train(was_training)
        return {"original": figure_pixels(clip), "masked": figure_pixels(masked),
                "reconstruction": figure_pixels(recon)}


def build(encoder: ViTEncoder, cfg) -> VideoMAE:
    return VideoMAE(encoder, cfg.videomae)
