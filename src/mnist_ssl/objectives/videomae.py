"""Video masked autoencoding of digit clips (the source document's fourth method, and VideoMAE's).

A clip (B, C, T, H, W) is cut into T' x g x g tokens (T' = T / tubelet, token
order (time, row, col)) by the shared encoder. Masking:

- ``random`` (the document's): tokens are masked independently over all
  T' * g * g tokens. With replicated frames a hidden patch is usually visible
  in another frame, so the task is partly copying (see docs/videomae.md).
- ``tube`` (Tong et al., 2022): one spatial mask of g * g positions per sample,
  shared by every frame; exactly the same number of tokens is masked in each
  sample.

As in the MAE paper (``mae.masking="drop"``), the encoder sees the CLS token and
the visible tokens only; a small transformer decoder (:class:`MaskDecoder`,
with a mask token and its own space-time position embedding) predicts the
pixels of every token; the loss (L1, the document's, or MSE) is taken over the
masked tokens only.
"""

from __future__ import annotations

import torch

from mnist_ssl.config import VideoMAEConfig
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.base import Objective, ObjectiveOutput
from mnist_ssl.objectives.mae import MaskDecoder, masked_reconstruction_loss, patch_targets, random_masking


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Visible tokens out of ``num_patches`` (as :func:`random_masking` counts): at least 1, at most N - 1."""
    return max(1, min(num_patches - 1, int(round(num_patches * (1 - mask_ratio)))))


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


class VideoMAE(Objective):
    """Masked autoencoder of clips around the shared encoder.

    views: [clips (B, C, T, H, W)] (built by the data layer's ``make_clips``);
    images (B, C, H, W) are accepted too and replicated by ``encoder.as_clip``.
    """

    views = 1
    loss_label = "Pretraining Loss"  # as the document prints it

    def __init__(self, encoder: ViTEncoder, cfg: VideoMAEConfig) -> None:
        super().__init__()
        cfg.validate()
        self.encoder = encoder
        self.cfg = cfg
        m = encoder.cfg
        self.time_steps = m.frames // m.tubelet
        self.spatial = m.grid * m.grid
        self.decoder = MaskDecoder(encoder, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads,
                                   m.mlp_ratio)

    # ----- the method's stages ------------------------------------------
    def masking(self, batch: int, device: torch.device):
        """-> keep_idx (B, K), mask (B, N), restore_idx (B, N) for the configured masking."""
        if self.cfg.masking == "tube":
            return tube_masking(batch, self.time_steps, self.spatial, self.cfg.mask_ratio, device)
        return random_masking(batch, self.encoder.num_patches, self.cfg.mask_ratio, device)

    def forward_encoder(self, x: torch.Tensor):
        """x: clips (B, C, T, H, W) -> (latent (B, 1 + K, D), mask (B, N), restore_idx (B, N))."""
        keep_idx, mask, restore_idx = self.masking(x.shape[0], x.device)
        return self.encoder.encode(x, keep_idx=keep_idx), mask, restore_idx

    def forward_decoder(self, latent: torch.Tensor, restore_idx: torch.Tensor) -> torch.Tensor:
        """-> predicted pixels of every token (B, N, t*p*p*C)."""
        return self.decoder(latent, restore_idx)

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over masked tokens of the per-token L1 (or MSE) to the raw pixels."""
        target = patch_targets(self.encoder.patchify(x), norm_pix=False)
        return masked_reconstruction_loss(pred, target, mask, self.cfg.loss)

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        x = self.encoder.as_clip(views[0])
        latent, mask, restore_idx = self.forward_encoder(x)
        pred = self.forward_decoder(latent, restore_idx)
        loss = self.forward_loss(x, pred, mask)
        return ObjectiveOutput(loss, {"videomae": loss.detach()})

    # ----- figures -------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor):
        """Clips (or images) -> (clip, masked clip, reconstruction), each (B, C, T, H, W);
        visible tokens are pasted from the input, masked ones predicted (clamped to [0, 1])."""
        x = self.encoder.as_clip(x)
        latent, mask, restore_idx = self.forward_encoder(x)
        pred = self.forward_decoder(latent, restore_idx)
        patches = self.encoder.patchify(x)
        m = mask.unsqueeze(-1)
        masked = self._clip(self.encoder.unpatchify(patches * (1 - m)))
        recon = self._clip(self.encoder.unpatchify(patches * (1 - m) + pred.clamp(0, 1) * m))
        return x, masked, recon

    @staticmethod
    def _clip(x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2) if x.dim() == 4 else x  # unpatchify drops T for one-frame models

    @torch.no_grad()
    def visualize(self, images: torch.Tensor, path: str) -> None:
        """Frames x (original / masked / reconstructed) for a few images (B, C, H, W) or clips.

        Images become clips the way training made them (``clip_mode``), from
        torch's global RNG for ``motion``.
        """
        from mnist_ssl.data.clips import make_clips
        from mnist_ssl.report.plots import plot_clip_reconstruction

        if images.dim() == 4:
            images = make_clips(images, self.encoder.cfg.frames, self.cfg.clip_mode)
        was_training = self.training
        self.eval()
        clip, masked, recon = self.reconstruct(images)
        self.train(was_training)
        plot_clip_reconstruction(clip[:, 0].cpu().numpy(), masked[:, 0].cpu().numpy(),
                                 recon[:, 0].cpu().numpy(), path)


def build(encoder: ViTEncoder, cfg) -> VideoMAE:
    return VideoMAE(encoder, cfg.videomae)
