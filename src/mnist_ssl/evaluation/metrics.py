"""Classification metrics and the statistics used to compare runs.

Everything here is plain numpy on small arrays: predictions and targets are
class *indices* ``0..C-1`` (the position of a digit in ``data.classes``), never
the digits themselves. Accuracies are fractions in [0, 1]; reports print percent.

Conventions, fixed once for the whole project:

* confusion matrices have the **true** class on the rows and the **predicted**
  class on the columns (``confusion[i, j]`` = images of class i predicted as j),
  so a row sums to the number of test images of that class;
* intervals are Wilson score intervals (they stay inside [0, 1] and behave at
  100% accuracy, where the normal approximation collapses to a point);
* spreads over seeds are sample standard deviations (``ddof=1``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "wilson_interval",
    "confusion_matrix",
    "per_class_recall",
    "format_confusion",
    "classification_metrics",
    "paired_comparison",
    "summary",
    "pooled_interval",
    "TIE_TOLERANCE",
]

# Two per-seed accuracies closer than this count as a tie. Accuracies are k/n
# with n a few hundred, so real differences are >= 1/n; the tolerance only
# absorbs float noise from values that went through JSON or a division.
TIE_TOLERANCE = 1e-9


def _as_int_array(x: Any, name: str) -> np.ndarray:
    """A 1-D int64 numpy array from a list, numpy array or torch tensor."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices")
    return arr.astype(np.int64)


def accuracy(pred: Any, target: Any) -> float:
    """Fraction of ``pred == target``.

    pred, target: (N,) class indices (list, numpy array or torch tensor).
    An empty input has no accuracy and raises ``ValueError``.
    """
    p, t = _as_int_array(pred, "pred"), _as_int_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in length")
    if p.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(p == t))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n.

    centre = (p + z²/2n) / (1 + z²/n)
    half   = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²)

    Returns (lo, hi) clipped to [0, 1]. z=1.96 gives the 95% interval.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # The bounds at k=0 and k=n are exactly 0 and 1; set them so that float
    # rounding cannot put 100% accuracy just outside its own interval.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def confusion_matrix(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class.

    pred, target: (N,) class indices in ``[0, num_classes)``.
    """
    p, t = _as_int_array(pred, "pred"), _as_int_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in length")
    for name, arr in (("pred", p), ("target", t)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} holds an index outside [0, {num_classes})")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_recall(confusion: Any) -> np.ndarray:
    """(C,) recall of each class: diagonal / row sum.

    A class with no test images has no recall: its entry is NaN (JSON writers
    should turn it into ``null``; :func:`classification_metrics` does).
    """
    c = np.asarray(confusion, dtype=np.float64)
    support = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(c) / support, np.nan)


def format_confusion(confusion: Any) -> str:
    """The matrix as numpy prints an int array, e.g.::

        [[100   0   0]
         [  0  98   2]
         [  0   1  99]]

    This is the format of the source document's "Confusion Matrix:" lines, so a
    report can be set beside it character for character.
    """
    return str(np.asarray(confusion, dtype=np.int64))


def classification_metrics(logits_or_pred: Any, target: Any, classes: Sequence[Any]) -> dict:
    """Accuracy, 95% interval, confusion and recall of one evaluation.

    logits_or_pred: (N, C) logits/scores (argmax is taken) or (N,) predicted indices.
    target: (N,) true class indices. classes: the C class labels (e.g. digits [0, 1, 2]).

    Returns a JSON-ready dict with keys ``accuracy, n_test, ci95, confusion,
    recall, classes`` (the RunMetrics fields of docs/design.md).
    """
    x = logits_or_pred
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 2:
        pred = x.argmax(axis=1)
    elif x.ndim == 1:
        pred = x
    else:
        raise ValueError(f"expected (N, C) logits or (N,) predictions, got shape {x.shape}")
    num_classes = len(classes)
    if x.ndim == 2 and x.shape[1] != num_classes:
        raise ValueError(f"logits have {x.shape[1]} columns but there are {num_classes} classes")
    conf = confusion_matrix(pred, target, num_classes)
    n = int(conf.sum())
    correct = int(np.trace(conf))
    lo, hi = wilson_interval(correct, n)
    recall = per_class_recall(conf)
    return {
        "accuracy": correct / n,
        "n_test": n,
        "ci95": [lo, hi],
        "confusion": conf.tolist(),
        "recall": [None if math.isnan(r) else float(r) for r in recall],
        "classes": [c.item() if hasattr(c, "item") else c for c in classes],
    }


def summary(values: Sequence[float]) -> dict:
    """mean, std (sample std, ddof=1; 0.0 for a single value), min, max, n."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("summary of no values")
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict:
    """Compare method ``a`` with method ``b`` seed by seed (same test sample).

    a, b: per-seed accuracies, paired by position. Returns ``mean_diff``
    (mean of a - b, a fraction), ``std_diff`` (sample std of the differences,
    0.0 for one pair), ``wins`` (a > b), ``ties`` (|a - b| <= TIE_TOLERANCE),
    ``losses`` and ``n``. Pairing removes the sample-to-sample spread, which
    on 300 test images is as large as the differences between methods.
    """
    x = np.asarray(list(a), dtype=np.float64)
    y = np.asarray(list(b), dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_comparison needs equal lengths, got {x.size} and {y.size}")
    if x.size == 0:
        raise ValueError("paired_comparison of no pairs")
    d = x - y
    tie = np.abs(d) <= TIE_TOLERANCE
    return {
        "mean_diff": float(d.mean()),
        "std_diff": float(d.std(ddof=1)) if d.size > 1 else 0.0,
        "wins": int(np.sum((d > 0) & ~tie)),
        "ties": int(np.sum(tie)),
        "losses": int(np.sum((d < 0) & ~tie)),
        "n": int(d.size),
    }


def pooled_interval(correct_counts: Sequence[int], totals: Sequence[int], z: float = 1.96) -> tuple[float, float]:
    """Wilson interval of all seeds' test images taken together.

    correct_counts, totals: per-seed numbers of correct and of test images.
    Each seed draws its own test sample, so pooling estimates the method's
    accuracy over such samples. The samples of different seeds can share
    images (they come from the same 5,000), and runs of one method are not
    independent trials, so read the interval as a lower bound on the
    uncertainty, not an exact 95% statement.
    """
    k, n = int(np.sum(correct_counts)), int(np.sum(totals))
    return wilson_interval(k, n, z)
