"""MAE + InfoNCE: a weighted sum of the masked-autoencoding and contrastive losses (chapter 2).

    loss = w_mae * L_mae + w_nce * L_nce

It is the MAE objective (its ``forward_encoder`` / ``forward_decoder`` /
``forward_loss`` stages, inherited, not copied) with InfoNCE's projection head
and NT-Xent loss added. What each term sees (``mae_infonce.nce_input``):

- ``"masked"`` (default): the two augmented views are each masked; MAE
  reconstructs both; InfoNCE compares the CLS tokens of the two *masked* views,
  so masking is one more augmentation for the contrastive term and the
  encoder runs once per view.
- ``"unmasked"``: MAE as above; InfoNCE compares the CLS tokens of the two
  unmasked views (one more encoder pass per view).

docs/contrastive.md gives the measurements behind the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnist_ssl.config import check_choice
from mnist_ssl.errors import ConfigError
from mnist_ssl.losses import nt_xent
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.base import ObjectiveOutput
from mnist_ssl.objectives import infonce, mae
from mnist_ssl.objectives.infonce import InfoNCEConfig, ProjectionHead
from mnist_ssl.objectives.mae import MAE, MAEConfig


@dataclass
class MAEInfoNCEConfig:
    """Weighted sum of the MAE and InfoNCE losses."""

    w_mae: float = 1.0
    w_nce: float = 0.1
    # What InfoNCE compares: the CLS tokens of the two masked views the MAE term
    # encodes ("masked", no extra encoder pass) or of the two unmasked views ("unmasked").
    nce_input: str = "masked"

    def validate(self, where: str = "mae_infonce") -> None:
        if self.w_mae < 0 or self.w_nce < 0 or self.w_mae + self.w_nce == 0:
            raise ConfigError(f"{where}: weights must be >= 0 and not both 0")
        check_choice(self, "nce_input", ("masked", "unmasked"), where=where)


# Two different views of each image for the contrastive term, made as for InfoNCE
# (docs/contrastive.md).
PRESET: dict = {"pretrain_augment": dict(infonce.AUGMENT), "mae": dict(mae.RECIPE), "pretrain": dict(mae.PRETRAIN)}


class MAEInfoNCE(MAE):
    """views: [view1, view2], each (B, C, H, W) (or clips); labels are ignored.

    Parts: ``encoder`` and ``decoder`` (from MAE), ``head`` (InfoNCE's
    projection head). ``visualize`` is MAE's reconstruction grid.
    """

    views = 2
    loss_label = "Combined Loss (MAE + InfoNCE)"

    def __init__(self, encoder: ViTEncoder, mae_cfg: MAEConfig, nce_cfg: InfoNCEConfig,
                 cfg: MAEInfoNCEConfig) -> None:
        super().__init__(encoder, mae_cfg)
        nce_cfg.validate()
        cfg.validate()
        self.nce_cfg = nce_cfg
        self.mix = cfg
        self.head = ProjectionHead(encoder.dim, nce_cfg.proj_hidden, nce_cfg.proj_dim, nce_cfg.proj_bn)

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        x = torch.cat(views)  # (2B, ...): both views masked and reconstructed in one pass
        latent, mask, restore_idx = self.forward_encoder(x)
        pred = self.forward_decoder(latent, restore_idx)
        loss_mae = self.forward_loss(x, pred, mask)
        cls = latent[:, 0] if self.mix.nce_input == "masked" else self.encoder(x)
        z1, z2 = self.head(cls).chunk(2)
        loss_nce = nt_xent(z1, z2, self.nce_cfg.temperature)
        loss = self.mix.w_mae * loss_mae + self.mix.w_nce * loss_nce
        return ObjectiveOutput(loss, {"mae": loss_mae.detach(), "nce": loss_nce.detach()})


def build(encoder: ViTEncoder, cfg) -> MAEInfoNCE:
    return MAEInfoNCE(encoder, cfg.mae, cfg.infonce, cfg.mae_infonce)
