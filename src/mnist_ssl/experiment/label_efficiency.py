"""``mnist-ssl label-efficiency``: how many labels does each method need once it has seen the unlabelled images?

The protocol:

1. The data are split once: a fixed test sample (seed 0's, ``test_per_class``
   images per class; for an IDX folder drawn from the t10k files) and the
   *pool*, every other training image. For the embedded data the pool is the
   5,000 images minus the test sample (the test images are never seen, not even
   without labels); for an IDX folder it is the whole training file.
2. Each self-supervised method pretrains one encoder (seed ``cfg.seed``) on the
   pool's images, without labels.
3. For each budget k (labelled images per class; "all" = the whole pool) and
   each seed s (``first_seed`` .. ``first_seed`` + n - 1), k images per class are
   drawn from the pool (nested: the k images of seed s are the first k of a
   per-class order fixed by s). Seed s's row depends on s alone, not on the job's
   first seed: the test sample and the pretrained encoder are the job's, the
   draw and the fine-tuning (and the from-scratch ViT's initialisation) are s's. With
   them, the pretrained encoder is (a) frozen, and a logistic regression is
   fitted on its CLS features (the linear probe), and (b) fine-tuned whole for
   about ``finetune_steps`` optimiser steps or ``min_epochs`` epochs, whichever
   is more (a fixed step count alone left the larger budgets undertrained:
   1,000 steps are 8 epochs of k=100 on ten classes, and the from-scratch ViT
   reached 66.6% there against 90.4% after 32 epochs), then tested. A set of
   more than ``MAX_STEPS_PER_EPOCH`` batches gets a larger batch instead, so
   that "all" stays affordable. A budget's seeds fine-tune as one batched model
   (``run.batch_models``, engine/batched.py; each seed's draws its own, so a row depends only
   on its seed), or one at a time with ``run.batch_models=false``.
4. ``supervised`` is the same ViT from random initialisation (seed s): its
   fine-tuning is training from scratch, and its probe measures random features.
5. The raw-pixel baselines (RBF SVM, 1-NN, logistic regression; the numbers a
   pretrained ViT has to beat) are fitted on the same k labelled images per
   class and seed, and tested on the same test sample. The SVM is skipped above
   ``SVM_MAX_IMAGES`` labelled images (its fit grows with the square of them).

Writes into ``out``: ``results.json`` (every row, written after each one so an
interrupted job keeps what finished; ``--resume`` continues and keeps the rows
of methods not named this time, so a job can be split over several commands; it refuses
another first seed), ``table.md``, ``accuracy_vs_labels.png`` (fine-tuning) and
``probe_vs_labels.png``, and per method ``pretrained/<method>.safetensors`` with its
pretraining ``log.jsonl``. With ``--log tensorboard`` (``run.tensorboard``) every training
also writes TensorBoard events under ``tensorboard/`` (:meth:`LabelEfficiencyDir.tensorboard`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mnist_ssl.data import class_index, load_splits
from mnist_ssl.engine.callbacks import ConsolePrinter, JSONLLogger, TrainingInterrupted
from mnist_ssl.engine.checkpoint import atomic_write_text, load_encoder
from mnist_ssl.engine.resume import (ResumeWriter, clear_train_state, last_good_state, normalised_config,
                                     refuse_other_config)
from mnist_ssl.errors import ConfigError, DataError
from mnist_ssl.experiment import stages
from mnist_ssl.experiment.rundir import LabelEfficiencyDir
from mnist_ssl.experiment.runtime import resolve_device, seed_everything, setup_threads
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.registry import RunConfig, get_method, method_sections
from mnist_ssl.report.label_efficiency import format_table, margins, summarise, summarise_baselines, write_plots

SCHEMA = "mnist-ssl/label-efficiency/v1"


@dataclasses.dataclass
class Pool:
    """The unlabelled pool (labels kept only to draw labelled subsets) and the fixed test sample."""

    images: torch.Tensor  # uint8 (N, 1, 28, 28) on the device
    labels: np.ndarray  # class positions 0..K-1
    test_images: torch.Tensor
    test_labels: torch.Tensor  # class positions, on the device
    classes: list[int]
    source: str


def load_pool(cfg: RunConfig, device: torch.device) -> Pool:
    """Pool = every training image outside the test sample; test = seed 0's test sample (see the module)."""
    data = dataclasses.replace(cfg.data, train_per_class=None)
    if data.source == "embedded" and data.test_per_class is None:
        raise ConfigError("label-efficiency on the embedded data needs a test sample: --test-per-class N")
    train, test = load_splits(data, 0)
    classes = list(data.classes) if data.classes is not None else list(range(10))
    return Pool(train.images.to(device), class_index(train.labels, classes).numpy(),
                test.images.to(device), class_index(test.labels, classes).to(device), classes, train.source)


