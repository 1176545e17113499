"""The data layer: IDX files, the embedded MNIST sample, image folders, .npz arrays, balanced
sampling, download.

Images travel as :class:`Split` (uint8 (N, C, H, W) images, int64 (N,) labels
holding class numbers); :func:`open_source` opens any source by what its path
holds. See docs/data.md for the sources and the sampling protocol.
"""

from mnist_ssl.data.arrays import load_npz
from mnist_ssl.data.download import DATASETS, download, verify
from mnist_ssl.data.idx import read_idx, write_idx
from mnist_ssl.data.imagefolder import load_image_folder, load_unlabelled_folder
from mnist_ssl.data.sampling import class_index, load_splits, load_test_split, load_unlabelled_pool
from mnist_ssl.data.sources import (
    Source,
    Split,
    detect_source,
    find_idx_files,
    load_embedded,
    load_idx_split,
    load_pretrain_images,
    open_source,
)

__all__ = [
    "DATASETS",
    "Source",
    "Split",
    "class_index",
    "detect_source",
    "download",
    "find_idx_files",
    "load_embedded",
    "load_idx_split",
    "load_image_folder",
    "load_npz",
    "load_pretrain_images",
    "load_splits",
    "load_test_split",
    "load_unlabelled_folder",
    "load_unlabelled_pool",
    "open_source",
    "read_idx",
    "verify",
    "write_idx",
]
