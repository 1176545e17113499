"""``mnist-ssl pretrain``: pretrain an encoder with one method, no labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_ssl.commands.common import add_data_args, add_run_args, build_config, methods_help, prepare_out_dir


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder with one method (no labels)")
    p.add_argument("--method", default="mae", help=f"one of {methods_help()}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/pretrain")
    add_data_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnist_ssl.engine import distributed
    from mnist_ssl.experiment.run import pretrain_only

    cfg = build_config(args, args.method)
    # Under torchrun only rank 0 checks and writes the folder (engine/distributed.py).
    out = prepare_out_dir(args.out, args.overwrite) if distributed.is_main() else Path(args.out)
    path = pretrain_only(cfg, out, quiet=args.quiet)
    if distributed.is_main():
        print(f"pretrained checkpoint: {path}")
    return 0
