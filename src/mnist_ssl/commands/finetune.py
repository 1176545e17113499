"""``mnist-ssl finetune``: fine-tune a pretrained checkpoint with labels, then test it."""

from __future__ import annotations

import argparse

from mnist_ssl.commands.common import add_data_args, add_run_args, build_config, command_line, held, prepare_out_dir


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained checkpoint with labels, then test it")
    p.add_argument("--checkpoint", required=True, help="a pretrained.safetensors (or its folder)")
    p.add_argument("--seed", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--out", default="runs/finetune")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped fine-tuning in --out from its last completed epoch (same flags)")
    add_data_args(p, defaults=False)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The run config comes from the checkpoint, then the command line's flags and --set on top."""
    from mnist_ssl.experiment.run import finetune_pretrained, load_pretrained

    out = prepare_out_dir(args.out, args.overwrite, args.resume)
    encoder, saved = load_pretrained(args.checkpoint)
    cfg = build_config(args, None, base=saved.to_dict())
    with held(out) as stop:
        metrics = finetune_pretrained(encoder, saved, cfg, out, quiet=args.quiet, stop_requested=stop,
                                      resume=args.resume, command=command_line())
    print(f"fine-tuned checkpoint: {metrics['checkpoint']}")
    return 0
