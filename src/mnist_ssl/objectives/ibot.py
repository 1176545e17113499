"""Image BERT pre-training with an online tokenizer (iBOT, Zhou et al. 2022) around the shared encoder.

DINO (objectives/dino.py) plus masked image modelling in the same self-distillation: on
each global crop, a random share of the student's patch embeddings are replaced by a
learned mask token, and the student's distribution over ``patch_out_dim`` prototypes at
each masked patch is pulled towards the teacher's distribution at the same patch of the
unmasked crop (the teacher is the "online tokenizer"). The CLS term is DINO's loss, with the
student seeing the masked global crops and the local crops, as in iBOT.

- Masks: each global-crop image is masked with probability ``mask_prob`` (iBOT's 0.5), at a
  ratio drawn uniformly from ``[mask_ratio_min, mask_ratio_max]`` (iBOT's 0.1-0.5), the
  patches chosen at random (iBOT's blockwise masking needs a larger grid than 7 x 7).
- Head: DINO's MLP and bottleneck shared by CLS and patch tokens, with a second weight-normed
  last layer for the patches (iBOT's separate patch prototypes); the teacher's is its EMA.
- Patch loss (iBOT's ``loss2``): per image the mean over its masked patches of
  -sum_k softmax((t - center_patch) / teacher_patch_temp) * log_softmax(s / student_temp),
  images without a mask counting 0, averaged over the batch and the global crops. The
  patch targets have their own centre (an EMA of the teacher's mean patch score).
- Loss: ``lambda_cls`` * DINO's CLS loss + ``lambda_patch`` * patch loss.

The encoder's state dict is unchanged (the mask token belongs to this objective), so an
iBOT checkpoint fine-tunes and probes as any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnist_ssl.errors import ConfigError
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives import dino
from mnist_ssl.objectives.base import ObjectiveOutput


@dataclass
class IBOTConfig(dino.DINOConfig):
    """DINO's settings (the ``ibot`` section holds them all) and masked patch distillation."""

    patch_out_dim: int = 256  # prototypes of the patch distributions
    mask_prob: float = 0.5  # share of global-crop images that are masked at all
    mask_ratio_min: float = 0.1  # share of a masked image's patches, drawn uniformly in [min, max]
    mask_ratio_max: float = 0.5
    teacher_patch_temp: float = 0.04
    lambda_cls: float = 1.0
    lambda_patch: float = 1.0

    def validate(self, where: str = "ibot") -> None:
        super().validate(where)
        if self.patch_out_dim < 1:
            raise ConfigError(f"{where}.patch_out_dim={self.patch_out_dim} must be >= 1")
        if not 0 <= self.mask_prob <= 1:
            raise ConfigError(f"{where}.mask_prob={self.mask_prob} must be in [0, 1]")
        if not 0 <= self.mask_ratio_min <= self.mask_ratio_max < 1:
            raise ConfigError(f"{where}: need 0 <= mask_ratio_min <= mask_ratio_max < 1, got "
                              f"{self.mask_ratio_min}, {self.mask_ratio_max}")
        if not self.teacher_patch_temp > 0:
            raise ConfigError(f"{where}.teacher_patch_temp={self.teacher_patch_temp} must be > 0")
        for name in ("lambda_cls", "lambda_patch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be >= 0")
        if self.lambda_cls + self.lambda_patch == 0:
            raise ConfigError(f"{where}: lambda_cls and lambda_patch are both 0")


# DINO's starting point: the same views, clipping, warm-up and budget.
PRESET: dict = {"pretrain_augment": dict(dino.AUGMENT), "pretrain": dict(dino.PRESET["pretrain"])}


