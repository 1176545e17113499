"""Every file name of a run folder, a reproduce job folder and a label-efficiency folder.

Code that writes or reads one of these files asks these classes for its path;
no other module spells a run's file name. (The resume state's files belong to
``engine/resume.py``, the checkpoint's sidecar to ``engine/checkpoint.py``: a
checkpoint ``stem`` is written as ``stem.safetensors`` + ``stem.json``.)
"""

from __future__ import annotations

from pathlib import Path


class RunDir:
    """One (method, seed) run: ``runs/<method>/seed<k>/`` of a job, or a single command's --out."""

    CONFIG = "config.json"  # the resolved RunConfig
    LOG = "log.jsonl"  # one JSON line per epoch and phase
    METRICS = "metrics.json"  # written last: its presence marks a finished run
    PRETRAINED = "pretrained"  # checkpoint stem of the pretraining objective
    FINETUNED = "finetuned"  # checkpoint stem of the classifier
    FEATURES = "features.npz"  # frozen CLS features of the test images
    PREDICTIONS = "predictions.npz"  # test probabilities and the misclassified images
    LOSS_CURVE = "loss_curve.png"
    CONFUSION = "confusion.png"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def log(self) -> Path:
        return self.path / self.LOG

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def pretrained(self) -> Path:
        """The pretraining checkpoint's stem (save_checkpoint adds the suffixes)."""
        return self.path / self.PRETRAINED

    @property
    def pretrained_weights(self) -> Path:
        return self.path / f"{self.PRETRAINED}.safetensors"

    @property
    def pretrained_meta(self) -> Path:
        return self.path / f"{self.PRETRAINED}.json"

    @property
    def finetuned(self) -> Path:
        return self.path / self.FINETUNED

    @property
    def finetuned_weights(self) -> Path:
        return self.path / f"{self.FINETUNED}.safetensors"

    @property
    def features(self) -> Path:
        return self.path / self.FEATURES

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def loss_curve(self) -> Path:
        return self.path / self.LOSS_CURVE

    @property
    def confusion(self) -> Path:
        return self.path / self.CONFUSION

    def figure(self, kind: str) -> Path:
        """The pretraining figure of the registry's ``figure`` kind: reconstruction.png, views.png."""
        return self.path / f"{kind}.png"


class JobDir:
    """A ``reproduce`` job: ``metrics.json`` (the job's), ``runs/``, ``baselines/``, the report."""

    METRICS = "metrics.json"
    REPORT_MD = "report.md"
    REPORT_HTML = "report.html"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    def run(self, method: str, seed: int) -> RunDir:
        return RunDir(self.path / "runs" / method / f"seed{seed}")

    def baselines(self, seed: int) -> Path:
        """One seed's raw-pixel baseline rows."""
        return self.path / "baselines" / f"seed{seed}.json"

    def relative_checkpoint(self, run: RunDir, checkpoint: str | Path) -> str:
        """A run's checkpoint path relative to the job folder (it always lies in the run folder)."""
        return (run.path.relative_to(self.path) / Path(checkpoint).name).as_posix()


class LabelEfficiencyDir:
    """A ``label-efficiency`` job: results.json, table.md, two plots, ``pretrained/<method>.*``."""

    RESULTS = "results.json"
    TABLE = "table.md"
    PLOTS = {"finetune": "accuracy_vs_labels.png", "probe": "probe_vs_labels.png"}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def results(self) -> Path:
        return self.path / self.RESULTS

    @property
    def table(self) -> Path:
        return self.path / self.TABLE

    def plot(self, part: str) -> Path:
        return self.path / self.PLOTS[part]

    @property
    def pretrained_dir(self) -> Path:
        return self.path / "pretrained"

    def pretrained(self, method: str) -> Path:
        """A method's encoder checkpoint stem."""
        return self.pretrained_dir / method

    def pretrained_weights(self, method: str) -> Path:
        return self.pretrained_dir / f"{method}.safetensors"

    def pretrained_log(self, method: str) -> Path:
        return self.pretrained_dir / f"{method}.log.jsonl"
