"""Frozen-feature probes and raw-pixel baselines on constructed data."""

import numpy as np
import pytest
import torch
from torch import nn

from mnist_ssl.evaluation.baselines import BASELINES, run_baselines
from mnist_ssl.evaluation.probe import extract_features, knn_eval, knn_predict, linear_probe


def test_knn_majority_beats_similarity():
    train = np.array([[1.0, 0.1], [1.0, 0.5], [1.0, -0.2]])
    labels = np.array([1, 0, 0])
    test = np.array([[1.0, 0.0]])
    # k=1: the single most similar row (class 1).
    assert knn_predict(train, labels, test, k=1).tolist() == [1]
    # k=3: class 0 has two votes against one.
    assert knn_predict(train, labels, test, k=3).tolist() == [0]


def test_knn_vote_tie_goes_to_larger_summed_similarity():
    train = np.array([[1.0, 0.1], [1.0, 0.5]])  # class 1 closer (cos .995) than class 0 (cos .894)
    labels = np.array([1, 0])
    test = np.array([[1.0, 0.0], [0.5, 1.0]])  # second row is closer to the class-0 row
    assert knn_predict(train, labels, test, k=2).tolist() == [1, 0]


def test_knn_full_tie_goes_to_smaller_label_and_boundary_to_lower_index():
    train = np.array([[1.0, 1.0], [1.0, -1.0]])  # exactly equally similar to [1, 0]
    test = np.array([[1.0, 0.0]])
    # k=2: one vote each, equal summed similarity -> smaller label (3).
    assert knn_predict(train, np.array([5, 3]), test, k=2).tolist() == [3]
    # k=1: a tie for the one neighbour -> lower training index (label 7).
    assert knn_predict(train, np.array([7, 2]), test, k=1).tolist() == [7]


def test_knn_is_cosine_and_eval_reports_k():
    # Scaling a row does not change cosine similarity.
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20, 5))
    labels = rng.integers(0, 3, size=20)
    test = rng.normal(size=(7, 5))
    scaled = train * rng.uniform(0.1, 10, size=(20, 1))
    assert (knn_predict(train, labels, test, 3) == knn_predict(scaled, labels, test, 3)).all()
    r = knn_eval(torch.tensor(train), torch.tensor(labels), train, labels, k=1)
    assert r == {"accuracy": 1.0, "k": 1, "n_test": 20}
    with pytest.raises(ValueError):
        knn_predict(train, labels, test, k=21)


def _blobs(n_per_class, dim, seed, sep=4.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim)) * sep
    y = np.repeat(np.arange(3), n_per_class)
    x = centres[y] + rng.normal(size=(y.size, dim))
    return x, y


def test_linear_probe_separates_separable_data():
    xtr, ytr = _blobs(30, 8, seed=1)
    # Same seed: the same blob centres; extra noise makes the test points new.
    xte, yte = _blobs(20, 8, seed=1)
    xte = xte + np.random.default_rng(2).normal(scale=0.1, size=xte.shape)
    # A constant feature must not break the standardisation.
    xtr = np.hstack([xtr, np.ones((xtr.shape[0], 1))])
    xte = np.hstack([xte, np.ones((xte.shape[0], 1))])
    r = linear_probe(torch.tensor(xtr, dtype=torch.float32), ytr, xte, yte, C=1.0)
    assert r["accuracy"] == 1.0 and r["train_accuracy"] == 1.0
    assert (r["n_train"], r["n_test"], r["C"]) == (90, 60, 1.0)


class _Recorder(nn.Module):
    """Flatten + linear + dropout; records the mode it ran in."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 4)
        self.drop = nn.Dropout(0.5)
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.drop(self.lin(x.flatten(1)))


def test_extract_features_eval_mode_no_grad_and_restores_mode():
    enc = _Recorder().train()
    images = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    f1 = extract_features(enc, images, batch_size=3)
    f2 = extract_features(enc, torch.tensor(images), batch_size=256)
    assert f1.shape == (10, 4) and f1.dtype == torch.float32 and not f1.requires_grad
    assert enc.modes == [False] * 5  # 4 batches of <=3, then 1 batch
    torch.testing.assert_close(f1, f2)  # deterministic: no dropout
    assert enc.training  # restored
    enc.eval()
    extract_features(enc, images)
    assert not enc.training


def test_baselines_on_a_tiny_synthetic_problem():
    rng = np.random.default_rng(0)
    protos = rng.random((3, 1, 8, 8))

    def sample(n):
        y = np.repeat(np.arange(3), n)
        return np.clip(protos[y] + 0.1 * rng.normal(size=(y.size, 1, 8, 8)), 0, 1), y

    xtr, ytr = sample(10)
    xte, yte = sample(5)
    results = run_baselines(xtr, ytr, torch.tensor(xte), yte, classes=[0, 1, 2], seed=4)
    assert [r["method"] for r in results] == list(BASELINES) == ["svm", "knn", "logreg"]
    for r in results:
        assert r["accuracy"] == 1.0 and r["n_test"] == 15 and r["seed"] == 4
        assert r["confusion"] == [[5, 0, 0], [0, 5, 0], [0, 0, 5]]
        assert r["wall_time_s"] >= 0.0
    with pytest.raises(ValueError):
        run_baselines(xtr, ytr, xte, yte, [0, 1, 2], methods=["cnn"])
