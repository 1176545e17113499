"""One experiment: pretrain -> fine-tune -> evaluate, for one (method, seed), into a run folder.

This is the library function behind ``mnist-ssl pretrain``, ``finetune`` and
``reproduce``; the CLI only parses arguments and prints.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mnist_ssl.config import RunConfig
from mnist_ssl.data.augment import Augmenter
from mnist_ssl.engine.callbacks import ConsolePrinter, JSONLLogger
from mnist_ssl.engine import distributed
from mnist_ssl.engine.checkpoint import atomic_write_text, load_encoder, save_checkpoint
from mnist_ssl.engine.loop import train
from mnist_ssl.engine.resume import ResumeWriter, clear_train_state, load_train_state
from mnist_ssl.fileio import atomic_write_bytes
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.registry import build_objective, get_method
from mnist_ssl.objectives.supervised import Supervised


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; an unavailable explicit device is refused."""
    from mnist_ssl.errors import ConfigError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: no MPS device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_threads(threads: int) -> None:
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def setup_determinism(enabled: bool) -> None:
    """``--deterministic``: deterministic kernels only (an error where torch has none).

    On the CPU runs are already bit-identical for a given seed and thread count;
    this makes CUDA runs so too (cuBLAS workspace, no cuDNN autotuning).
    """
    import os

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled


@dataclass
class RunData:
    """The tensors one run trains and tests on, already on the device.

    train_images/test_images: uint8 (N, 1, 28, 28); *_targets: class indices 0..K-1.
    pretrain_images: what pretraining sees (no labels).
    """

    train_images: torch.Tensor
    train_targets: torch.Tensor
    test_images: torch.Tensor
    test_targets: torch.Tensor
    pretrain_images: torch.Tensor
    classes: list[int]


def prepare_data(cfg: RunConfig, device: torch.device) -> RunData:
    from mnist_ssl.data import class_index, load_splits

    train_split, test_split = load_splits(cfg.data, cfg.seed)
    classes = list(cfg.data.classes) if cfg.data.classes is not None else list(range(10))
    tr_y = class_index(train_split.labels, classes)
    te_y = class_index(test_split.labels, classes)
    train_images = _to_device(train_split.images, device)
    pretrain_images = train_images
    if cfg.data.pretrain_on == "pool":
        from mnist_ssl.data import load_unlabelled_pool

        pretrain_images = _to_device(load_unlabelled_pool(cfg.data, cfg.seed).images, device)
    return RunData(train_images, _to_device(tr_y, device), _to_device(test_split.images, device),
                   _to_device(te_y, device), pretrain_images, classes)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One copy to the device; from pinned memory on CUDA (a faster, asynchronous transfer)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def make_view(cfg_aug, clip_builder: Callable | None = None) -> Callable | None:
    """The phase's view function: augmentation, then (for clip models) clip construction."""
    augment = Augmenter(cfg_aug) if cfg_aug.enabled else None
    if augment is None and clip_builder is None:
        return None

    def view(x: torch.Tensor) -> torch.Tensor:
        if augment is not None:
            x = augment(x)
        return clip_builder(x) if clip_builder is not None else x

    return view


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = [model(images_u8[i:i + batch_size].float().div_(255.0)) for i in range(0, len(images_u8), batch_size)]
    return torch.cat(out).float().cpu()


def _callbacks(cfg: RunConfig, log_path: Path, label: str, quiet: bool, progress) -> list:
    if not distributed.is_main():  # under torchrun only rank 0 prints and writes
        return []
    cbs: list = [JSONLLogger(log_path, method=cfg.method, seed=cfg.seed)]
    if not quiet:
        cbs.append(ConsolePrinter(label, stream=progress, extra_terms=True))
    if progress is not None:
        cbs.append(progress)
    # Last: the resumable state is saved after the epoch's log line (docs/reliability.md).
    cbs.append(ResumeWriter(log_path.parent, cfg.to_dict(), log_path))
    return cbs


def _say(text: str, quiet: bool, progress) -> None:
    if quiet:
        return
    if progress is not None:
        progress.write_line(text)
    else:
        print(text, flush=True)


