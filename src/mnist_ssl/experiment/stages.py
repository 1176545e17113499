"""The stages of an experiment, each a function of (config, model, data, where to write).

pretrain -> frozen evaluation -> fine-tune (LP-FT head init) -> evaluate -> TTA. ``reproduce``,
``label-efficiency`` and the single-stage commands all run these; :mod:`run` chains them for
one (method, seed) run.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mnist_ssl.engine import distributed
from mnist_ssl.engine.callbacks import ConsolePrinter, JSONLLogger
from mnist_ssl.engine.checkpoint import atomic_write_text, save_checkpoint
from mnist_ssl.engine.loop import train
from mnist_ssl.engine.resume import ResumeWriter
from mnist_ssl.evaluation.metrics import classification_metrics
from mnist_ssl.experiment.data import RunData, phase_view
from mnist_ssl.experiment.runtime import seed_everything
from mnist_ssl.fileio import atomic_write_bytes
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.registry import build_objective, get_method
from mnist_ssl.objectives.supervised import Supervised


def say(text: str, quiet: bool, progress=None) -> None:
    """A line for the user: above the progress bar when there is one; nothing when quiet."""
    if quiet:
        return
    if progress is not None:
        progress.write_line(text)
    else:
        print(text, flush=True)


def run_callbacks(cfg, log_path: Path, label: str, quiet: bool, progress) -> list:
    """A run's training callbacks: the JSON log, the console line, the progress bar, the resume state."""
    if not distributed.is_main():  # under torchrun only rank 0 prints and writes
        return []
    cbs: list = [JSONLLogger(log_path, method=cfg.method, seed=cfg.seed)]
    if not quiet:
        cbs.append(ConsolePrinter(label, stream=progress, extra_terms=True))
    if progress is not None:
        cbs.append(progress)
    if cfg.run.tensorboard:
        from mnist_ssl.engine.callbacks import TensorBoardLogger
        from mnist_ssl.experiment.rundir import RunDir

        cbs.append(TensorBoardLogger(RunDir(log_path.parent).tensorboard))
    # Last: the resumable state is saved after the epoch's log line (docs/reliability.md).
    cbs.append(ResumeWriter(log_path.parent, cfg.to_dict(), log_path))
    return cbs


# ----- pretraining ------------------------------------------------------------------
def pretrain(cfg, encoder: ViTEncoder, images: torch.Tensor, *, callbacks: Callable[[str], list],
             stop_requested: Callable[[], bool] = lambda: False, resume: dict | None = None):
    """Pretrain ``encoder`` (in place) on ``images`` without labels with the method's objective;
    -> the objective, or None for a method without pretraining. ``callbacks(loss_label)`` gives
    the training callbacks; ``resume``: a saved pretraining state to continue from."""
    objective = build_objective(cfg, encoder)
    if objective is None:
        return None
    objective.to(images.device)
    seed_everything(cfg.seed)
    train(objective, images, None, cfg.pretrain, phase="pretrain", view=phase_view(cfg, "pretrain"),
          callbacks=callbacks(objective.loss_label), stop_requested=stop_requested, resume=resume,
          compile=cfg.compile)
    return objective


def save_pretrained(cfg, objective, stem: Path, classes: list[int], **extra) -> Path:
    """The pretraining checkpoint (``stem``.safetensors + .json) with the run config."""
    return save_checkpoint(stem, objective, kind="objective", model=cfg.model,
                           extra={"method": cfg.method, "classes": classes, **class_names(cfg, classes),
                                  "run_config": cfg.to_dict(), **extra})


def class_names(cfg, classes: list[int]) -> dict:
    """{"class_names": the name of each of ``classes``} for sources with named classes (image
    folders, .npz); {} for MNIST's digits: the field checkpoints carry, and run metrics may
    (report/schema.py's class_names)."""
    names = cfg.data.class_names
    return {} if names is None else {"class_names": [names[c] for c in classes]}


