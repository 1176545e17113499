"""One module per command; each has ``add_parser(subparsers)``, which registers the command's
parser with its function (``set_defaults(func=...)``). The CLI lists them here, in ``--help`` order."""

from __future__ import annotations

import importlib

import mnist_ssl
from mnist_ssl.commands import download, evaluate, finetune, label_efficiency, pretrain, report, reproduce

predict = importlib.import_module("mnist_ssl.predict")
# ``mnist_ssl.predict`` is also the Python API's function (served lazily by mnist_ssl/__init__.py);
# importing the command's module of the same name must not hide it.
vars(mnist_ssl).pop("predict", None)

COMMANDS = (reproduce, pretrain, finetune, evaluate, predict, label_efficiency, download, report)
