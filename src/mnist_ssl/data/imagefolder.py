"""Image folders: torchvision's ``ImageFolder`` layout, and unlabelled folders for pretraining.

Labelled: ``root/<class>/<image>`` (PNG, JPEG or BMP), class names from the
folder names, in sorted order (label k = the k-th name, as torchvision's
``ImageFolder``); optionally split as ``root/train/<class>/...`` and
``root/test/<class>/...`` (``val`` too). Unlabelled: images directly in the
folder (or in sub-folders that hold no class structure), for pretraining only.

Every image of a source must have the same size; greyscale images (and colour
files whose pixels are all grey) give one channel, and a folder with any colour
image gives three (greyscale ones are repeated into RGB). Decoding is bounded: a file whose header announces more
than :data:`MAX_PIXELS` pixels is refused before its pixels are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mnist_ssl.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLIT_NAMES = ("train", "val", "test")
MAX_PIXELS = 4096 * 4096  # per image; far above any MNIST-like set, far below a decompression bomb
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file -> uint8 (H, W) greyscale or (H, W, 3) RGB. Transparency is dropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size  # from the header: nothing decoded yet
            if w * h > max_pixels:
                raise DataError(f"{path}: {w}x{h} pixels is more than the limit of {max_pixels} per image")
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
                return np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
            if im.mode in _GREY_MODES:
                return np.asarray(im.convert("L"), dtype=np.uint8)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
            # A palette or RGB file whose pixels are all grey is a greyscale image.
            return rgb[..., 0].copy() if (rgb == rgb[..., :1]).all() else rgb
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not an image that can be read ({type(e).__name__}: {e})") from None


def stack_images(arrays: list[np.ndarray], paths: list[Path]) -> torch.Tensor:
    """Same-size images -> uint8 (N, C, H, W); C = 3 if any image is in colour, else 1."""
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        first = arrays[0].shape[:2]
        odd = next(i for i, a in enumerate(arrays) if a.shape[:2] != first)
        raise DataError(
            f"images differ in size: {paths[0]} is {first[1]}x{first[0]} but {paths[odd]} is "
            f"{arrays[odd].shape[1]}x{arrays[odd].shape[0]}; resize them to one size"
        )
    colour = any(a.ndim == 3 for a in arrays)
    if colour:
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
        x = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        x = np.stack(arrays)[:, None]
    return torch.from_numpy(np.ascontiguousarray(x))


def _class_folders(root: Path) -> list[Path]:
    """The class sub-folders of ``root`` (those holding images); [] when there are none."""
    return [d for d in _subfolders(root) if any(is_image_file(p) for p in d.iterdir())]


def looks_labelled(root: Path) -> bool:
    """``root/<class>/<image>``, or ``root/train/<class>/<image>``."""
    split_dirs = [root / s for s in SPLIT_NAMES if (root / s).is_dir()]
    if split_dirs:
        return any(_class_folders(d) for d in split_dirs)
    return bool(_class_folders(root))


def _load_classes(root: Path, names: list[str] | None) -> tuple[list[np.ndarray], list[Path], list[int], list[str]]:
    folders = _class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class sub-folders holding {'/'.join(IMAGE_SUFFIXES)} images")
    found = [d.name for d in folders]
    if names is None:
        names = found
    elif found != names:
        raise DataError(f"{root}: its class folders {found} differ from the training split's {names}")
    arrays, paths, labels = [], [], []
    for k, d in enumerate(folders):
        for p in image_files(d):
            arrays.append(read_image(p))
            paths.append(p)
            labels.append(k)
    return arrays, paths, labels, names


def load_image_folder(root: str | os.PathLike) -> tuple[dict[str, "Split"], list[str]]:  # noqa: F821
    """A labelled image folder -> ({split name: Split}, class names).

    With ``train/``, ``val/``, ``test/`` sub-folders, one Split each (each with
    the same class folders); otherwise one Split named ``"all"``, from which
    train and test are drawn disjointly (as for the embedded data). Labels are
    positions in the class-name list.
    """
    from mnist_ssl.data.split import Split

    root = Path(root)
    split_dirs = {s: root / s for s in SPLIT_NAMES if (root / s).is_dir()}
    groups: dict[str, tuple] = {}
    names = None
    for split, folder in (split_dirs or {"all": root}).items():
        arrays, paths, labels, names = _load_classes(folder, names)
        groups[split] = (arrays, paths, labels)
    all_arrays = [a for g in groups.values() for a in g[0]]
    all_paths = [p for g in groups.values() for p in g[1]]
    images = stack_images(all_arrays, all_paths)  # one size and channel count across splits
    splits, start = {}, 0
    for split, (arrays, _, labels) in groups.items():
        splits[split] = Split(images[start:start + len(arrays)], torch.tensor(labels, dtype=torch.int64),
                              str(split_dirs.get(split, root)))
        start += len(arrays)
    return splits, list(names)


def load_unlabelled_folder(root: str | os.PathLike) -> "Split":  # noqa: F821
    """Every image under ``root`` (recursively, sorted by path), labels -1: pretraining only."""
    from mnist_ssl.data.split import Split

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"pretraining data {root} is not a folder")
    paths = sorted(p for p in root.rglob("*") if is_image_file(p))
    if not paths:
        raise DataError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images in it or its sub-folders")
    images = stack_images([read_image(p) for p in paths], paths)
    return Split(images, torch.full((len(paths),), -1, dtype=torch.int64), str(root))