def pretraining_figure(cfg, objective, test_images: torch.Tensor, path_of: Callable[[str], Path]) -> None:
    """The method's figure (the registry's kind) of 8 test images, evenly spaced to show every
    class (test images are grouped by class); ``path_of(kind)`` names the file."""
    kind = get_method(cfg.method).figure
    torch.manual_seed(cfg.seed)
    pick = torch.linspace(0, len(test_images) - 1, 8).long().to(test_images.device)
    arrays = objective.figure(test_images[pick].float() / 255.0)
    if arrays is not None and kind is not None:
        from mnist_ssl.report.plots import draw_method_figure

        draw_method_figure(kind, arrays, str(path_of(kind)))


def reconstruction_check(objective, train_images: torch.Tensor, test_images: torch.Tensor) -> dict | None:
    """For a masked method: the masked-patch error of its reconstructions of the test images
    against predicting each position's mean training patch (None for other methods)."""
    if not hasattr(objective, "masked_patch_error"):
        return None
    encoder = objective.encoder
    train = train_images.float() / 255.0
    if encoder.cfg.frames > 1:
        train = encoder.as_clip(train)
    mean_patch = encoder.patchify(train).mean(0)
    result = objective.masked_patch_error(test_images.float() / 255.0, mean_patch)
    return {k: round(v, 6) for k, v in result.items()}


def save_reconstruction_check(result: dict | None, path: Path) -> None:
    if result is not None:
        atomic_write_text(path, json.dumps(result))


def load_reconstruction_check(path: Path) -> dict | None:
    """The saved check of a run (None when its method does not mask, or the run predates it)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ----- frozen evaluation ---------------------------------------------------------------
def frozen(cfg, encoder: ViTEncoder, data: RunData, features_path: Path) -> dict:
    """Linear probe and kNN on frozen CLS features (eval mode, no masking), each also in the field's
    variant (cross-validated C, weighted vote), and the same at random initialisation
    (``random_init``: what pretraining has to beat); saves the test features."""
    if not (cfg.eval.linear_probe or cfg.eval.knn):
        return {}
    out, te_x, te_y = frozen_metrics(cfg, encoder, data)
    out["random_init"] = (frozen_metrics(cfg, random_init_encoder(cfg, data.train_images.device), data)[0]
                          if get_method(cfg.method).build is not None
                          else {k: v for k, v in out.items()})  # from scratch: the encoder is its random init
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.asarray(te_x, dtype=np.float32), y=te_y)
    atomic_write_bytes(features_path, buf.getvalue())
    return out


def frozen_metrics(cfg, encoder: ViTEncoder, data: RunData) -> tuple[dict, object, np.ndarray]:
    """The frozen evaluations ``cfg.eval`` asks for -> (metrics, test features, test labels)."""
    from mnist_ssl.evaluation.probe import extract_features, frozen_evaluations

    tr_x = extract_features(encoder, data.train_images.float() / 255.0)
    te_x = extract_features(encoder, data.test_images.float() / 255.0)
    tr_y, te_y = data.train_targets.cpu().numpy(), data.test_targets.cpu().numpy()
    out = frozen_evaluations(tr_x, tr_y, te_x, te_y, knn_k=cfg.eval.knn_k, seed=cfg.seed,
                             linear_probe_c=cfg.eval.probe_c, linear=cfg.eval.linear_probe, knn=cfg.eval.knn)
    return out, te_x, te_y


def random_init_encoder(cfg, device: torch.device) -> ViTEncoder:
    """The run's encoder at random initialisation (torch seeded with the run's seed), built without
    disturbing the random state the following stages draw from."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return ViTEncoder(cfg.model).to(device)


