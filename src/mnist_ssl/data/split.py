"""A set of labelled images: what every data source returns (its own module, so that the
readers of each format and ``data.sources`` can all use it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mnist_ssl.errors import DataError


@dataclass
class Split:
    """A set of labelled images.

    images: uint8 (N, C, H, W), pixel values 0-255 (MNIST: (N, 1, 28, 28)).
    labels: int64 (N,), the source's class numbers (MNIST: the digits 0-9), not
        positions in a run's class list; see :func:`mnist_ssl.data.sampling.class_index`.
        -1 for unlabelled images (pretraining only).
    source: where the images came from, for messages.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"Split images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise DataError(
                f"Split has {len(self.images)} images but labels of shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def float_images(self) -> torch.Tensor:
        """float32 (N, C, H, W) in [0, 1]."""
        return self.images.to(torch.float32).div_(255.0)

    def subset(self, idx: torch.Tensor | np.ndarray | Sequence[int]) -> "Split":
        """The images at positions ``idx`` (int indices, in that order), as a new Split."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.int64)
        return Split(self.images[idx], self.labels[idx], self.source)
