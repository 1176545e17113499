"""Tiny data sources built in a temporary folder: image folders and MedMNIST-style .npz files."""

from __future__ import annotations

import numpy as np
from PIL import Image


def write_image_folder(root, classes=("cat", "dog"), per_class=3, size=32, mode="RGB", suffix=".png", seed=0):
    """root/<class>/<k>.png with random pixels; returns the uint8 arrays in class, then name, order."""
    rng = np.random.default_rng(seed)
    arrays = []
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(a, mode=mode).save(root / name / f"{k}{suffix}")
            arrays.append(a)
    return arrays


def write_npz(path, n=(6, 4, 5), size=28, rgb=False, classes=3, seed=0, **extra):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size, 3) if rgb else (count, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    arrays.update(extra)
    np.savez(path, **arrays)
    return arrays
