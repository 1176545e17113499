"""``mnist-ssl pretrain``: pretrain an encoder with one method, no labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_ssl.commands.common import (add_data_args, add_run_args, build_config, command_line, held, methods_help,
                                      prepare_out_dir)


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder with one method (no labels)")
    p.add_argument("--method", default="mae", help=f"one of {methods_help()}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/pretrain")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped pretraining in --out from its last completed epoch (same flags)")
    add_data_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnist_ssl.engine import distributed
    from mnist_ssl.experiment.run import pretrain_only

    cfg = build_config(args, args.method)
    # Under torchrun only rank 0 checks, locks and writes the folder (engine/distributed.py).
    main_rank = distributed.is_main()
    out = prepare_out_dir(args.out, args.overwrite, args.resume) if main_rank else Path(args.out)
    with held(out, lock=main_rank) as stop:
        path = pretrain_only(cfg, out, quiet=args.quiet, stop_requested=stop, resume=args.resume,
                             command=command_line())
    if main_rank:
        print(f"pretrained checkpoint: {path}")
    return 0
