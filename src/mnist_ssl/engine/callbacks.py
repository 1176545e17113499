"""Callbacks hung off the engine: console lines, JSONL log, TensorBoard scalars, progress bar."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from mnist_ssl.errors import MnistSSLError


class TrainingInterrupted(MnistSSLError):
    """Raised by the engine when a stop was requested (Ctrl-C / SIGTERM).

    ``epoch`` is the epoch in progress (1-based); the state saved at the end of
    epoch ``epoch - 1`` (none when 0) is what ``--resume`` continues from.
    """

    def __init__(self, phase: str, epoch: int, message: str | None = None) -> None:
        super().__init__(message or f"{phase} interrupted during epoch {epoch}")
        self.phase = phase
        self.epoch = epoch

    @property
    def saved_epoch(self) -> int:
        return self.epoch - 1


class ConsolePrinter:
    """Prints ``Epoch k/N, <label>: x`` per epoch, as the source document does."""

    def __init__(self, label: str, stream: TextIO | None = None, extra_terms: bool = False) -> None:
        self.label = label
        self.stream = stream
        self.extra_terms = extra_terms

    def on_step(self, state) -> None:
        pass

    def on_epoch_end(self, state, record: dict) -> None:
        line = f"Epoch {record['epoch']}/{record['epochs']}, {self.label}: {record['loss']}"
        if self.extra_terms and len(record["terms"]) > 1:
            line += " (" + ", ".join(f"{k} {v:.4f}" for k, v in record["terms"].items()) + ")"
        stream = self.stream or sys.stdout
        if isinstance(stream, ProgressBar):
            stream.write_line(line)
        else:
            print(line, file=stream, flush=True)


class JSONLLogger:
    """Appends one JSON object per epoch to ``path`` (the run's log.jsonl)."""

    def __init__(self, path: str | Path, **fixed) -> None:
        self.path = Path(path)
        self.fixed = fixed

    def on_step(self, state) -> None:
        pass

    def on_epoch_end(self, state, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**self.fixed, **record}) + "\n")


def record_scalars(record: dict) -> dict[str, float]:
    """The scalars of one epoch record, named ``<phase>/<name>``: loss, each term, lr, time_s."""
    phase = record["phase"]
    out = {f"{phase}/loss": record["loss"]}
    out.update({f"{phase}/{k}": v for k, v in record.get("terms", {}).items()})
    out[f"{phase}/lr"] = record["lr"]
    out[f"{phase}/time_s"] = record["time_s"]
    return out


class TensorBoardLogger:
    """Writes each epoch's scalars (:func:`record_scalars`, step = epoch) as TensorBoard events.

    The JSONL log stays the source of truth; this is a view of it for
    ``tensorboard --logdir``. Evaluations go through :meth:`log_metrics`. The
    ``tensorboard`` package is optional (``pip install 'mnist-ssl[tensorboard]'``);
    without it, building the logger raises a ConfigError saying so.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.writer = tensorboard_writer(log_dir)

    def on_step(self, state) -> None:
        pass

    def on_epoch_end(self, state, record: dict) -> None:
        for name, value in record_scalars(record).items():
            self.writer.add_scalar(name, value, record["epoch"])
        self.writer.flush()  # a finished epoch is visible at once (and survives a crash)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Evaluation figures, e.g. {"eval/accuracy": 0.99, "eval/linear_probe": 0.95}."""
        for name, value in metrics.items():
            if value is not None:
                self.writer.add_scalar(name, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def eval_scalars(metrics: dict) -> dict[str, float | None]:
    """A run's evaluations (RunMetrics) as TensorBoard scalars: eval/accuracy, eval/tta, ..."""
    pick = lambda key: (metrics.get(key) or {}).get("accuracy")  # noqa: E731
    return {"eval/accuracy": metrics.get("accuracy"), "eval/tta": pick("tta"),
            "eval/linear_probe": pick("linear_probe"), "eval/knn": pick("knn")}


def require_tensorboard() -> None:
    """The ConfigError of :func:`tensorboard_writer`, before any work, when the package is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        tensorboard_writer(None)


def tensorboard_writer(log_dir: str | Path):
    """torch's ``SummaryWriter`` on ``log_dir``; a one-line ConfigError when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from mnist_ssl.errors import ConfigError

        raise ConfigError("--log tensorboard needs the tensorboard package: "
                          "pip install 'mnist-ssl[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(log_dir))


class ProgressBar:
    """One bar for a whole job (tqdm's), drawn on stderr only when it is a terminal.

    ``total`` counts steps over every (method, seed, phase); the engine calls
    :meth:`on_step` through the callback protocol. Lines printed through
    :meth:`write_line` go to stdout, above the bar.
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        from tqdm import tqdm

        stream = stream or sys.stderr
        self.enabled = stream.isatty() if enabled is None else enabled
        self.bar = tqdm(total=max(1, total), file=stream, disable=not self.enabled, mininterval=0.1,
                        dynamic_ncols=True, unit="step", leave=False)

    def set_description(self, desc: str) -> None:
        self.bar.set_description_str(desc)

    def on_step(self, state) -> None:
        self.bar.update(1)

    def on_epoch_end(self, state, record: dict) -> None:
        pass

    def advance(self, steps: int) -> None:
        self.bar.update(steps)

    def write_line(self, line: str) -> None:
        self.bar.write(line, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()