class IBOTHead(dino.DINOHead):
    """DINO's head, and a second last layer mapping patch tokens to ``patch_out_dim`` prototypes."""

    def __init__(self, dim: int, cfg: IBOTConfig) -> None:
        super().__init__(dim, cfg)
        self.patch_layer = dino.NormedLinear(cfg.bottleneck_dim, cfg.patch_out_dim, cfg.norm_last_layer)

    def patches(self, h: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) -> patch prototype scores (B, N, patch_out_dim), through the shared MLP."""
        B, N, D = h.shape
        z = F.normalize(self.mlp(h.reshape(B * N, D)), dim=-1)
        return self.patch_layer(z).view(B, N, -1)


def random_patch_masks(batch: int, num_patches: int, prob: float, ratio: tuple[float, float],
                       device: torch.device) -> torch.Tensor:
    """(batch, num_patches) bool: each image masked with probability ``prob``; a masked image
    has round(r * num_patches) patches masked, r uniform in ``ratio``, the patches at random."""
    masked = torch.rand(batch, device=device) < prob
    r = ratio[0] + (ratio[1] - ratio[0]) * torch.rand(batch, device=device)
    count = torch.where(masked, (r * num_patches).round().long(), torch.zeros_like(masked, dtype=torch.long))
    rank = torch.rand(batch, num_patches, device=device).argsort(dim=1).argsort(dim=1)  # a random permutation
    return rank < count.unsqueeze(1)


def masked_patch_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], masks: list[torch.Tensor],
                      center: torch.Tensor, student_temp: float, teacher_temp: float) -> torch.Tensor:
    """iBOT's patch term: per global crop q, per image the mean over its masked patches of the
    cross-entropy between the teacher's centred, sharpened distribution and the student's, 0
    for an image without a mask; the batch mean, averaged over the crops.

    student, teacher: one (B, N, K) score tensor per global crop; masks: one (B, N) bool per
    crop; center: (1, K)."""
    total = student[0].new_zeros(())
    for s, t, m in zip(student, teacher, masks):
        target = F.softmax((t - center) / teacher_temp, dim=-1).detach()
        per_patch = -(target * F.log_softmax(s / student_temp, dim=-1)).sum(-1)  # (B, N)
        m = m.to(per_patch.dtype)
        total = total + ((per_patch * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    return total / len(student)


class IBOT(dino.DINO):
    """views: ``global_crops + local_crops`` augmented views, as DINO's. See the module docstring."""

    loss_label = "iBOT Loss"

    def __init__(self, encoder: ViTEncoder, cfg: IBOTConfig, augment_for_figure=None) -> None:
        super().__init__(encoder, cfg, augment_for_figure)
        self.mask_token = nn.Parameter(torch.zeros(encoder.dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.register_buffer("center_patch", torch.zeros(1, cfg.patch_out_dim))

    def make_head(self, dim: int, cfg: IBOTConfig) -> nn.Module:
        return IBOTHead(dim, cfg)

    def draw_masks(self, globals_: list[torch.Tensor]) -> list[torch.Tensor]:
        c = self.cfg
        n = self.encoder.cfg.num_patches
        return [random_patch_masks(g.shape[0], n, c.mask_prob, (c.mask_ratio_min, c.mask_ratio_max), g.device)
                for g in globals_]

    @torch.no_grad()
    def forward_teacher_tokens(self, globals_: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The teacher's CLS scores and patch scores, one tensor per (unmasked) global crop."""
        h = self.teacher_encoder.encode(torch.cat(globals_))
        G = len(globals_)
        return list(self.teacher_head(h[:, 0]).chunk(G)), list(self.teacher_head.patches(h[:, 1:]).chunk(G))

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        c = self.cfg
        globals_, locals_ = self.make_crops(views)
        masks = self.draw_masks(globals_)
        teacher_cls, teacher_patch = self.forward_teacher_tokens(globals_)
        h = self.encoder.encode(torch.cat(globals_), mask=torch.cat(masks), mask_token=self.mask_token)
        cls = h[:, 0]
        if locals_:
            x_local = torch.cat(locals_)
            cls = torch.cat([cls, self.local_features(x_local, self.window(x_local))])
        student_cls = list(self.head(cls).chunk(len(globals_) + len(locals_)))
        student_patch = list(self.head.patches(h[:, 1:]).chunk(len(globals_)))
        temp = self.teacher_temperature()
        loss_cls = dino.dino_loss([s.float() for s in student_cls], [t.float() for t in teacher_cls],
                                  self.center, c.student_temp, temp)
        loss_patch = masked_patch_loss([s.float() for s in student_patch], [t.float() for t in teacher_patch],
                                       masks, self.center_patch, c.student_temp, c.teacher_patch_temp)
        loss = c.lambda_cls * loss_cls + c.lambda_patch * loss_patch
        entropies = self.teacher_entropies(teacher_cls, temp)
        if self.training:
            self.update_center(teacher_cls)
            self.update_patch_center(teacher_patch)
        return ObjectiveOutput(loss, {"cls": loss_cls.detach(), "patch": loss_patch.detach(), **entropies,
                                      "masked_share": torch.cat(masks).float().mean()})

    @torch.no_grad()
    def update_patch_center(self, teacher_patch: list[torch.Tensor]) -> None:
        """center_patch <- m * center_patch + (1 - m) * (the teacher's mean patch score, every rank)."""
        scores = torch.cat(teacher_patch).float()
        batch_center = dino._all_reduce_mean(scores.reshape(-1, scores.shape[-1]).mean(0, keepdim=True))
        m = self.cfg.center_momentum
        self.center_patch.mul_(m).add_(batch_center, alpha=1 - m)


def build(encoder: ViTEncoder, cfg) -> IBOT:
    from mnist_ssl.data.augment import Augmenter

    augment = Augmenter(cfg.pretrain_augment) if cfg.pretrain_augment.enabled else None
    return IBOT(encoder, cfg.ibot, augment_for_figure=augment)
