"""Does an exponential moving average of the fine-tuning weights beat the final weights?

A paired check (docs/results.md, "Weight averaging"): each seed pretrains and
fine-tunes once, exactly as ``mnist-ssl reproduce`` does (same pipeline
functions, same seeds), while a callback keeps EMAs of the classifier's
parameters at several decays; the final weights and every EMA are then tested
on the same 300 images. The final weights are those of ``mnist-ssl reproduce
--methods mae --set ...`` with the same overrides, to the digit. One torch thread. Prints one JSON line per seed and
writes them to OUT.

    python scripts/finetune_weight_average.py METHOD SEEDS OUT [KEY=VALUE ...]
    e.g. python scripts/finetune_weight_average.py mae 0,1,2,3,4 runs/ema.json finetune.epochs=15

KEY=VALUE are the ``--set`` overrides of the CLI (pretrain.epochs=15, ...).
"""

import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

from mnist_ssl import pipeline
from mnist_ssl.config import RunConfig, apply_overrides
from mnist_ssl.errors import MnistSSLError
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


def main(argv: list[str]) -> None:
    if len(argv) < 3 or not all(s.strip().isdigit() for s in argv[1].split(",")):
        _fail(USAGE + " (SEEDS: comma-separated integers, e.g. 0,1,2)")
    method, seeds, out, overrides = argv[0], [int(s) for s in argv[1].split(",")], Path(argv[2]), argv[3:]
    try:  # a bad method or KEY=VALUE is one line before any training, as on the CLI
        configs = [apply_overrides(RunConfig(), [f"method={method}", f"seed={seed}", *overrides]).validate()
                   for seed in seeds]
        out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable OUT fails now, not after the training
    except (MnistSSLError, OSError) as e:
        _fail(f"error: {e}")
    pipeline.setup_threads(1)
    rows = []
    for seed, cfg in zip(seeds, configs):
        data = pipeline.prepare_data(cfg, torch.device("cpu"))
        pipeline.seed_everything(seed)  # as run_experiment, which gets its data from reproduce
        encoder = ViTEncoder(cfg.model)
        with tempfile.TemporaryDirectory() as run_dir:
            pipeline.pretrain_stage(cfg, encoder, data, Path(run_dir), quiet=True)
        classifier = ViTClassifier(encoder, len(data.classes))
        pipeline.seed_everything(seed + 1)  # as pipeline.finetune_stage
        averages = WeightAverages(classifier)
        pipeline.finetune_classifier(cfg, cfg.finetune, classifier, data.train_images, data.train_targets,
                                     callbacks=[averages])
        row = {"method": method, "seed": seed, "final": pipeline.test_stage(classifier, data)["accuracy"]}
        for decay, average in averages.averages.items():
            averaged = copy.deepcopy(classifier)
            with torch.no_grad():
                for p, a in zip(averaged.parameters(), average):
                    p.copy_(a)
            row[f"ema_{decay}"] = pipeline.test_stage(averaged, data)["accuracy"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    atomic_write_text(out, json.dumps({"argv": argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
