"""Frozen-feature evaluations: feature extraction, linear probe, kNN.

These measure what pretraining put into the encoder *before* fine-tuning
changes it: the encoder is frozen and only a linear classifier (or no
classifier at all, for kNN) is fitted on its CLS features.

Features may be numpy arrays or torch tensors, (N, D); labels (N,) ints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_ssl.evaluation.metrics import accuracy

__all__ = ["FEATURE_POOLS", "extract_features", "frozen_evaluations", "linear_probe", "linear_probe_cv",
           "knn_predict", "knn_eval", "knn_weighted_predict", "knn_weighted_eval", "top_k_stable"]

# The field's kNN protocol (Wu et al. 2018, as DINO and solo-learn run it): 20 neighbours,
# each voting with weight exp(cosine / 0.07).
WEIGHTED_KNN_K = 20
WEIGHTED_KNN_TEMPERATURE = 0.07
# Inverse L2 strengths the cross-validated probe chooses from (log-spaced, 1e-3 .. 1e2).
PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
# What a frozen feature vector is made of: the CLS token (what fine-tuning uses), the mean of the
# patch tokens (MAE's global pool), both concatenated (DINO's linear evaluation of ViT-B), or
# both from each of the last four blocks (DINO's ``n_last_blocks=4``, which it uses for ViT-S:
# a narrow encoder keeps in its earlier blocks what its last one does not hold linearly).
FEATURE_POOLS = ("cls", "mean", "cls+mean", "last4")
LAST_BLOCKS = 4


class PooledEncoder(nn.Module):
    """``encoder``'s tokens pooled as ``pool`` (one of :data:`FEATURE_POOLS`): (B, D), (B, 2D), or
    for "last4" (B, 2D x min(4, depth)): CLS then mean patch token of each block, earliest first."""

    def __init__(self, encoder: nn.Module, pool: str) -> None:
        super().__init__()
        if pool not in FEATURE_POOLS:
            raise ValueError(f"pool={pool!r}: choose from {', '.join(FEATURE_POOLS)}")
        self.encoder, self.pool = encoder, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "cls":
            return self.encoder(x)
        if self.pool == "last4":
            return torch.cat([f for h in self.encoder.encode_layers(x, LAST_BLOCKS)
                              for f in (h[:, 0], h[:, 1:].mean(dim=1))], dim=1)
        h = self.encoder.encode(x)
        mean = h[:, 1:].mean(dim=1)
        return mean if self.pool == "mean" else torch.cat([h[:, 0], mean], dim=1)


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """numpy copy of a tensor/array (features in float64 for stable sklearn fits)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


@torch.no_grad()
def extract_features(encoder: nn.Module, images_float: Any, batch_size: int = 256, pool: str = "cls") -> torch.Tensor:
    """CLS features of ``images_float`` through a frozen encoder (``pool``: see :data:`FEATURE_POOLS`;
    other than "cls" the encoder must have ``encode``, as :class:`~mnist_ssl.models.vit.ViTEncoder`).

    encoder: ``encoder(x) -> (B, D)``. images_float: (N, C, H, W) or
    (N, C, T, H, W) floats (numpy or torch), already normalised as the encoder
    expects. Returns a (N, D) float32 CPU tensor.

    The encoder runs in eval mode (no dropout: features must be deterministic)
    on its own device; its previous train/eval mode is restored afterwards so
    a caller in the middle of training is not disturbed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    x = images_float if isinstance(images_float, torch.Tensor) else torch.as_tensor(np.asarray(images_float))
    x = x.float()
    if pool != "cls":
        encoder = PooledEncoder(encoder, pool)
    try:
        device = next(encoder.parameters()).device
    except StopIteration:  # a parameter-free encoder (tests): stay on CPU
        device = torch.device("cpu")
    was_training = encoder.training
    encoder.eval()
    try:
        chunks = [encoder(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        encoder.train(was_training)
    if not chunks:
        raise ValueError("extract_features got no images")
    return torch.cat(chunks, dim=0)


def linear_probe(train_x: Any, train_y: Any, test_x: Any, test_y: Any, C: float = 1.0) -> dict:
    """Logistic regression on frozen features.

    train_x: (N, D), train_y: (N,), test_x: (M, D), test_y: (M,).
    Features are standardised with the *training* mean and std (the test set
    must not leak into the fit); constant features keep scale 1. The model is
    sklearn's ``LogisticRegression(max_iter=2000, C=C)`` (L2, lbfgs).

    Returns ``{"accuracy", "train_accuracy", "n_train", "n_test", "C"}``.
    """
    from sklearn.linear_model import LogisticRegression  # slow import: only when used

    xtr, xte = _np(train_x), _np(test_x)
    ytr, yte = _np(train_y, np.int64), _np(test_y, np.int64)
    xtr, xte = _standardise(xtr, xte)
    clf = LogisticRegression(max_iter=2000, C=C)
    clf.fit(xtr, ytr)
    return {
        "accuracy": accuracy(clf.predict(xte), yte),
        "train_accuracy": accuracy(clf.predict(xtr), ytr),
        "n_train": int(ytr.size),
        "n_test": int(yte.size),
        "C": float(C),
    }


def _standardise(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled with the training mean and std (constant features keep scale 1)."""
    mean = xtr.mean(axis=0)
    std = xtr.std(axis=0)
    std[std < 1e-12] = 1.0
    return (xtr - mean) / std, (xte - mean) / std