def pretrain_stage(cfg: RunConfig, encoder: ViTEncoder, data: RunData, run_dir: Path, *,
                   quiet: bool = False, progress=None,
                   stop_requested: Callable[[], bool] = lambda: False,
                   resume: dict | None = None) -> float | None:
    """Pretrain ``encoder`` with the method's objective (in place); save ``pretrained.*`` and a figure.

    Returns the wall time in seconds, or None for a method without pretraining.
    resume: a saved pretraining state (:func:`load_train_state`) to continue from.
    """
    spec = get_method(cfg.method)
    objective = build_objective(cfg, encoder)
    if objective is None:
        return None
    device = data.train_images.device
    objective.to(device)
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    train(objective, data.pretrain_images, None, cfg.pretrain, phase="pretrain",
          view=make_view(cfg.pretrain_augment, _clip_builder(cfg)),
          callbacks=_callbacks(cfg, run_dir / "log.jsonl", objective.loss_label, quiet, progress),
          stop_requested=stop_requested, resume=resume, compile=cfg.compile)
    elapsed = time.perf_counter() - t0
    if not distributed.is_main():
        return elapsed
    save_checkpoint(run_dir / "pretrained", objective, kind="objective", model=cfg.model,
                    extra={"method": cfg.method, "classes": data.classes, "run_config": cfg.to_dict()})
    figure = "reconstruction.png" if spec.masked else "views.png"
    torch.manual_seed(cfg.seed)
    # Test images are grouped by class: take them evenly spaced to show every class.
    pick = torch.linspace(0, len(data.test_images) - 1, 8).long().to(data.test_images.device)
    objective.visualize(data.test_images[pick].float() / 255.0, str(run_dir / figure))
    return elapsed


def frozen_stage(cfg: RunConfig, encoder: ViTEncoder, data: RunData, run_dir: Path) -> dict:
    """Linear probe and kNN on frozen CLS features (eval mode, no masking); saves features.npz."""
    from mnist_ssl.evaluation.probe import extract_features, knn_eval, linear_probe

    frozen: dict = {}
    if not (cfg.eval.linear_probe or cfg.eval.knn):
        return frozen
    tr_x = extract_features(encoder, data.train_images.float() / 255.0)
    te_x = extract_features(encoder, data.test_images.float() / 255.0)
    tr_y, te_y = data.train_targets.cpu().numpy(), data.test_targets.cpu().numpy()
    if cfg.eval.linear_probe:
        frozen["linear_probe"] = linear_probe(tr_x, tr_y, te_x, te_y, C=cfg.eval.probe_c)
    if cfg.eval.knn:
        frozen["knn"] = knn_eval(tr_x, tr_y, te_x, te_y, k=cfg.eval.knn_k)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.asarray(te_x, dtype=np.float32), y=te_y)
    atomic_write_bytes(run_dir / "features.npz", buf.getvalue())
    return frozen


def finetune_stage(cfg: RunConfig, encoder: ViTEncoder, data: RunData, run_dir: Path, *,
                   quiet: bool = False, progress=None,
                   stop_requested: Callable[[], bool] = lambda: False,
                   resume: dict | None = None) -> tuple[ViTClassifier, Path, float]:
    """Fine-tune the whole network with cross-entropy on the CLS token; save ``finetuned.*``.

    resume: a saved fine-tuning state (:func:`load_train_state`) to continue from.
    """
    t0 = time.perf_counter()
    classifier = ViTClassifier(encoder, len(data.classes)).to(data.train_images.device)
    seed_everything(cfg.seed + 1)
    finetune_classifier(cfg, cfg.finetune, classifier, data.train_images, data.train_targets,
                        callbacks=_callbacks(cfg, run_dir / "log.jsonl", "Train Loss", quiet, progress),
                        stop_requested=stop_requested, resume=resume)
    elapsed = time.perf_counter() - t0
    model_cfg = dataclasses.replace(cfg.model, num_classes=len(data.classes))
    ckpt = save_checkpoint(run_dir / "finetuned", classifier, kind="classifier", model=model_cfg,
                           extra={"method": cfg.method, "classes": data.classes, "run_config": cfg.to_dict()})
    return classifier, ckpt, elapsed


def finetune_classifier(cfg: RunConfig, ft, classifier: ViTClassifier, images_u8: torch.Tensor,
                        targets: torch.Tensor, **train_kw):
    """Fine-tuning as every command does it: the head first fitted on the frozen features when
    ``ft.head_init == "probe"`` (LP-FT), then cross-entropy on the whole network through the
    engine with the run's fine-tuning augmentation (and clips). ``ft``: the phase's OptimConfig
    (``cfg.finetune``, or a variant with another batch size or epoch count); ``train_kw`` goes
    to :func:`train` (callbacks, stop_requested, resume)."""
    if ft.head_init == "probe":
        fit_head_on_frozen_features(classifier, images_u8, targets)
    return train(Supervised(classifier, ft.label_smoothing), images_u8, targets, ft, phase="finetune",
                 view=make_view(cfg.finetune_augment, _clip_builder(cfg)), compile=cfg.compile, **train_kw)


