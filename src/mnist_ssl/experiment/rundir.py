"""Every file name of a run folder, a reproduce job folder and a label-efficiency folder.

Code that writes or reads one of these files asks these classes for its path; no
other module spells a run's file name. (The resume state's files belong to
``engine/resume.py``; a checkpoint ``stem`` is written as ``stem.safetensors`` +
``stem.json`` by ``engine/checkpoint.py``.) A new file: one line here.
"""

from __future__ import annotations

from pathlib import Path


class _File:
    """A class attribute that is the path of ``name`` inside the instance's folder."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, folder, owner=None):
        return self if folder is None else folder.path / self.name


class _Folder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)


class RunDir(_Folder):
    """One (method, seed) run: ``runs/<method>/seed<k>/`` of a job, or a single command's --out."""

    config = _File("config.json")  # the resolved RunConfig
    log = _File("log.jsonl")  # one JSON line per epoch and phase
    metrics = _File("metrics.json")  # written last: its presence marks a finished run
    pretrained = _File("pretrained")  # checkpoint stem of the pretraining objective
    pretrained_weights = _File("pretrained.safetensors")
    pretrained_meta = _File("pretrained.json")
    finetuned = _File("finetuned")  # checkpoint stem of the classifier
    finetuned_weights = _File("finetuned.safetensors")
    features = _File("features.npz")  # frozen CLS features of the test images
    predictions = _File("predictions.npz")  # test probabilities and the misclassified images
    loss_curve = _File("loss_curve.png")
    confusion = _File("confusion.png")
    tensorboard = _File("tensorboard")  # event files, with --log tensorboard
    reconstruction = _File("reconstruction.json")  # masked methods: masked-patch error vs the mean patch

    def figure(self, kind: str) -> Path:
        """The pretraining figure of the registry's ``figure`` kind: reconstruction.png, views.png."""
        return self.path / f"{kind}.png"


class JobDir(_Folder):
    """A ``reproduce`` job: its ``metrics.json``, ``runs/``, ``baselines/`` and the report."""

    metrics = _File("metrics.json")

    def run(self, method: str, seed: int) -> RunDir:
        return RunDir(self.path / "runs" / method / f"seed{seed}")

    def baselines(self, seed: int) -> Path:
        """One seed's raw-pixel baseline rows."""
        return self.path / "baselines" / f"seed{seed}.json"

    def relative_checkpoint(self, run: RunDir, checkpoint: str | Path) -> str:
        """A run's checkpoint path relative to the job folder (it always lies in the run folder)."""
        return (run.path.relative_to(self.path) / Path(checkpoint).name).as_posix()


class LabelEfficiencyDir(_Folder):
    """A ``label-efficiency`` job: results.json, table.md, two plots, ``pretrained/<method>.*``."""

    results = _File("results.json")
    table = _File("table.md")
    pretrained_dir = _File("pretrained")
    PLOTS = {"finetune": "accuracy_vs_labels.png", "probe": "probe_vs_labels.png"}

    def plot(self, part: str) -> Path:
        return self.path / self.PLOTS[part]

    def pretrained(self, method: str) -> Path:
        """A method's encoder checkpoint stem."""
        return self.pretrained_dir / method

    def pretrained_weights(self, method: str) -> Path:
        return self.pretrained_dir / f"{method}.safetensors"

    def pretrained_log(self, method: str) -> Path:
        return self.pretrained_dir / f"{method}.log.jsonl"

    def pretraining_state(self, method: str) -> Path:
        """The folder of a method's unfinished pretraining: its resume state (engine/resume.py)."""
        return self.pretrained_dir / f"{method}.state"

    def tensorboard(self, method: str, k: int | str | None = None, seed: int | None = None) -> Path:
        """Where ``--log tensorboard`` writes: ``tensorboard/<method>/pretrain`` for a method's
        pretraining, ``tensorboard/<method>/k<k>/seed<s>`` for one row (its fine-tuning, its
        semi-supervised stage and its test figures), so ``tensorboard --logdir OUT/tensorboard``
        shows each as one run."""
        base = self.path / "tensorboard" / method
        return base / "pretrain" if k is None else base / f"k{k}" / f"seed{seed}"
