"""Which images a run uses: balanced, seeded, disjoint train and test samples.

The protocol (docs/data.md): for each class, the class's images are put in a
random order that depends only on (seed, class, which file set); the test
sample is the front of that order and the training sample comes after it. So

* the test sample of seed k is the same whatever ``train_per_class`` is, and
  the same whatever other classes are chosen: runs at different label budgets
  are compared on the same test images (paired);
* smaller training samples are nested in larger ones for the same seed;
* train and test never share an image (for the embedded data they come from
  the same 5,000 images; for an IDX folder they come from different files).

Labels keep their original class numbers; :func:`class_index` turns them into
positions 0..K-1 in the chosen class list, which is what classifiers predict.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mnist_ssl.config import DataConfig
from mnist_ssl.data.sources import Split, load_embedded, load_idx_split, opened_source
from mnist_ssl.errors import ConfigError, DataError

# Independent random streams per file set: the embedded data has one (test is
# drawn first, then train from the rest); an IDX folder has one per file set.
_TEST_STREAM = 0
_TRAIN_STREAM = 1


def class_index(labels: torch.Tensor, classes: Sequence[int] | None) -> torch.Tensor:
    """Map class numbers to positions in ``classes``: int64 (N,) in 0..K-1.

    ``classes=None`` means all ten classes, where the position is the class.
    Raises :class:`DataError` for a label that is not one of ``classes``.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    classes = list(range(10)) if classes is None else list(classes)
    if len(labels) and int(labels.min()) < 0:
        raise DataError(f"label {int(labels.min())} is not one of the classes {classes}")
    size = max(classes) + 1
    if len(labels):
        size = max(size, int(labels.max()) + 1)
    # A lookup table class number -> position; -1 marks numbers not in `classes`.
    lookup = torch.full((size,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes, dtype=torch.int64)] = torch.arange(len(classes))
    out = lookup[labels]
    missing = out < 0
    if bool(missing.any()):
        raise DataError(f"label {int(labels[missing][0])} is not one of the classes {classes}")
    return out


def _classes(data: DataConfig) -> list[int]:
    return list(range(10)) if data.classes is None else list(data.classes)


def _pool(data: DataConfig) -> Split | None:
    """The one pool train and test are both drawn from (the embedded data, an unsplit image
    folder); None for sources that come split into files (IDX, .npz, train/ + test/ folders)."""
    if data.source == "embedded":
        return load_embedded()
    source = opened_source(data.source, data.dataset)
    return source.splits["all"] if source is not None and source.pooled else None


def _file_split(data: DataConfig, split: str) -> Split:
    """A split-by-files source's "train" or "test" images (an IDX folder's read alone, so that
    t10k files alone serve a test)."""
    source = opened_source(data.source, data.dataset)
    if source is None:
        return load_idx_split(data.source, data.dataset, split)
    if split == "test" and "test" not in source.splits and "val" in source.splits:
        split = "val"  # a set published with train and val only is tested on val
    if split not in source.splits:
        raise DataError(f"{source.location} has no {split} split (its splits: {', '.join(source.splits)})")
    return source.splits[split]


def _check_seed(seed: int) -> None:
    # numpy's SeedSequence refuses negative entropy; say so in our words.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")


def _class_order(labels: np.ndarray, c: int, seed: int, stream: int) -> np.ndarray:
    """Positions of class ``c`` in ``labels``, in a random order fixed by (seed, stream, c)."""
    positions = np.flatnonzero(labels == c)
    return np.random.default_rng([seed, stream, c]).permutation(positions)


def _check_present(split: Split, classes: list[int]) -> None:
    """Refuse a requested class the data lacks, before any count is checked (the likelier mistake)."""
    present = set(torch.unique(split.labels).tolist())
    for c in classes:
        if c not in present:
            raise DataError(f"class {c} has no images in {split.source}")