def linear_probe_cv(train_x: Any, train_y: Any, test_x: Any, test_y: Any, Cs: tuple[float, ...] = PROBE_CS,
                    folds: int = 5, seed: int = 0, default_C: float = 1.0, holdout: float | None = None) -> dict:
    """Logistic regression on standardised frozen features, its C chosen on the labelled set only.

    Features are standardised with the training mean and std (as :func:`linear_probe`). C
    is the value of ``Cs`` with the best mean accuracy over a stratified ``folds``-fold
    cross-validation of the *training* rows (shuffled with ``seed``; the smaller C on a
    tie); the probe is then refitted on every training row with it. The test rows are
    used only for the reported accuracy. With fewer than two training rows in some class
    there is no stratified split: C is ``default_C`` and ``C_chosen_by`` says so. Folds
    are capped by the smallest class count. ``holdout`` (a fraction in (0, 1)) replaces the
    folds by one stratified split that holds out that fraction of the training rows: one fit
    per C instead of ``folds``, for large labelled sets (60,000 rows).

    Returns ``{"accuracy", "train_accuracy", "n_train", "n_test", "C", "C_chosen_by",
    "cv_accuracy", "folds", "Cs", "unconverged_Cs"}`` (``cv_accuracy``, ``folds``: None without
    cross-validation; ``unconverged_Cs``: the Cs whose lbfgs stopped at max_iter in some fit).
    """
    from sklearn.model_selection import StratifiedKFold

    xtr, xte = _standardise(_np(train_x), _np(test_x))
    ytr, yte = _np(train_y, np.int64), _np(test_y, np.int64)
    if not Cs or any(not c > 0 for c in Cs):
        raise ValueError(f"Cs={Cs} must be positive numbers")
    if holdout is not None and not 0 < holdout < 1:
        raise ValueError(f"holdout={holdout} must be a fraction in (0, 1)")
    n_folds = min(folds, int(np.bincount(np.unique(ytr, return_inverse=True)[1]).min()))
    cv_accuracy = None
    unconverged: set = set()
    if n_folds >= 2:
        if holdout is None:
            splits = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(xtr, ytr))
            chosen_by = f"{n_folds}-fold cross-validation on the training rows"
        else:
            from sklearn.model_selection import StratifiedShuffleSplit

            splits = list(StratifiedShuffleSplit(n_splits=1, test_size=holdout, random_state=seed).split(xtr, ytr))
            chosen_by, n_folds = f"a stratified {holdout:g} hold-out of the training rows", 1
        scores = []
        for c in Cs:
            correct = held = 0
            for fit_idx, val_idx in splits:
                clf = _fit_logreg(xtr[fit_idx], ytr[fit_idx], c, unconverged)
                correct += int((clf.predict(xtr[val_idx]) == ytr[val_idx]).sum())
                held += len(val_idx)
            scores.append(correct / held)
        best = int(np.argmax(scores))  # first maximum: Cs ascending -> the stronger regularisation
        C, cv_accuracy = float(Cs[best]), scores[best]
    else:
        C, chosen_by, n_folds = float(default_C), "default (a class has fewer than 2 training rows)", None
    clf = _fit_logreg(xtr, ytr, C, unconverged)
    return {
        "accuracy": accuracy(clf.predict(xte), yte),
        "train_accuracy": accuracy(clf.predict(xtr), ytr),
        "n_train": int(ytr.size),
        "n_test": int(yte.size),
        "C": C,
        "C_chosen_by": chosen_by,
        "cv_accuracy": None if cv_accuracy is None else float(cv_accuracy),
        "folds": n_folds,
        "Cs": [float(c) for c in Cs],
        "unconverged_Cs": sorted(unconverged),
    }


