"""Fine-tuning recipe sweep for the from-scratch ViT on the document's protocol.

Used to choose the fine-tuning defaults (docs/results.md, "Tuning record").
It calls the same pieces as ``mnist-ssl reproduce --methods supervised`` (the
engine, the data layer, the seeds), but trains the way the record did: the head
starts untrained (no LP-FT), the augmentation is the affine one below (no elastic
distortion), and each knob's default is the value it had then. Config fields
without a knob take today's RunConfig defaults, so a rerun gives the record's
numbers only while those are the ones the record ran with.
Each key=value argument sets one knob; unknown keys are refused (exit 2).

    python scripts/finetune_sweep.py NAME [seeds=3] [epochs=15] [bs=8] [lr=2e-3] [wd=0.05]
        [warm=1] [opt=adamw] [ls=0] [drop=0.1] [pos=learned] [patch=4] [depth=4] [dim=64]
        [std=1|0] [aug=0|1] [rot=10] [tr=0.1]

std=1 standardises pixels with MNIST's mean/std (the old default), std=0 feeds raw [0, 1]
pixels (the current default). One torch thread. Prints one line per seed and a RESULT line.
"""

import sys
import time

import torch

from mnist_ssl.config import AugmentConfig
from mnist_ssl.engine.loop import train
from mnist_ssl.experiment.data import make_view, prepare_data
from mnist_ssl.experiment.runtime import seed_everything
from mnist_ssl.experiment.stages import predict_logits
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.registry import RunConfig
from mnist_ssl.objectives.supervised import Supervised

KNOBS = {"seeds": "3", "epochs": "15", "bs": "8", "lr": "2e-3", "wd": "0.05", "warm": "1", "opt": "adamw",
         "ls": "0", "drop": "0.1", "pos": "learned", "patch": "4", "depth": "4", "dim": "64", "std": "1",
         "aug": "0", "rot": "10", "tr": "0.1"}


def _fail(line: str) -> None:
    """One line on stderr and exit code 2, as the CLI does for bad input."""
    print(line, file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
    if not argv or "=" in argv[0] or not all("=" in a for a in argv[1:]):
        _fail("usage: finetune_sweep.py NAME [key=value ...]; keys: " + ", ".join(KNOBS))
    name, pairs = argv[0], dict(a.split("=", 1) for a in argv[1:])
    unknown = sorted(set(pairs) - set(KNOBS))
    if unknown:
        _fail(f"unknown knob(s): {', '.join(unknown)}; known: {', '.join(KNOBS)}")
    kv = {**KNOBS, **pairs}
    torch.set_num_threads(1)
    accs, t0 = [], time.time()
    for seed in range(int(kv["seeds"])):
        cfg = RunConfig(method="supervised", seed=seed)
        ft = cfg.finetune
        ft.epochs, ft.batch_size, ft.lr = int(kv["epochs"]), int(kv["bs"]), float(kv["lr"])
        ft.weight_decay, ft.warmup_epochs, ft.optimizer = float(kv["wd"]), float(kv["warm"]), kv["opt"]
        ft.label_smoothing = float(kv["ls"])
        m = cfg.model
        m.dropout, m.pos_embed = float(kv["drop"]), kv["pos"]
        m.patch_size, m.depth, m.dim = int(kv["patch"]), int(kv["depth"]), int(kv["dim"])
        m.pixel_mean, m.pixel_std = (0.1307, 0.3081) if kv["std"] == "1" else (0.0, 1.0)
        aug = AugmentConfig(enabled=kv["aug"] == "1", rotate=float(kv["rot"]), translate=float(kv["tr"]))
        data = prepare_data(cfg, torch.device("cpu"))
        seed_everything(seed)
        classifier = ViTClassifier(ViTEncoder(m), len(data.classes))
        seed_everything(seed + 1)  # as stages.finetune, after the classifier is built
        state = train(Supervised(classifier, ft.label_smoothing), data.train_images, data.train_targets, ft,
                      phase="finetune", view=make_view(aug))
        logits = predict_logits(classifier, data.test_images)
        acc = 100 * (logits.argmax(-1) == data.test_targets.cpu()).float().mean().item()
        accs.append(acc)
        print(name, seed, f"{acc:.2f}", "train loss", f"{state.history[-1]['loss']:.3f}", flush=True)
    a = torch.tensor(accs)
    std = a.std().item() if len(accs) > 1 else 0.0
    print(f"RESULT {name} {a.mean():.2f} ± {std:.2f} n={len(accs)} "
          f"t/seed={(time.time() - t0) / len(accs):.1f}s {pairs}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
