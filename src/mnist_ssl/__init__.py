"""mnist-ssl: self-supervised Vision Transformers on MNIST-family images.

The Python API (:mod:`mnist_ssl.api`): ``load_encoder``, ``load_classifier``,
``features``, ``classify``, ``class_probabilities``. They are imported on first
use, so ``import mnist_ssl`` stays cheap (no torch) for the CLI and its tools.
None of them may share a name with a submodule: importing ``mnist_ssl.predict``
(the command) would replace a function of that name on the package.
"""

__version__ = "0.1.0"

_API = ("load_encoder", "load_classifier", "features", "classify", "class_probabilities")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from mnist_ssl import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnist_ssl' has no attribute {name!r}")
