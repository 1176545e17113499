"""``mnist-ssl reproduce``: methods x seeds end to end, with baselines and a report."""

from __future__ import annotations

import argparse

from mnist_ssl.commands.common import (add_data_args, add_run_args, build_config, command_line,
                                       default_methods_help, methods_help, parse_methods, prepare_out_dir)
from mnist_ssl.errors import ConfigError
from mnist_ssl.objectives.registry import default_methods


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="run methods x seeds end to end, with baselines and a report",
                       description="Pretrain, fine-tune and evaluate each method for each seed, "
                                   "beside raw-pixel baselines; write metrics.json and report.md/html.")
    p.add_argument("--methods", default=",".join(default_methods()),
                   help=f"comma-separated, from: {methods_help()} (default: {default_methods_help()})")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (paired samples), default 1")
    p.add_argument("--first-seed", type=int, default=0, metavar="K",
                   help="seeds K, K+1, ... instead of 0, 1, ... (default 0), e.g. report seeds that no "
                        "setting was chosen on; seed s draws the sample and seeds every run's training")
    p.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    p.add_argument("--no-baselines", action="store_true", help="skip the raw-pixel baselines")
    p.add_argument("--no-report", action="store_true", help="skip report.md/report.html")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted job in --out: finished runs are kept, an unfinished run "
                        "continues from its last completed epoch (same flags required)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="run N (method, seed) runs (or batched groups of one method's seeds) at once, each in "
                        "its own worker process with --threads torch threads; default: one per CPU core, at "
                        "most one per run or group (1 on a GPU). With N > 1 the per-epoch lines and per-run "
                        "confusion matrices are not printed, one line per finished run is; the results are "
                        "those of --jobs 1")
    add_data_args(p)
    add_run_args(p)
    p.set_defaults(func=run, seed=None)


def run(args: argparse.Namespace) -> int:
    from mnist_ssl.engine.lock import FolderLock
    from mnist_ssl.experiment.reproduce import default_jobs, reproduce

    methods = parse_methods(args.methods)
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: must be >= 1")
    if args.first_seed < 0:
        raise ConfigError(f"--first-seed {args.first_seed}: must be >= 0")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: must be >= 1")
    configs = {m: build_config(args, m) for m in methods}
    jobs = args.jobs if args.jobs is not None else default_jobs(configs, args.seeds)
    out = prepare_out_dir(args.out, args.overwrite, args.resume)
    with FolderLock(out, command_line()):  # one job per folder; reproduce() handles SIGINT/SIGTERM itself
        reproduce(configs, out, seeds=args.seeds, first_seed=args.first_seed, baselines=not args.no_baselines,
                  quiet=args.quiet, resume=args.resume, command=command_line(),
                  report=not args.no_report, jobs=jobs)
    return 0
