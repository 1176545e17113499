"""Reports built from a run folder's files: figures, report.md, report.html, the metrics schema."""

from mnist_ssl.report.report import DOCUMENT_FIGURES, build_report, collect, load_metrics, read_log
from mnist_ssl.report.schema import METRICS_SCHEMA, SCHEMA_ID, validate_metrics

__all__ = [
    "DOCUMENT_FIGURES",
    "METRICS_SCHEMA",
    "SCHEMA_ID",
    "build_report",
    "collect",
    "load_metrics",
    "read_log",
    "validate_metrics",
]
