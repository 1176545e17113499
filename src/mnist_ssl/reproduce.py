"""The old import path of ``reproduce``'s helpers, for the benchmarks that still use it. New
code imports them from :mod:`mnist_ssl.experiment.reproduce` (docs/design.md)."""

from mnist_ssl.experiment.reproduce import machine, reproduce, versions  # noqa: F401
from mnist_ssl.report.summary import summary_table  # noqa: F401
from mnist_ssl.experiment.scheduler import StopFlag  # noqa: F401
