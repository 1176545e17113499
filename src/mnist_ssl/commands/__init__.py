"""One module per command; each has ``add_parser(subparsers)``, which registers the command's
parser with its function (``set_defaults(func=...)``). The CLI lists them here, in ``--help`` order."""

from __future__ import annotations

import importlib

from mnist_ssl.commands import (download, embed, evaluate, export, finetune, label_efficiency, pretrain, probe,
                                report, reproduce)

predict = importlib.import_module("mnist_ssl.predict")

COMMANDS = (reproduce, pretrain, finetune, evaluate, predict, label_efficiency, probe, embed, export, download, report)
