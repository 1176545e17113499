"""The old import path of a few experiment helpers, for the scripts and benchmarks that still
use it. New code imports them from :mod:`mnist_ssl.experiment` (docs/design.md)."""

from mnist_ssl.experiment.data import clip_builder as _clip_builder  # noqa: F401
from mnist_ssl.experiment.data import make_view, prepare_data  # noqa: F401
from mnist_ssl.experiment.runtime import resolve_device, seed_everything, setup_threads  # noqa: F401
from mnist_ssl.experiment.stages import predict_logits  # noqa: F401
