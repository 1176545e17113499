"""``mnist-ssl label-efficiency``: accuracy versus labelled images per class, per method."""

from __future__ import annotations

import argparse

from mnist_ssl.commands.common import (add_data_args, add_run_args, build_config, command_line,
                                       default_methods_help, held, methods_help, parse_count, parse_methods,
                                       prepare_out_dir)
from mnist_ssl.errors import ConfigError
from mnist_ssl.objectives.registry import default_methods

SMALL_LABEL_BUDGET = 10  # budgets up to this many labels per class get 3 seeds by default


def add_parser(sub) -> None:
    p = sub.add_parser("label-efficiency", help="accuracy versus labelled images per class, per method",
                       description="Pretrain each method once on every training image without labels, then "
                                   "fine-tune and linear-probe with k labelled images per class "
                                   "(src/mnist_ssl/experiment/label_efficiency.py tells the protocol).")
    p.add_argument("--methods", default=",".join(default_methods()),
                   help=f"comma-separated, from: {methods_help()} (supervised = no pretraining; default: "
                        f"{default_methods_help()})")
    p.add_argument("--labels", default="1,5,10,100,all", metavar="K,...",
                   help="labelled images per class (default 1,5,10,100,all)")
    p.add_argument("--seeds", default=None, metavar="N,...",
                   help="seeds per budget, one number per --labels entry or one for all (default: 3 for "
                        f"k <= {SMALL_LABEL_BUDGET}, 1 above, i.e. 3,3,3,1,1 for the default --labels)")
    p.add_argument("--first-seed", type=int, default=0, metavar="K",
                   help="seeds K, K+1, ... instead of 0, 1, ... (default 0), e.g. report seeds that no "
                        "setting was chosen on. Seed s draws the labelled images and seeds the fine-tuning "
                        "(and the from-scratch ViT), so its row is the same whatever K; the test sample and "
                        "the pretraining (seed: --set seed=N) do not change with K")
    p.add_argument("--finetune-steps", type=int, default=1000,
                   help="optimiser steps of each fine-tuning, or --finetune-min-epochs epochs if that is "
                        "more (default 1000); it starts from a head fitted on the frozen features "
                        "(finetune.head_init=probe)")
    p.add_argument("--finetune-min-epochs", type=int, default=30,
                   help="fine-tune at least this many epochs of the labelled images (default 30; a set "
                        "of more than 125 batches gets a larger batch instead)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the raw-pixel baselines (SVM, 1-NN, logistic regression) on the same labels")
    p.add_argument("--out", default="runs/label-efficiency")
    p.add_argument("--resume", action="store_true",
                   help="keep finished rows and pretrained encoders in --out (same data, budget and "
                        "--first-seed required)")
    add_data_args(p)
    add_run_args(p)
    p.set_defaults(func=run, seed=None)


def seed_counts(text: str | None, labels: list) -> list[int]:
    """--seeds for each budget of --labels. The default 3,3,3,1,1 for the default budgets, as a
    rule so that any --labels works alone: small budgets vary most from draw to draw and cost
    least, so they get 3 seeds."""
    if text is None:
        text = ",".join("3" if k is not None and k <= SMALL_LABEL_BUDGET else "1" for k in labels)
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected numbers, e.g. 5,5,5,2,1") from None
    if any(s < 1 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: each count must be >= 1")
    return seeds * len(labels) if len(seeds) == 1 else seeds


def run(args: argparse.Namespace) -> int:
    from mnist_ssl.experiment.label_efficiency import run_label_efficiency

    if args.classes is None:
        args.classes = "all"
    methods = parse_methods(args.methods)
    labels = [parse_count(k, "--labels") for k in args.labels.split(",")]
    seeds = seed_counts(args.seeds, labels)
    if args.first_seed < 0:
        raise ConfigError(f"--first-seed {args.first_seed}: must be >= 0")
    configs = {m: build_config(args, m) for m in methods}
    out = prepare_out_dir(args.out, args.overwrite, args.resume)
    for flag, value in (("--finetune-steps", args.finetune_steps),
                        ("--finetune-min-epochs", args.finetune_min_epochs)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be >= 1")
    with held(out) as stop:  # one job per folder; SIGINT/SIGTERM stop at the next batch
        run_label_efficiency(configs, out, labels=labels, seeds=seeds, first_seed=args.first_seed,
                             finetune_steps=args.finetune_steps,
                             min_epochs=args.finetune_min_epochs, baselines=not args.no_baselines,
                             quiet=args.quiet, resume=args.resume, command=command_line(), stop_requested=stop)
    return 0
