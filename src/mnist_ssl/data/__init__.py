"""The data layer: IDX files, the embedded MNIST sample, balanced sampling, download.

Images travel as :class:`Split` (uint8 (N, 1, 28, 28) images, int64 (N,) labels
holding class numbers); see docs/data.md for the sampling protocol.
"""

from mnist_ssl.data.download import DATASETS, download, verify
from mnist_ssl.data.idx import read_idx, write_idx
from mnist_ssl.data.sampling import class_index, load_splits, load_test_split, load_unlabelled_pool
from mnist_ssl.data.sources import Split, find_idx_files, load_embedded, load_idx_split

__all__ = [
    "DATASETS",
    "Split",
    "class_index",
    "download",
    "find_idx_files",
    "load_embedded",
    "load_idx_split",
    "load_splits",
    "load_test_split",
    "load_unlabelled_pool",
    "read_idx",
    "verify",
    "write_idx",
]