def _embedded_indices(
    split: Split, classes: list[int], seed: int, train_per_class: int | None,
    test_per_class: int | None, need_train: bool, all_test: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions into the embedded images, grouped by class.

    The test sample is the front of each class's order and the training sample
    follows it. ``test_per_class=None`` (or ``all_test``) makes the test sample
    every image of the class not in the training sample; the training sample
    is then the front of the order.
    """
    _check_present(split, classes)
    labels = split.labels.numpy()
    train, test = [], []
    for c in classes:
        order = _class_order(labels, c, seed, _TEST_STREAM)
        n = len(order)
        if test_per_class is None:
            if train_per_class is None:
                raise ConfigError(
                    "data.train_per_class and data.test_per_class cannot both be 'all' for the "
                    "embedded data: train and test come from the same 5,000 images"
                )
            if train_per_class >= n:
                raise DataError(
                    f"data.train_per_class={train_per_class} but class {c} has only {n} images in "
                    f"{split.source}, leaving none for testing"
                )
            train.append(order[:train_per_class])
            test.append(order[train_per_class:])
            continue
        if test_per_class > n:
            raise DataError(
                f"data.test_per_class={test_per_class} but class {c} has only {n} images in {split.source}"
            )
        rest = n - test_per_class
        if need_train:
            if train_per_class is None:
                if rest == 0:
                    raise DataError(
                        f"data.train_per_class=all but class {c} has no images left in {split.source} "
                        f"after the {test_per_class} held out for testing"
                    )
            elif train_per_class > rest:
                raise DataError(
                    f"data.train_per_class={train_per_class} but class {c} has only {n} images in "
                    f"{split.source} (minus {test_per_class} held out for testing: {rest} left)"
                )
        stop = n if train_per_class is None else test_per_class + train_per_class
        chosen_train = order[test_per_class:stop]
        train.append(chosen_train)
        # all_test: everything this seed's training sample does not use.
        test.append(np.concatenate([order[:test_per_class], order[stop:]]) if all_test
                    else order[:test_per_class])
    return np.concatenate(train), np.concatenate(test)


def _idx_indices(
    split: Split, classes: list[int], seed: int, per_class: int | None, stream: int, field: str,
) -> np.ndarray:
    """Positions of ``per_class`` images of each class (all when None), grouped by class."""
    _check_present(split, classes)
    labels = split.labels.numpy()
    chosen = []
    for c in classes:
        order = _class_order(labels, c, seed, stream)
        if per_class is not None and per_class > len(order):
            raise DataError(
                f"data.{field}={per_class} but class {c} has only {len(order)} images in {split.source}"
            )
        chosen.append(order if per_class is None else order[:per_class])
    return np.concatenate(chosen)


def load_splits(data: DataConfig, seed: int) -> tuple[Split, Split]:
    """The (train, test) samples a run uses.

    Each holds ``train_per_class`` / ``test_per_class`` images of every class in
    ``data.classes`` (all images of the class when None), grouped by class;
    shuffle when batching. Labels are class numbers; see :func:`class_index`.
    ``data.source`` is "embedded" (both from the 5,000 embedded images,
    disjoint) or an IDX folder (train from the train files, test from the t10k
    files, both required).
    """
    data.validate()
    _check_seed(seed)
    classes = _classes(data)
    pool = _pool(data)
    if pool is not None:
        train_idx, test_idx = _embedded_indices(
            pool, classes, seed, data.train_per_class, data.test_per_class, need_train=True
        )
        return pool.subset(train_idx), pool.subset(test_idx)
    train_full, test_full = _file_split(data, "train"), _file_split(data, "test")
    train_idx = _idx_indices(
        train_full, classes, seed, data.train_per_class, _TRAIN_STREAM, "train_per_class"
    )
    test_idx = _idx_indices(
        test_full, classes, seed, data.test_per_class, _TEST_STREAM, "test_per_class"
    )
    return train_full.subset(train_idx), test_full.subset(test_idx)


def load_unlabelled_pool(data: DataConfig, seed: int) -> Split:
    """Every image a run may pretrain on without labels (``data.pretrain_on="pool"``).

    For the embedded data: the 5,000 images of every class (not only
    ``data.classes``) minus this seed's test sample, so the test images are never
    seen, not even without labels. For an IDX folder: the whole train file.
    Labels are kept in the Split but pretraining never reads them.
    """
    data.validate()
    _check_seed(seed)
    full = _pool(data)
    if full is not None:
        _, test_idx = _embedded_indices(
            full, _classes(data), seed, data.train_per_class, data.test_per_class, need_train=True
        )
        keep = np.ones(len(full.labels), dtype=bool)
        keep[test_idx] = False
        return full.subset(np.flatnonzero(keep))
    return _file_split(data, "train")


def load_test_split(data: DataConfig, seed: int, all_test: bool = False) -> Split:
    """The test sample alone: what :func:`load_splits` returns as test for this seed.

    For an IDX folder only the t10k files are needed. ``all_test=True`` takes
    every test image of the chosen classes instead of ``test_per_class``: the
    whole t10k set for an IDX folder, and for the embedded data every image
    that this seed's training sample does not use.
    """
    data.validate()
    _check_seed(seed)
    classes = _classes(data)
    full = _pool(data)
    if full is not None:
        _, test_idx = _embedded_indices(
            full, classes, seed, data.train_per_class, data.test_per_class,
            need_train=all_test, all_test=all_test,
        )
        return full.subset(test_idx)
    test_full = _file_split(data, "test")
    per_class = None if all_test else data.test_per_class
    test_idx = _idx_indices(test_full, classes, seed, per_class, _TEST_STREAM, "test_per_class")
    return test_full.subset(test_idx)
