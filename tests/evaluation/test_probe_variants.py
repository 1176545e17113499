"""The field's weighted kNN and the cross-validated linear probe, beside the plain ones."""

import math

import numpy as np
import pytest

from mnist_ssl.evaluation.probe import (knn_predict, knn_weighted_eval, knn_weighted_predict, linear_probe,
                                        linear_probe_cv)


def _blobs(n_per_class, dim, seed, sep=4.0, classes=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * sep
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + rng.normal(size=(y.size, dim)), y


# ----- weighted kNN -------------------------------------------------------------------
def test_weighted_vote_matches_a_hand_computation():
    # Three neighbours: one very similar of class 1, two less similar of class 0.
    train = np.array([[1.0, 0.1], [1.0, 0.9], [1.0, -0.9], [-1.0, 0.0]])
    labels = np.array([1, 0, 0, 2])
    test = np.array([[1.0, 0.0]])
    cos = train[:3] @ test[0] / np.linalg.norm(train[:3], axis=1)
    for T, expected in [(0.07, 1), (10.0, 0)]:
        w = np.exp(cos / T)
        by_hand = 1 if w[0] > w[1] + w[2] else 0
        assert by_hand == expected  # the two regimes: a sharp vote follows the nearest, a flat one the count
        assert knn_weighted_predict(train, labels, test, k=3, temperature=T).tolist() == [expected]
    # the plain vote counts: two class-0 neighbours beat one
    assert knn_predict(train, labels, test, k=3).tolist() == [0]


def test_weighted_knn_uses_at_most_the_training_rows_and_ties_go_to_the_smaller_label():
    train = np.array([[1.0, 1.0], [1.0, -1.0]])
    test = np.array([[1.0, 0.0]])
    assert knn_weighted_predict(train, np.array([5, 3]), test, k=20).tolist() == [3]
    r = knn_weighted_eval(train, np.array([5, 3]), test, np.array([3]), k=20)
    assert r == {"accuracy": 1.0, "k": 2, "temperature": 0.07, "n_test": 1}


def test_weighted_knn_is_cosine_and_stable_at_low_temperature():
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(50, 6)), rng.integers(0, 4, size=50)
    test = rng.normal(size=(9, 6))
    scaled = train * rng.uniform(0.1, 10, size=(50, 1))
    a = knn_weighted_predict(train, labels, test, k=20, temperature=0.01)
    assert (a == knn_weighted_predict(scaled, labels, test, k=20, temperature=0.01)).all()
    # k = 1: the nearest row's label, as the plain vote
    assert (knn_weighted_predict(train, labels, test, k=1) == knn_predict(train, labels, test, k=1)).all()
    with pytest.raises(ValueError):
        knn_weighted_predict(train, labels, test, temperature=0.0)


def test_weighted_knn_is_accurate_on_separable_blobs():
    xtr, ytr = _blobs(20, 8, seed=1)
    xte, yte = _blobs(10, 8, seed=1)
    assert knn_weighted_eval(xtr, ytr, xte + 0.05, yte)["accuracy"] == 1.0


# ----- cross-validated probe -------------------------------------------------------------
def test_cv_probe_chooses_C_on_the_training_rows_only():
    xtr, ytr = _blobs(15, 20, seed=3, sep=0.6)
    xte, yte = _blobs(40, 20, seed=3, sep=0.6)
    r = linear_probe_cv(xtr, ytr, xte, yte, seed=0)
    assert r["C"] in r["Cs"] and r["folds"] == 5 and 0 <= r["cv_accuracy"] <= 1
    assert r["C_chosen_by"].startswith("5-fold")
    # the chosen C is the same whatever the test rows are (they take no part in the choice)
    other = linear_probe_cv(xtr, ytr, xte[::-1] * 3 + 1, yte[::-1], seed=0)
    assert other["C"] == r["C"] and other["cv_accuracy"] == r["cv_accuracy"]
    # and with the chosen C it is the plain probe
    assert linear_probe(xtr, ytr, xte, yte, C=r["C"])["accuracy"] == r["accuracy"]


def test_cv_probe_picks_strong_regularisation_for_noisy_few_label_data():
    # 6 rows per class in 200 dimensions of noise with a weak signal: a small C wins.
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 6)
    x = rng.normal(size=(12, 200))
    x[:, 0] += 1.5 * (2 * y - 1)
    r = linear_probe_cv(x, y, x, y, Cs=(0.001, 1000.0), folds=3)
    assert r["C"] == 0.001 and r["folds"] == 3


def test_cv_probe_without_enough_labels_falls_back_to_the_default():
    xtr, ytr = _blobs(1, 4, seed=0)  # one row per class: no stratified split exists
    r = linear_probe_cv(xtr, ytr, xtr, ytr, default_C=0.5)
    assert r["C"] == 0.5 and r["folds"] is None and r["cv_accuracy"] is None
    assert "fewer than 2" in r["C_chosen_by"]
    xtr, ytr = _blobs(3, 4, seed=0)
    assert linear_probe_cv(xtr, ytr, xtr, ytr)["folds"] == 3  # capped by the smallest class
    with pytest.raises(ValueError):
        linear_probe_cv(xtr, ytr, xtr, ytr, Cs=(0.0,))


def test_plain_probe_is_still_the_fixed_C_fit():
    # The plain probe keeps its recorded behaviour: train-set standardisation, then
    # LogisticRegression(C=1, max_iter=2000), no search.
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = _blobs(10, 5, seed=7, sep=1.0)
    xte, yte = _blobs(10, 5, seed=8, sep=1.0)
    mean, std = xtr.mean(0), xtr.std(0)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit((xtr - mean) / std, ytr)
    expected = float((clf.predict((xte - mean) / std) == yte).mean())
    r = linear_probe(xtr, ytr, xte, yte)
    assert r["C"] == 1.0 and r["accuracy"] == pytest.approx(expected, abs=1e-12)


def test_top_k_is_the_stable_full_sort_also_with_ties():
    from mnist_ssl.evaluation.probe import top_k_stable

    rng = np.random.default_rng(4)
    sim = np.round(rng.normal(size=(40, 300)), 1)  # one decimal: many exact ties, also at the k-th place
    for k in (1, 5, 20, 299, 300, 400):
        assert (top_k_stable(sim, k) == np.argsort(-sim, axis=1, kind="stable")[:, :k]).all(), k


def test_probe_reports_the_Cs_that_did_not_converge_instead_of_warning(monkeypatch, recwarn):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression.fit

    def fit_that_stops_early_at_large_C(self, *a, **kw):  # what lbfgs does at max_iter
        if self.C > 1:
            warnings.warn("lbfgs failed to converge", ConvergenceWarning)
        return fit(self, *a, **kw)

    monkeypatch.setattr(LogisticRegression, "fit", fit_that_stops_early_at_large_C)
    xtr, ytr = _blobs(10, 4, seed=2)
    r = linear_probe_cv(xtr, ytr, xtr, ytr, Cs=(0.1, 10.0, 100.0), folds=2)
    assert r["unconverged_Cs"] == [10.0, 100.0]
    assert linear_probe_cv(xtr, ytr, xtr, ytr, Cs=(0.1, 1.0), folds=2)["unconverged_Cs"] == []
    assert not [w for w in recwarn if issubclass(w.category, ConvergenceWarning)]