@torch.enable_grad()
def fit_head_on_frozen_features(classifier: ViTClassifier, images_u8: torch.Tensor, targets: torch.Tensor,
                                l2: float = 1e-3, steps: int = 100) -> None:
    """Fit the linear head alone on the frozen encoder's CLS features (L-BFGS, L2-regularised
    multinomial logistic regression), so that fine-tuning starts from a good head (LP-FT)."""
    with torch.no_grad():
        classifier.eval()
        feats = torch.cat([classifier.encoder(images_u8[i:i + 256].float() / 255.0)
                           for i in range(0, len(images_u8), 256)])
    head = classifier.head
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(feats), targets) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    classifier.train()


def test_stage(classifier: ViTClassifier, data: RunData) -> tuple[dict, np.ndarray]:
    """The test metrics and the (N, K) softmax probabilities they come from."""
    from mnist_ssl.evaluation.metrics import classification_metrics

    logits = predict_logits(classifier, data.test_images)
    return classification_metrics(logits, data.test_targets.cpu(), data.classes), probabilities(logits)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """(N, K) float32 softmax of classifier logits, as predictions.npz stores them."""
    return torch.softmax(logits.detach().float(), dim=-1).cpu().numpy().astype(np.float32)


def save_predictions(path: Path, probs: np.ndarray, targets: torch.Tensor, images_u8: torch.Tensor) -> None:
    """predictions.npz: every test image's class probabilities ``probs`` (N, K) and true class
    index ``y`` (N,), plus the misclassified images themselves (``error_index`` (E,) into the
    test sample, ``error_images`` uint8 (E, H, W)), so a report can show the mistakes and
    combine runs of one sample without the data or the model."""
    y = targets.cpu().numpy().astype(np.int64)
    wrong = np.flatnonzero(probs.argmax(axis=1) != y)
    images = images_u8.cpu().numpy()
    error_images = images[wrong].reshape(len(wrong), *images.shape[-2:]).astype(np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, probs=probs, y=y, error_index=wrong.astype(np.int64), error_images=error_images)
    atomic_write_bytes(path, buf.getvalue())


def tta_stage(cfg: RunConfig, classifier: ViTClassifier, test_images: torch.Tensor,
              test_targets: torch.Tensor) -> dict | None:
    """The run's accuracy with test-time augmentation (None when ``eval.tta_views`` is 0); the
    copies are seeded by the run's seed, so the number is reproducible."""
    from mnist_ssl.evaluation.tta import tta_probabilities

    views = cfg.eval.tta_views
    if views == 0:
        return None
    probs = tta_probabilities(classifier, test_images, cfg.finetune_augment, views, seed=cfg.seed)
    return {"accuracy": float((probs.argmax(-1) == test_targets.cpu()).float().mean()), "views": views}