def _fit_logreg(x: np.ndarray, y: np.ndarray, C: float, unconverged: set):
    """sklearn's lbfgs logistic regression; a fit that stops at max_iter adds its C to
    ``unconverged`` (reported in the result) instead of printing a warning per fit."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(max_iter=2000, C=C).fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        unconverged.add(float(C))
    return clf


def top_k_stable(sim: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's k largest values, largest first, the lower column first among
    equal values: ``np.argsort(-sim, kind="stable")[:, :k]`` exactly, without sorting whole rows
    (a partition finds each row's k-th value, then only the columns at or above it are sorted)."""
    m, n = sim.shape
    if k >= n:
        return np.argsort(-sim, axis=1, kind="stable")[:, :k]
    kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]
    out = np.empty((m, k), dtype=np.int64)
    for i in range(m):
        cols = np.flatnonzero(sim[i] >= kth[i])  # ascending: the stable sort keeps the lower column first
        out[i] = cols[np.argsort(-sim[i, cols], kind="stable")[:k]]
    return out


def knn_predict(train_x: Any, train_y: Any, test_x: Any, k: int = 5, chunk: int = 512) -> np.ndarray:
    """Cosine k-nearest-neighbour predictions, with every tie rule written down.

    train_x: (N, D), train_y: (N,) labels (any ints), test_x: (M, D).
    Returns (M,) predicted labels (values from ``train_y``).

    1. Similarity is the cosine of the angle (rows scaled to unit norm; an
       all-zero row has similarity 0 to everything).
    2. The k neighbours are the k most similar training rows; among training
       rows *exactly* as similar as the k-th, the lower training index wins
       (a stable sort), so the result never depends on the sort algorithm.
    3. The class with most votes wins; a tie in votes goes to the tied class
       whose neighbours have the larger summed similarity; if that is tied
       too, the smaller label wins.
    """
    xtr, xte = _np(train_x), _np(test_x)
    ytr = _np(train_y, np.int64)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"knn needs (N, D) and (M, D) features, got {xtr.shape} and {xte.shape}")
    if not 1 <= k <= xtr.shape[0]:
        raise ValueError(f"k={k} must be in [1, {xtr.shape[0]}] (the number of training rows)")
    labels, ytr_idx = np.unique(ytr, return_inverse=True)  # any labels -> 0..L-1, sorted
    n_labels = labels.size
    xtr = xtr / np.maximum(np.linalg.norm(xtr, axis=1, keepdims=True), 1e-12)
    xte = xte / np.maximum(np.linalg.norm(xte, axis=1, keepdims=True), 1e-12)
    out = np.empty(xte.shape[0], dtype=np.int64)
    for s in range(0, xte.shape[0], chunk):  # chunks bound the (chunk, N) similarity matrix
        sim = xte[s : s + chunk] @ xtr.T
        nn_idx = top_k_stable(sim, k)  # (m, k)
        nn_sim = np.take_along_axis(sim, nn_idx, axis=1)
        nn_lab = ytr_idx[nn_idx]
        m = nn_idx.shape[0]
        rows = np.repeat(np.arange(m), k)
        votes = np.zeros((m, n_labels))
        sims = np.zeros((m, n_labels))
        np.add.at(votes, (rows, nn_lab.ravel()), 1.0)
        np.add.at(sims, (rows, nn_lab.ravel()), nn_sim.ravel())
        # Among the classes with the most votes, take the largest summed
        # similarity; np.argmax returns the first (smallest label) on a tie.
        top = votes == votes.max(axis=1, keepdims=True)
        out[s : s + m] = np.argmax(np.where(top, sims, -np.inf), axis=1)
    return labels[out]


