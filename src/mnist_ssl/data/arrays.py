"""Array files: MedMNIST-style ``.npz`` (``train_images``, ``train_labels``, ``val_*``, ``test_*``).

Images are uint8 (N, H, W) greyscale or (N, H, W, 3) RGB (MedMNIST's layout;
(N, C, H, W) with C of 1 or 3 is accepted too); labels are integers (N,) or
(N, 1), class k being the k-th of ``classes`` (0..K-1). An optional
``classes`` array names them; otherwise they are named "0", "1", ... Shapes
are read from the file's headers before any array is loaded, so an image
larger than the pixel limit is refused without reading it. Object arrays
(pickles) are never loaded.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from mnist_ssl.data.imagefolder import MAX_PIXELS
from mnist_ssl.errors import DataError

SPLITS = ("train", "val", "test")


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of every array in the .npz, from the headers alone."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                out[info.filename[:-4]] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return out


def _to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3):  # (N, H, W, C): MedMNIST's RGB layout
        return images.transpose(0, 3, 1, 2)
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    raise DataError(f"{where}: expected images (N, H, W), (N, H, W, 1|3) or (N, 1|3, H, W), "
                    f"got shape {images.shape}")


def load_npz(path: str | os.PathLike) -> tuple[dict[str, "Split"], list[str]]:  # noqa: F821
    """A MedMNIST-style .npz -> ({"train": Split, "val": ..., "test": ...}, class names).

    ``train`` is required; ``val`` and ``test`` are taken when present and not empty.
    """
    from mnist_ssl.data.split import Split

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    headers = _headers(path)
    present = [s for s in SPLITS if f"{s}_images" in headers]
    if "train" not in present or "train_labels" not in headers:
        raise DataError(f"{path}: holds {sorted(headers) or 'no arrays'}, not MedMNIST's keys "
                        "(train_images, train_labels, and optionally val_* and test_*)")
    for s in present:
        shape, dtype = headers[f"{s}_images"]
        if dtype.hasobject or headers.get(f"{s}_labels", ((), np.dtype(np.int64)))[1].hasobject:
            raise DataError(f"{path}: {s} arrays hold Python objects (pickles), which are never loaded")
        if int(np.prod(shape[1:])) > 3 * MAX_PIXELS:  # up to 3 channels of MAX_PIXELS pixels
            raise DataError(f"{path}: {s}_images of shape {shape} exceed {MAX_PIXELS} pixels per image")
    splits: dict[str, Split] = {}
    num_classes = 0
    with np.load(path, allow_pickle=False) as z:
        for s in present:
            if f"{s}_labels" not in z:
                raise DataError(f"{path}: has {s}_images but no {s}_labels")
            images, labels = z[f"{s}_images"], z[f"{s}_labels"]
            where = f"{path}[{s}_images]"
            if images.dtype != np.uint8:
                if images.dtype.kind == "f" and images.size and 0.0 <= images.min() and images.max() <= 1.0:
                    images = np.round(images * 255.0).astype(np.uint8)  # float pixels in [0, 1]
                else:
                    raise DataError(f"{where}: expected uint8 pixels (or floats in [0, 1]), got {images.dtype}")
            images = _to_nchw(images, where)
            if len(images) == 0:  # an empty split is as good as none
                continue
            if labels.ndim == 2 and labels.shape[1] != 1:
                raise DataError(f"{path}[{s}_labels]: shape {labels.shape} is multi-label; "
                                "one class per image is needed")
            labels = labels.reshape(-1)
            if labels.dtype.kind not in "iu":
                raise DataError(f"{path}[{s}_labels]: expected integer labels, got {labels.dtype}")
            if len(labels) != len(images):
                raise DataError(f"{path}: {len(images)} {s} images but {len(labels)} labels")
            if len(labels) and labels.min() < 0:
                raise DataError(f"{path}[{s}_labels]: negative label {int(labels.min())}")
            num_classes = max(num_classes, int(labels.max()) + 1 if len(labels) else 0)
            splits[s] = Split(torch.from_numpy(np.ascontiguousarray(images)),
                              torch.from_numpy(labels.astype(np.int64)), f"{path} ({s})")
        names = [str(c) for c in z["classes"].tolist()] if "classes" in z else None
    if "train" not in splits:
        raise DataError(f"{path}: train_images is empty")
    shapes = {tuple(sp.images.shape[1:]) for sp in splits.values()}
    if len(shapes) > 1:
        raise DataError(f"{path}: its splits hold images of different shapes {sorted(shapes)}")
    if names is None:
        names = [str(k) for k in range(num_classes)]
    elif len(names) < num_classes:
        raise DataError(f"{path}: 'classes' names {len(names)} classes but labels go up to {num_classes - 1}")
    return splits, names
