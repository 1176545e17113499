"""The Python API: load a checkpoint, get features or predictions for a tensor of images.

    import mnist_ssl
    encoder = mnist_ssl.load_encoder("runs/mae/seed0/pretrained.safetensors")
    feats = mnist_ssl.features(encoder, images)          # (N, D) CLS features
    clf = mnist_ssl.load_classifier("runs/mae/seed0/finetuned.safetensors")
    labels = mnist_ssl.classify(clf, images)             # (N,) class labels, from clf.classes
    probs = mnist_ssl.class_probabilities(clf, images)   # (N, K) softmax, columns in clf.classes order

``images``: a torch tensor or numpy array (N, C, H, W) -- C, H, W as the
checkpoint's ``model.in_chans`` and ``model.image_size`` -- of float pixels in
[0, 1], or uint8 pixels 0-255. Models come back in eval mode on the CPU; move
them with ``.to(device)``, the images follow the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_ssl.models.vit import ViTClassifier, ViTEncoder


def load_encoder(path: str | Path) -> ViTEncoder:
    """The encoder of any mnist-ssl checkpoint (pretrained or fine-tuned), in eval mode.

    ``encoder.checkpoint`` holds the checkpoint's sidecar (method, classes, config).
    """
    from mnist_ssl.engine.checkpoint import load_encoder as _load

    encoder, meta = _load(path)
    encoder.eval()
    encoder.checkpoint = meta
    return encoder


def load_classifier(path: str | Path) -> ViTClassifier:
    """A fine-tuned classifier in eval mode; ``classifier.classes`` lists what each output predicts
    (class numbers) and ``classifier.class_names`` their names."""
    from mnist_ssl.engine.checkpoint import load_classifier as _load

    classifier, meta = _load(path)
    classifier.checkpoint = meta
    classifier.classes = list(meta.get("classes") or range(classifier.cfg.num_classes))
    # An image folder's or .npz's class names, one per output; the class numbers otherwise.
    classifier.class_names = [str(c) for c in meta.get("class_names") or classifier.classes]
    return classifier


def _as_float_images(images: Any) -> torch.Tensor:
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"images must be float pixels in [0, 1] or uint8 0-255, got dtype {x.dtype}")
    return x.float()


def features(encoder: ViTEncoder, images: Any, batch_size: int = 256) -> torch.Tensor:
    """Frozen CLS features (N, D), float32 on the CPU; the encoder's train/eval mode is kept."""
    from mnist_ssl.evaluation.probe import extract_features

    return extract_features(encoder, _as_float_images(images), batch_size=batch_size)


@torch.no_grad()
def class_probabilities(classifier: ViTClassifier, images: Any, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (N, K), float32 on the CPU, columns in ``classifier.classes`` order."""
    x = _as_float_images(images)
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    try:
        chunks = [torch.softmax(classifier(x[i:i + batch_size].to(device)).float(), dim=-1).cpu()
                  for i in range(0, len(x), batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, classifier.cfg.num_classes)


def classify(classifier: ViTClassifier, images: Any, batch_size: int = 256) -> list:
    """The predicted class of each image: entries of ``classifier.classes`` (N,)."""
    classes = getattr(classifier, "classes", None) or list(range(classifier.cfg.num_classes))
    return [classes[i] for i in class_probabilities(classifier, images, batch_size).argmax(dim=1).tolist()]
