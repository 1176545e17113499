"""``mnist-ssl download``: MNIST or Fashion-MNIST IDX files, checksum-verified."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="download MNIST or Fashion-MNIST IDX files, checksum-verified")
    p.add_argument("dataset", choices=["mnist", "fashion-mnist"])
    p.add_argument("--root", required=True, help="folder; files go to ROOT/<Name>/raw")
    p.add_argument("--mirror", action="append", metavar="URL", help="base URL to try first (repeatable)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnist_ssl.data import download

    for path in download(args.dataset, args.root, mirrors=args.mirror or None, timeout=args.timeout):
        print(path)
    return 0