def knn_eval(train_x: Any, train_y: Any, test_x: Any, test_y: Any, k: int = 5) -> dict:
    """Accuracy of :func:`knn_predict` on ``test_y``: ``{"accuracy", "k", "n_test"}``."""
    pred = knn_predict(train_x, train_y, test_x, k=k)
    yte = _np(test_y, np.int64)
    return {"accuracy": accuracy(pred, yte), "k": int(k), "n_test": int(yte.size)}


def knn_weighted_predict(train_x: Any, train_y: Any, test_x: Any, k: int = WEIGHTED_KNN_K,
                         temperature: float = WEIGHTED_KNN_TEMPERATURE, chunk: int = 512) -> np.ndarray:
    """Weighted cosine kNN, the field's protocol (DINO's ``knn_classifier``, solo-learn's WeightedKNN).

    The k most similar training rows (cosine; the lower training index wins a tie at the
    k-th place) each add exp(similarity / temperature) to their class's score; the class
    with the largest score wins, the smaller label on an exact tie. ``k`` larger than the
    number of training rows uses every row (few-label budgets). Returns (M,) labels.
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    xtr, xte = _np(train_x), _np(test_x)
    ytr = _np(train_y, np.int64)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"knn needs (N, D) and (M, D) features, got {xtr.shape} and {xte.shape}")
    k = min(k, xtr.shape[0])
    labels, ytr_idx = np.unique(ytr, return_inverse=True)
    xtr = xtr / np.maximum(np.linalg.norm(xtr, axis=1, keepdims=True), 1e-12)
    xte = xte / np.maximum(np.linalg.norm(xte, axis=1, keepdims=True), 1e-12)
    out = np.empty(xte.shape[0], dtype=np.int64)
    for s in range(0, xte.shape[0], chunk):
        sim = xte[s : s + chunk] @ xtr.T
        nn_idx = top_k_stable(sim, k)
        # exp((sim - 1) / T): the same ranking of classes as exp(sim / T), without overflow
        weights = np.exp((np.take_along_axis(sim, nn_idx, axis=1) - 1.0) / temperature)
        m = nn_idx.shape[0]
        scores = np.zeros((m, labels.size))
        np.add.at(scores, (np.repeat(np.arange(m), k), ytr_idx[nn_idx].ravel()), weights.ravel())
        out[s : s + m] = np.argmax(scores, axis=1)
    return labels[out]


def knn_weighted_eval(train_x: Any, train_y: Any, test_x: Any, test_y: Any, k: int = WEIGHTED_KNN_K,
                      temperature: float = WEIGHTED_KNN_TEMPERATURE) -> dict:
    """Accuracy of :func:`knn_weighted_predict`: ``{"accuracy", "k", "temperature", "n_test"}``,
    ``k`` the number of neighbours actually used (at most the training rows)."""
    pred = knn_weighted_predict(train_x, train_y, test_x, k=k, temperature=temperature)
    yte = _np(test_y, np.int64)
    return {"accuracy": accuracy(pred, yte), "k": int(min(k, _np(train_y).size)),
            "temperature": float(temperature), "n_test": int(yte.size)}


def frozen_evaluations(train_x: Any, train_y: Any, test_x: Any, test_y: Any, *, knn_k: int, seed: int = 0,
                       linear_probe_c: float | None = None, linear: bool = True, knn: bool = True,
                       holdout: float | None = None) -> dict:
    """The frozen evaluations every report shows, on given features: ``linear_probe_cv`` (C chosen on
    the training rows; ``holdout`` as there) and, with ``linear_probe_c``, the fixed-C
    ``linear_probe``; ``knn`` (plain vote of ``knn_k``) and ``knn_weighted``.
    ``linear`` / ``knn`` False leave their group out."""
    out: dict = {}
    if linear:
        if linear_probe_c is not None:
            out["linear_probe"] = linear_probe(train_x, train_y, test_x, test_y, C=linear_probe_c)
        out["linear_probe_cv"] = linear_probe_cv(train_x, train_y, test_x, test_y, seed=seed, holdout=holdout)
    if knn:
        out["knn"] = knn_eval(train_x, train_y, test_x, test_y, k=knn_k)
        out["knn_weighted"] = knn_weighted_eval(train_x, train_y, test_x, test_y)
    return out