# ----- fine-tuning -----------------------------------------------------------------
def finetune(cfg, ft, classifier: ViTClassifier, images_u8: torch.Tensor, targets: torch.Tensor,
             seed: int, **train_kw):
    """Fine-tuning as every command does it, seeded by ``seed``: the head first fitted on the
    frozen features when ``ft.head_init == "probe"`` (LP-FT), then cross-entropy on the whole
    network through the engine with the run's fine-tuning augmentation (and clips). ``ft``: the
    phase's OptimConfig (``cfg.finetune``, or a variant with another batch size or epoch count);
    ``train_kw`` goes to :func:`train` (callbacks, stop_requested, resume)."""
    seed_everything(seed + 1)
    if ft.head_init == "probe":
        fit_head_on_frozen_features(classifier, images_u8, targets)
    return train(Supervised(classifier, ft.label_smoothing), images_u8, targets, ft, phase="finetune",
                 view=phase_view(cfg, "finetune"), compile=cfg.compile, **train_kw)


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


def save_finetuned(cfg, classifier: ViTClassifier, stem: Path, classes: list[int]) -> Path:
    model_cfg = dataclasses.replace(cfg.model, num_classes=len(classes))
    return save_checkpoint(stem, classifier, kind="classifier", model=model_cfg,
                           extra={"method": cfg.method, "classes": classes, **class_names(cfg, classes),
                                  "run_config": cfg.to_dict()})


# ----- testing -----------------------------------------------------------------------
@torch.no_grad()
def predict_logits(model: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = [model(images_u8[i:i + batch_size].float().div_(255.0)) for i in range(0, len(images_u8), batch_size)]
    return torch.cat(out).float().cpu()


def evaluate(classifier: torch.nn.Module, images_u8: torch.Tensor, targets: torch.Tensor,
             classes: list[int]) -> tuple[dict, np.ndarray]:
    """The one test of a classifier: its metrics (accuracy, interval, confusion, recall) on
    ``images_u8`` and the (N, K) softmax probabilities they come from."""
    logits = predict_logits(classifier, images_u8)
    return classification_metrics(logits, targets.cpu(), classes), probabilities(logits)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """(N, K) float32 softmax of classifier logits, as predictions.npz stores them."""
    return torch.softmax(logits.detach().float(), dim=-1).cpu().numpy().astype(np.float32)


def save_predictions(path: Path, probs: np.ndarray, targets: torch.Tensor, images_u8: torch.Tensor) -> None:
    """predictions.npz: every test image's class probabilities ``probs`` (N, K) and true class
    index ``y`` (N,), plus the misclassified images themselves (``error_index`` (E,) into the
    test sample, ``error_images`` uint8 (E, H, W), or (E, H, W, 3) for colour images), so a report can show the mistakes and
    combine runs of one sample without the data or the model."""
    y = targets.cpu().numpy().astype(np.int64)
    wrong = np.flatnonzero(probs.argmax(axis=1) != y)
    images = images_u8.cpu().numpy()
    chosen = images[wrong]  # (E, C, H, W)
    # One channel: (E, H, W); colour (C = 3): (E, H, W, 3), as images are drawn.
    error_images = (chosen[:, 0] if chosen.shape[1] == 1 else chosen.transpose(0, 2, 3, 1)).astype(np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, probs=probs, y=y, error_index=wrong.astype(np.int64), error_images=error_images)
    atomic_write_bytes(path, buf.getvalue())


def tta(cfg, classifier: torch.nn.Module, test_images: torch.Tensor, test_targets: torch.Tensor) -> dict | None:
    """The accuracy with test-time augmentation (None when ``eval.tta_views`` is 0, or when
    fine-tuning ran without augmentation: copies from views the classifier never saw cost
    accuracy instead of adding it); the copies are seeded by the run's seed, so the number is
    reproducible."""
    from mnist_ssl.evaluation.tta import tta_probabilities

    views = cfg.eval.tta_views
    if views == 0 or not cfg.finetune_augment.enabled:
        return None
    probs = tta_probabilities(classifier, test_images, cfg.finetune_augment, views, seed=cfg.seed)
    return {"accuracy": float((probs.argmax(-1) == test_targets.cpu()).float().mean()), "views": views}
