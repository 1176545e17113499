"""``mnist-ssl probe``: what a checkpoint's frozen features are worth on a data set.

The linear probe (standardised features, C chosen on the labelled rows only) and kNN (plain
vote and the field's weighted vote) on the encoder's frozen features, beside the same
encoder at random initialisation and, on request, the same probes on raw pixels: the three
numbers a pretraining has to be read against.
"""

from __future__ import annotations

import time
from pathlib import Path

from mnist_ssl.errors import ConfigError


def probe_checkpoint(checkpoint: str | Path, *, data: str = "embedded", dataset: str = "mnist",
                     classes="keep", train_per_class="keep", test_per_class="keep", seed: int = 0,
                     pools: tuple[str, ...] = ("cls",), random_init: bool = True, pixels: bool = False,
                     holdout: float | None = None, knn_k: int | None = None, threads: int = 1) -> dict:
    """Probe ``checkpoint``'s frozen encoder on ``data``'s seed-``seed`` sample.

    ``classes`` / ``*_per_class``: "keep" (the defaults of a run: digits 0, 1, 2, 100 per class;
    an image folder's every class), None (all) or a value. Returns a JSON-ready dict with the
    sample's sizes and, per feature pool, ``{"pretrained": ..., "random_init": ...}`` metrics
    (``linear_probe_cv``, ``knn``, ``knn_weighted``), plus ``pixels`` when asked for.
    """
    from mnist_ssl.config import DataConfig
    from mnist_ssl.data import class_index, load_splits
    from mnist_ssl.evaluation.probe import FEATURE_POOLS, extract_features, frozen_evaluations
    from mnist_ssl.experiment.data import check_shape, fit_config_to_data, run_classes
    from mnist_ssl.experiment.run import load_pretrained
    from mnist_ssl.experiment.runtime import setup_threads
    from mnist_ssl.experiment.stages import random_init_encoder

    bad = [p for p in pools if p not in FEATURE_POOLS]
    if bad or not pools:
        raise ConfigError(f"--features {','.join(pools)!r}: choose from {', '.join(FEATURE_POOLS)}")
    if holdout is not None and not 0 < holdout < 1:
        raise ConfigError(f"--holdout {holdout}: must be a fraction between 0 and 1")
    if knn_k is not None and knn_k < 1:
        raise ConfigError(f"--knn-k {knn_k}: must be >= 1")
    setup_threads(threads)
    encoder, cfg = load_pretrained(checkpoint)
    cfg.model = encoder.cfg
    cfg.data = DataConfig(source=data, dataset=dataset)
    if classes != "keep":
        cfg.data.classes = classes
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if value != "keep":
            setattr(cfg.data, name, value)
    fit_config_to_data(cfg, classes_given=classes != "keep")
    cfg.data.validate()
    train, test = load_splits(cfg.data, seed)
    check_shape(cfg, train.images, data)
    wanted = run_classes(cfg)
    tr_y, te_y = class_index(train.labels, wanted).numpy(), class_index(test.labels, wanted).numpy()
    tr_x, te_x = train.images.float() / 255.0, test.images.float() / 255.0
    knn_k = min(knn_k or cfg.eval.knn_k, int(tr_y.size))  # a few-label sample has fewer rows than k
    out: dict = {"checkpoint": str(checkpoint), "method": cfg.method, "data": data, "dataset": dataset,
                 "classes": wanted, "seed": seed, "n_train": int(tr_y.size), "n_test": int(te_y.size),
                 "holdout": holdout, "features": {}}
    encoders = {"pretrained": encoder}
    if random_init:
        # The checkpoint's architecture, initialised as its run initialised it (the run's seed).
        encoders["random_init"] = random_init_encoder(cfg, next(encoder.parameters()).device)
    for pool in pools:
        row = out["features"][pool] = {}
        for name, model in encoders.items():
            start = time.perf_counter()
            feats_tr = extract_features(model, tr_x, pool=pool).numpy()
            feats_te = extract_features(model, te_x, pool=pool).numpy()
            row[name] = frozen_evaluations(feats_tr, tr_y, feats_te, te_y, knn_k=knn_k, seed=seed, holdout=holdout)
            row[name]["dim"] = int(feats_tr.shape[1])
            row[name]["seconds"] = round(time.perf_counter() - start, 2)
    if pixels:
        start = time.perf_counter()
        flat = lambda x: x.reshape(len(x), -1).numpy()  # noqa: E731
        out["pixels"] = frozen_evaluations(flat(tr_x), tr_y, flat(te_x), te_y, knn_k=1, seed=seed, holdout=holdout)
        out["pixels"]["dim"] = int(tr_x[0].numel())
        out["pixels"]["seconds"] = round(time.perf_counter() - start, 2)
    return out

