"""Evaluation: metrics and statistics, frozen-feature probes, raw-pixel baselines."""

from mnist_ssl.evaluation.baselines import BASELINES, REFERENCE, run_baselines
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
from mnist_ssl.evaluation.probe import extract_features, knn_eval, knn_predict, linear_probe

__all__ = [
    "BASELINES",
    "REFERENCE",
    "run_baselines",
    "accuracy",
    "classification_metrics",
    "confusion_matrix",
    "format_confusion",
    "paired_comparison",
    "per_class_recall",
    "pooled_interval",
    "summary",
    "wilson_interval",
    "extract_features",
    "knn_eval",
    "knn_predict",
    "linear_probe",
]