def run_experiment(cfg: RunConfig, run_dir: str | Path, *, quiet: bool = False,
                   progress=None, stop_requested: Callable[[], bool] = lambda: False,
                   data: RunData | None = None, encoder: ViTEncoder | None = None,
                   resume: bool = False) -> dict:
    """Pretrain (if the method does and no ``encoder`` is given), fine-tune, evaluate.

    Writes everything under ``run_dir`` and returns this run's metrics (the
    RunMetrics of docs/design.md). ``resume``: continue from the state saved at
    the end of the last completed epoch (``resume.json``), if there is one; the
    result is bit-identical to an uninterrupted run on the CPU.
    """
    from mnist_ssl.evaluation.metrics import format_confusion
    from mnist_ssl.report.plots import plot_confusion, plot_loss_curves

    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_threads(cfg.threads)
    setup_determinism(cfg.deterministic)
    device = resolve_device(cfg.device)
    saved = _saved_state(cfg, run_dir) if resume and encoder is None else None
    phase = saved["meta"]["phase"] if saved is not None else None
    seed_everything(cfg.seed)
    t_start = time.perf_counter()
    if data is None:
        data = prepare_data(cfg, device)
    atomic_write_text(run_dir / "config.json", cfg.to_json())
    if saved is None:
        clear_train_state(run_dir)
        (run_dir / "log.jsonl").unlink(missing_ok=True)
    else:  # the log as it was when the state was saved
        atomic_write_text(run_dir / "log.jsonl", "".join(line + "\n" for line in saved["meta"]["log"]))
    times: dict[str, float] = {}
    kw = dict(quiet=quiet, progress=progress, stop_requested=stop_requested)

    if encoder is None:
        encoder = ViTEncoder(cfg.model).to(device)
        if phase == "finetune":  # pretraining finished before the stop: its checkpoint is the encoder
            if get_method(cfg.method).build is not None:
                encoder = load_encoder(run_dir / "pretrained.safetensors")[0].to(device)
                times["pretrain"] = sum(json.loads(line).get("time_s", 0.0) for line in saved["meta"]["log"]
                                        if json.loads(line).get("phase") == "pretrain")
        else:
            t = pretrain_stage(cfg, encoder, data, run_dir, resume=saved, **kw)
            if t is not None:
                times["pretrain"] = t
    t0 = time.perf_counter()
    frozen = frozen_stage(cfg, encoder, data, run_dir)
    frozen_time = time.perf_counter() - t0
    classifier, ckpt, times["finetune"] = finetune_stage(
        cfg, encoder, data, run_dir, resume=saved if phase == "finetune" else None, **kw)
    t0 = time.perf_counter()
    metrics, probs = test_stage(classifier, data)
    save_predictions(run_dir / "predictions.npz", probs, data.test_targets, data.test_images)
    tta = tta_stage(cfg, classifier, data.test_images, data.test_targets)
    times["eval"] = time.perf_counter() - t0 + frozen_time
    times["total"] = time.perf_counter() - t_start
    metrics = {"method": cfg.method, "seed": cfg.seed, **metrics, **frozen, "tta": tta,
               "checkpoint": str(ckpt), "wall_time_s": {k: round(v, 3) for k, v in times.items()}}
    tta_line = "" if tta is None else \
        f"\nTest Accuracy with test-time augmentation ({tta['views']} copies): {100 * tta['accuracy']:.2f}%"
    _say(f"Test Accuracy: {100 * metrics['accuracy']:.2f}%{tta_line}\nConfusion Matrix:\n"
         f"{format_confusion(np.array(metrics['confusion']))}", quiet, progress)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    clear_train_state(run_dir)  # the run is finished: metrics.json marks it
    history = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    plot_loss_curves({p: [r["loss"] for r in history if r["phase"] == p] for p in ("pretrain", "finetune")},
                     str(run_dir / "loss_curve.png"), f"{cfg.method}, seed {cfg.seed}")
    plot_confusion(np.array(metrics["confusion"]), data.classes, str(run_dir / "confusion.png"),
                   f"{cfg.method}, seed {cfg.seed}: {100 * metrics['accuracy']:.2f}%")
    return metrics


def _saved_state(cfg: RunConfig, run_dir: Path) -> dict | None:
    """The resumable state of ``run_dir`` (None: start the run afresh), checked against ``cfg``."""
    from mnist_ssl.engine.resume import check_same_config
    from mnist_ssl.errors import CheckpointError

    saved = load_train_state(run_dir)
    if saved is None:
        return None
    check_same_config(saved, cfg.to_dict(), run_dir)
    if saved["meta"]["phase"] == "finetune" and get_method(cfg.method).build is not None \
            and not (run_dir / "pretrained.json").exists():
        raise CheckpointError(f"cannot resume {run_dir}: fine-tuning was saved but pretrained.safetensors "
                              "is missing; start this run again with --overwrite")
    return saved


def _clip_builder(cfg: RunConfig) -> Callable | None:
    """Clip construction for video models (frames > 1); None for image models."""
    if cfg.model.frames == 1:
        return None
    from mnist_ssl.data.clips import make_clips

    return lambda x: make_clips(x, cfg.model.frames, cfg.videomae.clip_mode)


# ----- the single-stage commands ----------------------------------------------
def pretrain_only(cfg: RunConfig, out_dir: str | Path, *, quiet: bool = False) -> Path:
    """``mnist-ssl pretrain``: pretrain only; returns the pretrained checkpoint's path."""
    from mnist_ssl.errors import ConfigError

    cfg.validate()
    if get_method(cfg.method).build is None:
        raise ConfigError(f"method {cfg.method!r} has no pretraining; use 'mnist-ssl reproduce --methods {cfg.method}'")
    out_dir = Path(out_dir)
    setup_threads(cfg.threads)
    setup_determinism(cfg.deterministic)
    device = distributed.init_from_env(resolve_device(cfg.device))  # torchrun: join the group
    seed_everything(cfg.seed)
    data = prepare_data(cfg, device)
    if distributed.is_main():
        atomic_write_text(out_dir / "config.json", cfg.to_json())
        (out_dir / "log.jsonl").unlink(missing_ok=True)
    encoder = ViTEncoder(cfg.model).to(device)
    pretrain_stage(cfg, encoder, data, out_dir, quiet=quiet)
    if distributed.is_main():
        clear_train_state(out_dir)  # `pretrain` does not resume; its per-epoch state is not needed
    distributed.shutdown()
    return out_dir / "pretrained.safetensors"


