"""Does an exponential moving average of the fine-tuning weights beat the final weights?

A paired check (docs/results.md, "Weight averaging"): each seed pretrains and
fine-tunes once, exactly as ``mnist-ssl reproduce`` does (the config built as the
CLI builds it, the same stages of ``mnist_ssl.experiment``, the same seeds), while
a callback keeps EMAs of the classifier's parameters at several decays; the final
weights and every EMA are then tested on the same test sample. The final weights
are those of ``mnist-ssl reproduce --methods METHOD --set ...`` with the same
overrides, to the digit. One torch thread. Prints one JSON line per seed and
writes them to OUT.

    python scripts/finetune_weight_average.py METHOD SEEDS OUT [KEY=VALUE ...]
    e.g. python scripts/finetune_weight_average.py mae 0,1,2,3,4 runs/ema.json finetune.epochs=15

KEY=VALUE are the ``--set`` overrides of the CLI (pretrain.epochs=15, ...).
"""

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

from mnist_ssl.commands.common import build_config
from mnist_ssl.errors import MnistSSLError
from mnist_ssl.experiment import stages
from mnist_ssl.experiment.data import prepare_data
from mnist_ssl.experiment.runtime import seed_everything, setup_threads
from mnist_ssl.fileio import atomic_write_text
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder

DECAYS = (0.99, 0.995, 0.998, 0.999)
USAGE = "usage: python scripts/finetune_weight_average.py METHOD SEEDS OUT [KEY=VALUE ...]"


class WeightAverages:
    """Engine callback: after every optimiser step, EMA_d <- d * EMA_d + (1 - d) * weights."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.averages = {d: [p.detach().clone() for p in model.parameters()] for d in DECAYS}

    def on_step(self, state) -> None:
        weights = [p.detach() for p in self.model.parameters()]
        for decay, average in self.averages.items():
            torch._foreach_lerp_(average, weights, 1 - decay)

    def on_epoch_end(self, state, record) -> None:
        pass


def _fail(line: str) -> None:
    """One line on stderr and exit code 2, as the CLI does for bad input."""
    print(line, file=sys.stderr)
    sys.exit(2)


def pretrained_encoder(cfg, data) -> ViTEncoder:
    """The encoder as ``run_experiment`` pretrains it (seeded by the run's seed, the method's
    figure drawn after it, which re-seeds torch as in a run), in a throw-away folder."""
    encoder = ViTEncoder(cfg.model)
    objective = stages.pretrain(cfg, encoder, data.pretrain_images, callbacks=lambda label: [])
    if objective is not None:
        with tempfile.TemporaryDirectory() as run_dir:
            stages.pretraining_figure(cfg, objective, data.test_images, lambda kind: Path(run_dir) / f"{kind}.png")
    return encoder


def test_accuracy(classifier: torch.nn.Module, data) -> float:
    return stages.evaluate(classifier, data.test_images, data.test_targets, data.classes)[0]["accuracy"]


def main(argv: list[str]) -> None:
    if len(argv) < 3 or not all(s.strip().isdigit() for s in argv[1].split(",")):
        _fail(USAGE + " (SEEDS: comma-separated integers, e.g. 0,1,2)")
    method, seeds, out, overrides = argv[0], [int(s) for s in argv[1].split(",")], Path(argv[2]), argv[3:]
    try:  # a bad method or KEY=VALUE is one line before any training, as on the CLI
        # The CLI's config: defaults, the method's preset, then the overrides as --set.
        configs = [build_config(argparse.Namespace(set=[*overrides, f"seed={seed}"], threads=1), method)
                   for seed in seeds]
        out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable OUT fails now, not after the training
    except (MnistSSLError, OSError) as e:
        _fail(f"error: {e}")
    setup_threads(1)
    rows = []
    for seed, cfg in zip(seeds, configs):
        seed_everything(seed)  # as run_experiment: before the data and the encoder
        data = prepare_data(cfg, torch.device("cpu"))
        encoder = pretrained_encoder(cfg, data)
        classifier = ViTClassifier(encoder, len(data.classes))
        averages = WeightAverages(classifier)
        stages.finetune(cfg, cfg.finetune, classifier, data.train_images, data.train_targets, seed,
                        callbacks=[averages])
        row = {"method": method, "seed": seed, "final": test_accuracy(classifier, data)}
        for decay, average in averages.averages.items():
            averaged = copy.deepcopy(classifier)
            with torch.no_grad():
                for p, a in zip(averaged.parameters(), average):
                    p.copy_(a)
            row[f"ema_{decay}"] = test_accuracy(averaged, data)
        print(json.dumps(row), flush=True)
        rows.append(row)
    atomic_write_text(out, json.dumps({"argv": argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