def labelled_subset(labels: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """Positions of k images per class (all when None), nested in k for a given seed, grouped by class."""
    chosen = []
    for c in np.unique(labels):
        order = np.random.default_rng([seed, 2, int(c)]).permutation(np.flatnonzero(labels == c))
        if k is not None and k > len(order):
            raise DataError(f"{k} labelled images per class asked, but class {c} has {len(order)} in the pool")
        chosen.append(order if k is None else order[:k])
    return np.concatenate(chosen)


# Fine-tuning sets longer than this many batches get a larger batch (see the module's step 3).
MAX_STEPS_PER_EPOCH = 125
SVM_MAX_IMAGES = 10_000


def finetune_epochs(n: int, batch_size: int, steps: int, min_epochs: int = 1) -> tuple[int, int]:
    """(batch size, epochs) for about ``steps`` optimiser steps on ``n`` images, and at least
    ``min_epochs`` epochs; the batch grows where an epoch would be longer than MAX_STEPS_PER_EPOCH."""
    batch = min(max(batch_size, math.ceil(n / MAX_STEPS_PER_EPOCH)), n)
    per_epoch = math.ceil(n / batch)
    return batch, max(1, min_epochs, round(steps / per_epoch))


def fresh_board(log_dir: Path, keep: bool = False):
    """A TensorBoardLogger on ``log_dir``; the events of an earlier attempt are removed first
    unless ``keep`` (a training that continues from its saved state keeps its earlier epochs)."""
    from mnist_ssl.engine.callbacks import TensorBoardLogger

    if not keep:
        shutil.rmtree(log_dir, ignore_errors=True)
    return TensorBoardLogger(log_dir)


# ----- the two halves ---------------------------------------------------------
def pretrain_source_images(cfg: RunConfig, device: torch.device) -> torch.Tensor:
    """``data.pretrain_source``'s images on ``device``, checked against the model's input shape."""
    from mnist_ssl.data.sources import load_pretrain_images
    from mnist_ssl.experiment.data import check_shape

    images = load_pretrain_images(cfg.data.pretrain_source, cfg.data.dataset).images
    check_shape(cfg, images, cfg.data.pretrain_source)
    return images.to(device)


def pretrain(cfg: RunConfig, pool: Pool, folder: LabelEfficiencyDir, quiet: bool,
             stop_requested: Callable[[], bool] = lambda: False, resume: bool = False) -> ViTEncoder:
    """Pretrain a fresh encoder on the pool's images (no labels); save it; return it. Each epoch's
    state is saved in ``folder.pretraining_state(method)``; ``resume`` continues from it."""
    from mnist_ssl.experiment.run import warn

    seed_everything(cfg.seed)
    encoder = ViTEncoder(cfg.model).to(pool.images.device)
    if get_method(cfg.method).build is None:
        return encoder
    folder.pretrained_dir.mkdir(parents=True, exist_ok=True)
    log, state_dir = folder.pretrained_log(cfg.method), folder.pretraining_state(cfg.method)
    start = last_good_state(state_dir, cfg.to_dict(), pretrains=False) if resume else None
    if start is not None and start.problem:
        warn(start.problem)
    saved = start.state if start is not None else None
    if saved is None:
        clear_train_state(state_dir)
        log.unlink(missing_ok=True)
    else:
        atomic_write_text(log, "".join(line + "\n" for line in saved["meta"]["log"]))

    images, source = pool.images, pool.source
    if cfg.data.pretrain_source:  # --pretrain-data: those images instead of the pool's
        images, source = pretrain_source_images(cfg, images.device), cfg.data.pretrain_source
    board = None
    if cfg.run.tensorboard:
        board = fresh_board(folder.tensorboard(cfg.method), keep=saved is not None)

    def callbacks(label: str) -> list:
        printer = [] if quiet else [ConsolePrinter(f"{cfg.method} {label}")]
        # Last: the resumable state is saved after the epoch's log lines (docs/reliability.md).
        return [JSONLLogger(log, method=cfg.method, seed=cfg.seed), *printer, *([board] if board else []),
                ResumeWriter(state_dir, cfg.to_dict(), log)]

    try:
        objective = stages.pretrain(cfg, encoder, images, callbacks=callbacks, stop_requested=stop_requested,
                                    resume=saved)
    finally:
        if board is not None:
            board.close()
    stages.save_pretrained(cfg, objective, folder.pretrained(cfg.method), pool.classes,
                           pretrained_on=f"{len(images)} images of {source}, no labels")
    clear_train_state(state_dir)
    if state_dir.is_dir():
        state_dir.rmdir()
    return encoder


def finetune_and_test(cfg: RunConfig, encoder, images: torch.Tensor, targets: torch.Tensor, pool: Pool,
                      seed: int, steps: int, min_epochs: int = 1,
                      stop_requested: Callable[[], bool] = lambda: False, keep: list | None = None,
                      callbacks: list = ()) -> tuple[float, int]:
    """Fine-tune a copy of ``encoder`` + a head on (images, targets) for about ``steps`` steps and at
    least ``min_epochs`` epochs (LP-FT by default, as every fine-tuning); -> (test accuracy, epochs).
    ``keep``: a list the fine-tuned classifier is appended to (for the semi-supervised stage);
    ``callbacks``: the engine's (the row's TensorBoard events)."""
    ft = finetune_recipe(cfg, len(images), steps, min_epochs)
    classifier = ViTClassifier(copy.deepcopy(encoder), len(pool.classes)).to(images.device)
    stages.finetune(cfg, ft, classifier, images, targets, seed, stop_requested=stop_requested,
                    callbacks=list(callbacks))
    if keep is not None:
        keep.append(classifier)
    return test_accuracy(classifier, pool), ft.epochs


def finetune_recipe(cfg: RunConfig, n: int, steps: int, min_epochs: int):
    """The fine-tuning OptimConfig of a row with ``n`` labelled images (:func:`finetune_epochs`)."""
    batch, epochs = finetune_epochs(n, cfg.finetune.batch_size, steps, min_epochs)
    return dataclasses.replace(cfg.finetune, batch_size=batch, epochs=epochs,
                               warmup_epochs=min(cfg.finetune.warmup_epochs, epochs))


def test_accuracy(classifier: ViTClassifier, pool: Pool) -> float:
    metrics, _ = stages.evaluate(classifier, pool.test_images, pool.test_labels, pool.classes)
    # results.json has always held the float32 mean (the same number, rounded to float32), so
    # rows of older files and new ones compare equal.
    return float(np.float32(metrics["accuracy"]))


# ----- the job ------------------------------------------------------------------
# What a pretrained encoder kept by --resume must share with this command's config: the
# settings pretraining reads, and every method's section (threads and the fine-tuning
# sections do not change what pretraining learnt).
PRETRAINING_KEYS = ("method", "seed", "data", "model", "pretrain", "pretrain_augment", *method_sections())


def _check_resumable(previous: dict, results_path: Path, data: dict, budget: dict, first_seed: int) -> None:
    """Refuse to add rows to a results.json made with other data, another fine-tuning budget
    (``budget``: finetune_steps, finetune_min_epochs; a file older than a field lacks it, and is
    refused) or another first seed (a file older than --first-seed started at 0). One file holds
    one first seed: resuming with another would replace the named methods' rows by other seeds'."""
    refuse_other_config({"data": previous.get("data"), **{k: previous.get(k) for k in budget},
                         "first_seed": previous.get("first_seed", 0)},
                        {"data": data, **budget, "first_seed": first_seed}, results_path, "was made with")


def budget_seeds(n_seeds: int, first_seed: int) -> range:
    """The seeds of a budget with ``n_seeds`` seeds: first_seed, first_seed + 1, ..."""
    return range(first_seed, first_seed + n_seeds)


def _baseline_rows(pool: Pool, pool_x: torch.Tensor, test_x: torch.Tensor, test_y: np.ndarray,
                   labels: list[int | None], seeds: list[int], first_seed: int) -> list[dict]:
    """The raw-pixel baselines on every (k, seed)'s labelled images (the module's step 5)."""
    from mnist_ssl.evaluation.baselines import BASELINES, run_baselines

    rows = []
    for k, n_seeds in zip(labels, seeds):
        for s in budget_seeds(n_seeds, first_seed):
            idx = labelled_subset(pool.labels, k, s)
            names = [b for b in BASELINES if b != "svm" or len(idx) <= SVM_MAX_IMAGES]
            for r in run_baselines(pool_x[idx], pool.labels[idx], test_x, test_y, pool.classes, names):
                rows.append({"method": r["method"], "k": "all" if k is None else k, "seed": s,
                             "n_labelled": int(len(idx)), "accuracy": r["accuracy"],
                             "time_s": round(r["wall_time_s"], 2)})
    return rows


def _check_pretrained(meta: dict, ckpt: Path, cfg: RunConfig) -> None:
    """Refuse a kept encoder (``meta``: its checkpoint's checked sidecar) whose pretraining
    settings are not this command's."""
    saved = normalised_config(meta.get("run_config") or {})
    mine = cfg.to_dict()
    refuse_other_config({k: saved.get(k) for k in PRETRAINING_KEYS}, {k: mine[k] for k in PRETRAINING_KEYS},
                        ckpt, "was pretrained with")


def run_label_efficiency(configs: dict[str, RunConfig], out: Path, *, labels: list[int | None],
                         seeds: list[int], first_seed: int = 0, finetune_steps: int = 300, min_epochs: int = 1,
                         baselines: bool = True, quiet: bool = False, resume: bool = False,
                         command: str = "", stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Every method in ``configs`` x every budget in ``labels`` (k per class, None = all) x ``seeds[i]`` seeds
    (``first_seed`` onwards), and the raw-pixel ``baselines`` on the same labelled images."""
    any_cfg = _check_job(configs, labels, seeds, first_seed)
    setup_threads(any_cfg.threads)
    pool = load_pool(any_cfg, resolve_device(any_cfg.device))
    folder = LabelEfficiencyDir(out)
    budget = {"finetune_steps": finetune_steps, "finetune_min_epochs": min_epochs}
    previous, done = _previous_rows(folder, any_cfg, budget, first_seed, resume)
    result = {"schema": SCHEMA, "command": command, "data": dataclasses.asdict(any_cfg.data),
              "source": pool.source, "classes": pool.classes,
              "pool_images": int(len(pool.images)), "test_images": int(len(pool.test_images)),
              "labels_per_class": [("all" if k is None else k) for k in labels], "seeds": seeds,
              "first_seed": first_seed, **budget,
              "pretrain": {m: {"epochs": c.pretrain.epochs, "batch_size": c.pretrain.batch_size, "seed": c.seed}
                           for m, c in configs.items()},
              "threads": any_cfg.threads,
              "rows": [r for r in previous.get("rows", []) if r["method"] not in configs],  # other commands'
              "wall_time_s": {}}
    job = _Job(pool, folder, result, done, labels, seeds, first_seed, finetune_steps, min_epochs, quiet, resume)
    job.stop_requested = stop_requested  # polled before every batch: a stop keeps the finished rows
    try:
        for method, cfg in configs.items():
            job.run_method(method, cfg)
    except TrainingInterrupted as e:
        again = command if command.endswith(" --resume") else f"{command} --resume"
        raise TrainingInterrupted(e.phase, e.epoch, f"{e}; the finished rows are kept in {folder.results}, the "
                                  f"pretrained encoders and the pretraining's last epoch in {folder.pretrained_dir}. "
                                  f"Continue with: {again}") from None
    if baselines:  # seconds on the protocol's sizes: recomputed by every command, never kept
        t0 = time.perf_counter()
        result["baselines"] = _baseline_rows(pool, job.pool_x.cpu(), job.test_x.cpu(), job.test_y, labels, seeds,
                                             first_seed)
        result["wall_time_s"]["baselines"] = round(time.perf_counter() - t0, 1)
    elif previous.get("baselines"):  # --no-baselines on --resume: the earlier command's are kept, not dropped
        result["baselines"] = previous["baselines"]
    result["wall_time_s"]["total"] = round(time.perf_counter() - job.t0, 1)  # this command's
    earlier = previous.get("wall_time_s", {})
    if "total" in earlier:  # a --resume: what the commands before it took is kept beside its own
        result["wall_time_s"]["earlier_commands_total"] = round(
            earlier["total"] + earlier.get("earlier_commands_total", 0.0), 1)
    for k, v in earlier.items():  # earlier commands' times, for the methods they ran
        result["wall_time_s"].setdefault(k, v)
    _write_summaries(result, pool, folder)
    return result


def _check_job(configs: dict[str, RunConfig], labels: list, seeds: list[int], first_seed: int) -> RunConfig:
    if len(seeds) != len(labels):
        raise ConfigError(f"{len(labels)} label budgets but {len(seeds)} seed counts: give one per budget")
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise ConfigError(f"--first-seed {first_seed}: must be an integer >= 0")
    any_cfg = next(iter(configs.values()))
    if any_cfg.data.pretrain_on != "train":
        # Silently ignoring it would let a user believe a second protocol ran.
        raise ConfigError("data.pretrain_on does not apply to label-efficiency: it always pretrains on its "
                          "pool (every training image of the chosen classes outside the test sample)")
    return any_cfg


def _previous_rows(folder: LabelEfficiencyDir, any_cfg: RunConfig, budget: dict, first_seed: int,
                   resume: bool) -> tuple[dict, dict[tuple, dict]]:
    """The results.json --resume found (checked against this command) and its rows by (method, k, seed)."""
    if not (resume and folder.results.exists()):
        return {}, {}
    previous = json.loads(folder.results.read_text())
    _check_resumable(previous, folder.results, dataclasses.asdict(any_cfg.data), budget, first_seed)
    return previous, {(r["method"], r["k"], r["seed"]): r for r in previous["rows"]}


def _write_summaries(result: dict, pool: Pool, folder: LabelEfficiencyDir) -> None:
    result["summary"] = summarise(result["rows"])
    result["baseline_summary"] = summarise_baselines(result.get("baselines", []))
    result["margins_at_10"] = margins(result["summary"], 10)
    atomic_write_text(folder.results, json.dumps(result, indent=2))
    table = format_table(result) + "\n" + seeds_note(result)
    atomic_write_text(folder.table, table + "\n")
    write_plots(result, len(pool.images) // len(pool.classes), {part: folder.plot(part) for part in folder.PLOTS})
    print(table)


def seeds_note(result: dict) -> str:
    """The line under the table that says which seeds it reports (the rule of docs/results.md:
    a headline says its seeds), and what every seed shares."""
    first = result.get("first_seed", 0)
    spans = [f"k={k}: {first}" if n == 1 else f"k={k}: {first}-{first + n - 1}"
             for k, n in zip(result["labels_per_class"], result["seeds"])]
    pretrain_seeds = sorted({p["seed"] for m, p in result["pretrain"].items()
                             if "seed" in p and get_method(m).build is not None})
    pretrained = (f"; every encoder pretrained with seed {', '.join(map(str, pretrain_seeds))}"
                  if pretrain_seeds else "")
    return (f"Seeds (labelled draw, fine-tuning, the from-scratch ViT's initialisation): {', '.join(spans)}"
            f"{pretrained}; one test sample for every seed.")


class _Job:
    """The rows of one label-efficiency command: per method, an encoder, then every (k, seed)."""

    def __init__(self, pool: Pool, folder: LabelEfficiencyDir, result: dict, done: dict, labels: list,
                 seeds: list[int], first_seed: int, finetune_steps: int, min_epochs: int, quiet: bool,
                 resume: bool) -> None:
        self.pool, self.folder, self.result, self.done = pool, folder, result, done
        self.labels, self.seeds, self.first_seed = labels, seeds, first_seed
        self.steps, self.min_epochs = finetune_steps, min_epochs
        self.quiet, self.resume = quiet, resume
        self.t0 = time.perf_counter()
        self.pool_x = pool.images.float() / 255.0
        self.test_x = pool.test_images.float() / 255.0
        self.test_y = pool.test_labels.cpu().numpy()

    def say(self, text: str) -> None:
        stages.say(text, self.quiet)

    def encoder(self, method: str, cfg: RunConfig) -> ViTEncoder:
        """The method's pretrained encoder: kept by --resume (checked), or pretrained now."""
        pretrains = get_method(method).build is not None
        ckpt = self.folder.pretrained_weights(method)
        if pretrains and self.resume and ckpt.exists():
            encoder, meta = load_encoder(ckpt)  # format, hash and JSON checked: bad files are one line
            _check_pretrained(meta, ckpt, cfg)
            self.say(f"== {method}: pretrained encoder from {ckpt}")
            return encoder.to(self.pool.images.device)
        self.say(f"== {method}: pretraining on {len(self.pool.images)} images without labels"
                 if pretrains else f"== {method}: no pretraining")
        t0 = time.perf_counter()
        encoder = pretrain(cfg, self.pool, self.folder, self.quiet, self.stop_requested, self.resume)
        if pretrains:
            self.result["wall_time_s"][f"{method}/pretrain"] = round(time.perf_counter() - t0, 1)
        return encoder

    def run_method(self, method: str, cfg: RunConfig) -> None:
        from mnist_ssl.evaluation.probe import extract_features

        encoder = self.encoder(method, cfg)
        feats = feats_test = None  # frozen features of a pretrained encoder serve every (k, seed)
        for k, n_seeds in zip(self.labels, self.seeds):
            todo = []
            for s in budget_seeds(n_seeds, self.first_seed):
                key = (method, "all" if k is None else k, s)
                kept = self.done.get(key)
                if kept is not None and "knn_accuracy" in kept:
                    self.result["rows"].append(kept)
                    continue
                idx = labelled_subset(self.pool.labels, k, s)
                if get_method(method).build is None:  # from scratch: a fresh encoder per seed
                    seed_everything(s)
                    enc = ViTEncoder(cfg.model).to(self.pool.images.device)
                    f_tr, f_te = extract_features(enc, self.pool_x[idx]), extract_features(enc, self.test_x)
                else:
                    enc = encoder
                    if feats is None:
                        feats, feats_test = extract_features(encoder, self.pool_x), extract_features(encoder, self.test_x)
                    f_tr, f_te = feats[idx], feats_test
                if kept is not None:  # a row made before the frozen kNN was measured gets it now
                    kept["knn_accuracy"] = self.frozen_knn(f_tr, idx, f_te)
                    self.result["rows"].append(kept)
                    continue
                todo.append((key, idx, enc, f_tr, f_te))
            if self._batchable(cfg, todo):
                self.rows_batched(method, cfg, todo)
            else:
                for key, idx, enc, f_tr, f_te in todo:
                    self.row(method, cfg, key, idx, enc, f_tr, f_te)

    def frozen_knn(self, f_tr, idx: np.ndarray, f_te) -> float:
        """The field's weighted kNN (k=20 cosine neighbours voting exp(cos / 0.07), all of them when
        fewer are labelled) on the frozen features: beside the probe, the check that needs no fit."""
        from mnist_ssl.evaluation.probe import knn_weighted_eval

        return knn_weighted_eval(f_tr, self.pool.labels[idx], f_te, self.test_y)["accuracy"]

    def _batchable(self, cfg: RunConfig, todo: list) -> bool:
        """Whether a budget's seeds fine-tune as one batched model (``run.batch_models``, the default).
        A lone seed too (one model in the batched engine): a row then does not depend on how many
        seeds the command asked for or a --resume had left to do, only on its seed."""
        from mnist_ssl.engine.batched import why_not_batched

        cfgs = [dataclasses.replace(cfg, seed=key[2]) for key, *_ in todo]
        return bool(todo) and cfg.run.batch_models and why_not_batched(cfgs * (2 if len(cfgs) == 1 else 1)) is None

    def rows_batched(self, method: str, cfg: RunConfig, todo: list) -> None:
        """The rows of one budget's seeds (``todo``: (key, idx, encoder, train features, test
        features) each), their fine-tunings trained as one batched model (engine/batched.py): each
        seed's labelled draw, LP-FT head, batch order, augmentation and dropout its own, as in
        :meth:`row`, up to the batched kernels' rounding. Then each row's probe, test and semi
        stage, and the rows saved together; a row's ``time_s`` holds its share of the batched phase."""
        from mnist_ssl.engine import batched
        from mnist_ssl.evaluation.probe import linear_probe

        pool, device = self.pool, self.pool.images.device
        ft = finetune_recipe(cfg, len(todo[0][1]), self.steps, self.min_epochs)
        boards = [fresh_board(self.folder.tensorboard(method, *key[1:])) if cfg.run.tensorboard else None
                  for key, *_ in todo]
        try:
            t0 = time.perf_counter()
            parts = []
            for key, idx, enc, f_tr, f_te in todo:
                y = torch.as_tensor(pool.labels[idx], device=device)
                images = pool.images[torch.as_tensor(idx, device=device)]
                classifier = ViTClassifier(copy.deepcopy(enc), len(pool.classes)).to(device)
                seed_everything(key[2] + 1)  # as stages.finetune: LP-FT, then the engine
                if ft.head_init == "probe":
                    stages.fit_head_on_frozen_features(classifier, images, y)
                parts.append(dict(key=key, idx=idx, enc=enc, f_tr=f_tr, f_te=f_te, y=y, images=images,
                                  classifier=classifier))
            trainer = batched.from_runs([dataclasses.replace(cfg, seed=p["key"][2]) for p in parts],
                                        [p["classifier"] for p in parts], [p["images"] for p in parts],
                                        [p["y"] for p in parts], callbacks=[[b] if b else [] for b in boards], ft=ft)
            trainer.train(self.stop_requested)
            share = (time.perf_counter() - t0) / len(parts)
            seeds = [p["key"][2] for p in parts]
            for p, board in zip(parts, boards):
                t1 = time.perf_counter()
                key, s = p["key"], p["key"][2]
                probe = linear_probe(p["f_tr"], pool.labels[p["idx"]], p["f_te"], self.test_y,
                                     C=cfg.eval.probe_c)["accuracy"]
                row = {"method": method, "k": key[1], "seed": s, "n_labelled": int(len(p["idx"])),
                       "finetune_accuracy": test_accuracy(p["classifier"], pool), "probe_accuracy": probe,
                       "knn_accuracy": self.frozen_knn(p["f_tr"], p["idx"], p["f_te"]),
                       "finetune_epochs": ft.epochs, "batched_finetune": {"seeds": seeds}}
                self._finish_row(method, cfg, row, p["classifier"], p["images"], p["y"], p["enc"],
                                 [] if board is None else [board], t1 - share)
                if board is not None:
                    board.log_metrics({"eval/accuracy": row["finetune_accuracy"],
                                       "eval/linear_probe": row["probe_accuracy"],
                                       "eval/semi": row.get("semi_accuracy")})
        finally:
            for board in boards:
                if board is not None:
                    board.close()

    def row(self, method: str, cfg: RunConfig, key: tuple, idx: np.ndarray, enc, f_tr, f_te) -> None:
        """One (method, k, seed), with its TensorBoard events under --log tensorboard (a row that did
        not finish is redone from the start, so its earlier events go)."""
        board = fresh_board(self.folder.tensorboard(method, *key[1:])) if cfg.run.tensorboard else None
        try:
            row = self._row(method, cfg, key, idx, enc, f_tr, f_te, [] if board is None else [board])
            if board is not None:
                board.log_metrics({"eval/accuracy": row["finetune_accuracy"],
                                   "eval/linear_probe": row["probe_accuracy"],
                                   "eval/semi": row.get("semi_accuracy")})
        finally:
            if board is not None:
                board.close()

    def _row(self, method: str, cfg: RunConfig, key: tuple, idx: np.ndarray, enc, f_tr, f_te,
             callbacks: list) -> dict:
        """The linear probe on frozen features, then fine-tuning (and the semi-supervised stage);
        the row is saved at once, and returned."""
        from mnist_ssl.evaluation.probe import linear_probe

        t1 = time.perf_counter()
        pool, s = self.pool, key[2]
        probe = linear_probe(f_tr, pool.labels[idx], f_te, self.test_y, C=cfg.eval.probe_c)["accuracy"]
        device = pool.images.device
        y = torch.as_tensor(pool.labels[idx], device=device)
        images = pool.images[torch.as_tensor(idx, device=device)]
        finetuned: list = []
        acc, epochs = finetune_and_test(cfg, enc, images, y, pool, s, self.steps, self.min_epochs,
                                        stop_requested=self.stop_requested, keep=finetuned, callbacks=callbacks)
        row = {"method": method, "k": key[1], "seed": s, "n_labelled": int(len(idx)),
               "finetune_accuracy": acc, "probe_accuracy": probe, "knn_accuracy": self.frozen_knn(f_tr, idx, f_te),
               "finetune_epochs": epochs}
        return self._finish_row(method, cfg, row, finetuned[0], images, y, enc, callbacks, t1)

    def _finish_row(self, method: str, cfg: RunConfig, row: dict, finetuned: ViTClassifier, images: torch.Tensor,
                    y: torch.Tensor, enc, callbacks: list, t_start: float) -> dict:
        """A fine-tuned row's semi-supervised stage (``semi.enabled``: its own numbers beside the
        plain ones, from the same fine-tuned teacher); the row is saved at once, and returned."""
        pool, s = self.pool, row["seed"]
        semi_line = ""
        if cfg.semi.enabled:
            from mnist_ssl.experiment.semi import semi_stage

            student, curve = semi_stage(cfg, finetuned, pool.images, images, y, len(pool.classes), seed=s,
                                        init_encoder=enc, callbacks=callbacks)
            row.update(semi_accuracy=test_accuracy(student, pool), semi_kind=cfg.semi.kind, semi_epochs=curve)
            semi_line = f"  semi ({cfg.semi.kind}) {100 * row['semi_accuracy']:6.2f}%"
        row["time_s"] = round(time.perf_counter() - t_start, 2)
        self.result["rows"].append(row)
        batched_note = " batched" if "batched_finetune" in row else ""
        self.say(f"{method:12s} k={row['k']!s:>4} seed {s}: fine-tune {100 * row['finetune_accuracy']:6.2f}%  "
                 f"probe {100 * row['probe_accuracy']:6.2f}%{semi_line}  ({row['time_s']:.0f} s{batched_note})")
        self.result["wall_time_s"]["total"] = round(time.perf_counter() - self.t0, 1)
        atomic_write_text(self.folder.results, json.dumps(self.result, indent=2))
        return row
