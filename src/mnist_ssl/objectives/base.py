"""The one interface every objective implements."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class ObjectiveOutput:
    """What the engine reads from an objective's forward pass.

    loss: scalar tensor to minimise. terms: named parts of the loss (detached
    or not) that are logged per epoch, e.g. {"mae": ..., "nce": ...}.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """A training objective around the shared encoder.

    Subclasses set ``views`` (how many augmented views of each image the
    engine must pass) and ``loss_label`` (the name printed per epoch, as the
    source document prints it), and implement :meth:`forward`.
    """

    views: int = 1
    loss_label: str = "Loss"

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        raise NotImplementedError

    @torch.no_grad()
    def figure(self, images: torch.Tensor) -> dict | None:
        """The arrays of the figure that shows what the objective does to ``images`` (B, C, H, W),
        as the registry's ``figure`` kind names them; ``report.plots.draw_method_figure`` draws
        them. None: no figure."""
        return None


def figure_pixels(x: torch.Tensor) -> np.ndarray:
    """Images (B, C, H, W) or clips (B, C, T, H, W) as ``draw_method_figure`` takes them:
    (B, [T,] H, W) for one channel, channel-last (B, [T,] H, W, 3) for colour."""
    x = x.detach().float().cpu()
    return (x[:, 0] if x.shape[1] == 1 else x.movedim(1, -1)).numpy()
