"""Tests of mnist_ssl.data, and small helpers that build IDX folders for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_ssl.data import write_idx


def fake_images(labels: np.ndarray, offset: int = 0) -> np.ndarray:
    """uint8 (N, 28, 28) images whose pixels encode their position, so each image is unique."""
    n = len(labels)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    ids = np.arange(n) + offset
    images[:, 0, 0] = ids % 256
    images[:, 0, 1] = ids // 256
    images[:, 1, :] = labels[:, None] * 20
    return images


def write_split(folder: Path, prefix: str, labels: np.ndarray, gz: bool = True, offset: int = 0) -> None:
    """Write ``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte`` (``.gz`` when gz)."""
    suffix = ".gz" if gz else ""
    labels = np.asarray(labels, dtype=np.uint8)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", fake_images(labels, offset))
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def balanced_labels(per_class: int, classes=range(10)) -> np.ndarray:
    """uint8 labels: ``per_class`` of each class, interleaved."""
    return np.tile(np.asarray(list(classes), dtype=np.uint8), per_class)