# Model fields without weights: a loaded encoder can take new values of these.
_RETUNABLE_MODEL_FIELDS = ("dropout", "attn_dropout")


def _apply_model_overrides(encoder, saved, wanted) -> None:
    """Apply the model fields the command line changed against the checkpoint's run config:
    dropout rates to the loaded encoder; any architectural field is refused, never ignored."""
    from dataclasses import fields

    from mnist_ssl.errors import ConfigError

    changed = [f.name for f in fields(wanted) if getattr(wanted, f.name) != getattr(saved, f.name)]
    fixed = [name for name in changed if name not in _RETUNABLE_MODEL_FIELDS]
    if fixed:
        name = fixed[0]
        raise ConfigError(f"model.{name}={getattr(wanted, name)!r} (from --set or --config): the checkpoint's "
                          f"encoder has {name}={getattr(encoder.cfg, name)!r}, which fine-tuning cannot change "
                          f"(only {', '.join('model.' + n for n in _RETUNABLE_MODEL_FIELDS)} can)")
    if changed:
        encoder.set_dropout(wanted.dropout, wanted.attn_dropout)


def finetune_from(checkpoint: str | Path, args, out_dir: str | Path, *, quiet: bool = False) -> dict:
    """``mnist-ssl finetune``: load a pretrained encoder, fine-tune, test; the run config comes
    from the checkpoint, then the command line's flags and --set on top."""
    from mnist_ssl.cli import build_config
    from mnist_ssl.config import RunConfig
    from mnist_ssl.engine.checkpoint import load_encoder

    if Path(checkpoint).is_dir():  # a pretraining run folder, as `mnist-ssl pretrain --out` wrote it
        checkpoint = Path(checkpoint) / "pretrained.safetensors"
    encoder, meta = load_encoder(checkpoint)
    saved = RunConfig.from_dict(meta.get("run_config") or RunConfig(method=meta.get("method", "mae")).to_dict())
    cfg = build_config(args, None, base=saved.to_dict())
    _apply_model_overrides(encoder, saved.model, cfg.model)
    cfg.model = encoder.cfg
    device = resolve_device(cfg.device)
    return run_experiment(cfg, out_dir, quiet=quiet, encoder=encoder.to(device))


def evaluate_checkpoint(checkpoint: str | Path, *, data: str = "embedded", dataset: str = "mnist",
                        classes: list[int] | None = None, classes_given: bool = False,
                        test_per_class="keep", all_test: bool = False, seed: int = 0,
                        threads: int = 1, tta_views: int = 0) -> dict:
    """``mnist-ssl evaluate``: test a fine-tuned classifier on the test split of ``data``; with
    ``tta_views`` > 0 also with test-time augmentation (the checkpoint's fine-tuning augmentation)."""
    from mnist_ssl.config import DataConfig
    from mnist_ssl.data import class_index, load_test_split
    from mnist_ssl.engine.checkpoint import load_classifier
    from mnist_ssl.errors import ConfigError
    from mnist_ssl.evaluation.metrics import classification_metrics

    setup_threads(threads)
    model, meta = load_classifier(checkpoint)
    ckpt_classes = list(meta.get("classes") or range(model.cfg.num_classes))
    if classes_given:
        wanted = list(range(10)) if classes is None else classes
        foreign = [c for c in wanted if c not in ckpt_classes]
        if foreign:
            raise ConfigError(f"--classes: the checkpoint was trained on {ckpt_classes}, "
                              f"it cannot predict {foreign}")
    else:
        wanted = ckpt_classes
    data_cfg = DataConfig(source=data, dataset=dataset, classes=wanted)
    if test_per_class != "keep":
        data_cfg.test_per_class = test_per_class
    data_cfg.validate()
    split = load_test_split(data_cfg, seed, all_test=all_test)
    targets = class_index(split.labels, ckpt_classes)
    logits = predict_logits(model, split.images)
    result = classification_metrics(logits, targets, ckpt_classes)
    result["n"] = result["n_test"]
    result["classes"] = ckpt_classes
    if tta_views:
        from mnist_ssl.config import RunConfig

        cfg = RunConfig.from_dict(meta.get("run_config") or {})
        cfg.seed, cfg.eval.tta_views = seed, tta_views
        result["tta"] = tta_stage(cfg, model, split.images, targets)
    return result
