"""Metrics and statistics against hand-computed values."""

import math

import numpy as np
import pytest

from mnist_ssl.evaluation.metrics import (
    accuracy,
    classification_metrics,
    confusion_matrix,
    format_confusion,
    paired_comparison,
    per_class_recall,
    pooled_interval,
    summary,
    wilson_interval,
)


def _wilson_by_hand(k, n, z=1.96):
    # Written out independently of the implementation: solve
    # (p - phat)^2 = z^2 p (1 - p) / n for p, the quadratic
    # (1 + z^2/n) p^2 - (2 phat + z^2/n) p + phat^2 = 0.
    phat = k / n
    a = 1 + z**2 / n
    b = -(2 * phat + z**2 / n)
    c = phat**2
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("k,n", [(297, 300), (150, 300), (300, 300), (0, 300), (1, 7)])
def test_wilson_matches_quadratic_roots(k, n):
    lo, hi = wilson_interval(k, n)
    elo, ehi = _wilson_by_hand(k, n)
    assert lo == pytest.approx(elo, abs=1e-12)
    assert hi == pytest.approx(ehi, abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_textbook_values():
    # k=0, n=10: the upper limit z^2/(n+z^2) = 3.8416/13.8416 = 0.27754.
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=1e-4)
    # 297/300 by hand: [0.97101, 0.99659].
    lo, hi = wilson_interval(297, 300)
    assert (round(lo, 4), round(hi, 4)) == (0.9710, 0.9966)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_confusion_and_recall_hand_case():
    target = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 1, 1, 1, 2, 2, 0, 2]
    conf = confusion_matrix(pred, target, 3)
    assert conf.dtype.kind == "i"
    assert conf.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 3]]  # rows = true class
    np.testing.assert_allclose(per_class_recall(conf), [2 / 3, 1.0, 0.75])
    assert accuracy(pred, target) == pytest.approx(7 / 9)


def test_recall_of_an_absent_class_is_nan_and_json_null():
    conf = confusion_matrix([0, 1], [0, 1], 3)
    rec = per_class_recall(conf)
    assert rec[:2].tolist() == [1.0, 1.0] and math.isnan(rec[2])
    m = classification_metrics([0, 1], [0, 1], [0, 1, 2])
    assert m["recall"] == [1.0, 1.0, None]


def test_format_confusion_is_numpy_print():
    conf = [[100, 0, 0], [0, 98, 2], [0, 1, 99]]
    assert format_confusion(conf) == "[[100   0   0]\n [  0  98   2]\n [  0   1  99]]"
    assert format_confusion(np.array(conf)) == str(np.array(conf))


def test_classification_metrics_from_logits_and_predictions():
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 1.0, 0.5], [0.0, 3.0, 0.2], [0.1, 0.0, 0.9]])
    target = [0, 1, 2, 2]
    m = classification_metrics(logits, target, [3, 5, 8])
    assert set(m) == {"accuracy", "n_test", "ci95", "confusion", "recall", "classes"}
    assert m["accuracy"] == 0.75 and m["n_test"] == 4
    assert m["classes"] == [3, 5, 8]
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert m["ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    assert classification_metrics(logits.argmax(1), target, [3, 5, 8]) == m


def test_paired_comparison_hand_numbers():
    r = paired_comparison([0.99, 0.98, 0.97], [0.98, 0.98, 0.99])
    assert r["mean_diff"] == pytest.approx(-0.01 / 3)
    # differences 0.01, 0, -0.02: mean -1/300, sample std sqrt(((4/300)^2+(1/300)^2+(5/300)^2)/2)
    assert r["std_diff"] == pytest.approx(math.sqrt((16 + 1 + 25) / 2) / 300)
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (1, 1, 1, 3)
    with pytest.raises(ValueError):
        paired_comparison([0.9], [0.9, 0.8])


def test_summary_uses_sample_std():
    s = summary([0.97, 0.98, 0.99])
    assert s["mean"] == pytest.approx(0.98)
    assert s["std"] == pytest.approx(0.01)  # ddof=1; the population std would be 0.00816
    assert (s["min"], s["max"], s["n"]) == (0.97, 0.99, 3)
    assert summary([0.5])["std"] == 0.0


def test_pooled_interval_is_wilson_on_summed_counts():
    assert pooled_interval([297, 295], [300, 300]) == wilson_interval(592, 600)
