"""Contrastive pretraining (the source document's chapter 2, SimCLR's recipe).

Two augmented views of each image (made by the engine with the phase's
augmentation) go through the shared encoder; their CLS features go through a
small MLP projection head; NT-Xent (``mnist_ssl.losses.nt_xent``) pulls the two
views of an image together and pushes the other 2N - 2 views of the batch away.
The head is thrown away after pretraining: fine-tuning, the linear probe and
kNN use the CLS features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from mnist_ssl.errors import ConfigError
from mnist_ssl.losses import nt_xent
from mnist_ssl.models.layers import init_weights
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.base import Objective, ObjectiveOutput, figure_pixels


@dataclass
class InfoNCEConfig:
    """Contrastive learning between the CLS tokens of two augmented views."""

    temperature: float = 0.1
    proj_hidden: int = 128  # 0: no projection head, the CLS token itself
    proj_dim: int = 64
    proj_bn: bool = False  # BatchNorm after the head's hidden layer (SimCLR's head)

    def validate(self, where: str = "infonce") -> None:
        if not self.temperature > 0:
            raise ConfigError(f"{where}.temperature={self.temperature} must be > 0")
        if self.proj_hidden < 0 or self.proj_dim < 1:
            raise ConfigError(f"{where}: proj_hidden must be >= 0 and proj_dim >= 1")


# RunConfig overrides this method starts from (the registry applies them before the
# user's own): contrastive learning needs two different views of each image. The
# views are the fine-tuning augmentation plus a mild elastic distortion, and the
# head has a BatchNorm: the best linear probe of the measured settings
# (docs/contrastive.md).
AUGMENT: dict = {"enabled": True, "rotate": 10.0, "translate": 0.1, "scale_min": 0.9, "scale_max": 1.1,
                 "shear": 0.0, "elastic": 0.5, "erase": 0.0, "noise": 0.0}
PRESET: dict = {"pretrain_augment": AUGMENT, "infonce": {"proj_bn": True},
                 "pretrain": {"epochs": 100, "warmup_epochs": 5.0}}


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose batch statistics are those of the global batch under torch.distributed.

    In one process it is ``nn.BatchNorm1d``. Across processes (torchrun) each rank
    would otherwise normalise with the statistics of its own slice, and a run would
    no longer equal the one-process run; ``nn.SyncBatchNorm`` does this on GPUs only.
    Here the per-feature sums and sums of squares are added over the ranks with a
    differentiable all_reduce, on any device.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        count = torch.tensor([float(x.shape[0])], device=x.device)
        dist.all_reduce(count)
        n = count.item()
        stats = all_reduce(torch.cat([x.sum(0), (x * x).sum(0)]))  # (2 * C,), gradient flows back
        mean, sq_mean = stats.chunk(2)
        mean, var = mean / n, (sq_mean / n - (mean / n) ** 2).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * n / max(n - 1.0, 1.0), m)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


class ProjectionHead(nn.Module):
    """CLS features (B, D) -> embeddings (B, proj_dim): Linear-(BatchNorm)-GELU-Linear; identity if hidden == 0."""

    def __init__(self, dim: int, hidden: int, out: int, batch_norm: bool = False) -> None:
        super().__init__()
        if hidden == 0:
            self.net: nn.Module = nn.Identity()
        else:
            norm = GlobalBatchNorm1d(hidden) if batch_norm else nn.Identity()
            self.net = nn.Sequential(nn.Linear(dim, hidden), norm, nn.GELU(), nn.Linear(hidden, out))
            self.net.apply(init_weights)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class InfoNCE(Objective):
    """views: [view1, view2], each (B, C, H, W) (or clips); labels are ignored."""

    views = 2
    loss_label = "InfoNCE Loss"

    def __init__(self, encoder: ViTEncoder, cfg: InfoNCEConfig,
                 augment_for_figure: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.encoder = encoder
        self.cfg = cfg
        self.head = ProjectionHead(encoder.dim, cfg.proj_hidden, cfg.proj_dim, cfg.proj_bn)
        # Only for :meth:`visualize`: the views the engine trains on come from the
        # data layer, not from here. A plain attribute, not a module: no weights.
        self.augment_for_figure = augment_for_figure

    def embed(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Views -> projected CLS embeddings, one (B, proj_dim) per view; one encoder call for all."""
        h = self.encoder(torch.cat(views))
        return list(self.head(h).chunk(len(views)))

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        z1, z2 = self.embed(views)
        loss = nt_xent(z1, z2, self.cfg.temperature)
        return ObjectiveOutput(loss, {"nce": loss.detach()})

    @torch.no_grad()
    def figure(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """The views figure's arrays: frame 0 of the ``original`` images beside two augmented
        views (``view1``, ``view2``) as the model is trained on, each (B, H, W) (colour: (B, H, W, 3))."""
        augment = self.augment_for_figure or (lambda x: x)
        v1, v2 = augment(images), augment(images)
        first = (lambda x: figure_pixels(x[:, :, 0] if x.dim() == 5 else x))  # frame 0
        return {"original": first(images), "view1": first(v1), "view2": first(v2)}


def build(encoder: ViTEncoder, cfg) -> InfoNCE:
    from mnist_ssl.data.augment import Augmenter

    augment = Augmenter(cfg.pretrain_augment) if cfg.pretrain_augment.enabled else None
    return InfoNCE(encoder, cfg.infonce, augment_for_figure=augment)
