"""The tensors a run trains and tests on, and what each training phase sees of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mnist_ssl.data import class_index, load_splits, load_unlabelled_pool
from mnist_ssl.data.augment import Augmenter
from mnist_ssl.errors import DataError


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


def run_classes(cfg) -> list[int]:
    """The digits a run classifies (``data.classes``; None = all ten)."""
    return list(cfg.data.classes) if cfg.data.classes is not None else list(range(10))


def fit_config_to_data(cfg, classes_given: bool) -> None:
    """An image folder's or .npz's shape and classes into a fresh config: ``model.in_chans`` and
    ``model.image_size`` follow the images, ``data.class_names`` the source, and ``data.classes``
    becomes all of them unless the user chose some. MNIST sources (28 x 28, digits) change nothing."""
    from mnist_ssl.data.sources import opened_source, square_shape

    source = opened_source(cfg.data.source, cfg.data.dataset)
    if source is None:
        return
    cfg.model.in_chans, cfg.model.image_size = square_shape(source)
    cfg.data.class_names = list(source.classes)
    if not classes_given or cfg.data.classes is None:  # None ("all") means this source's classes
        cfg.data.classes = list(range(len(source.classes)))


def check_shape(cfg, images: torch.Tensor, what: str) -> None:
    want = (cfg.model.in_chans, cfg.model.image_size, cfg.model.image_size)
    if tuple(images.shape[1:]) != want:
        raise DataError(f"{what} holds images of shape {tuple(images.shape[1:])} (C, H, W), but the model "
                        f"takes {want} (model.in_chans, model.image_size)")


def prepare_data(cfg, device: torch.device) -> RunData:
    """The seed's train/test sample of ``cfg.data`` (and the unlabelled pool when
    ``data.pretrain_on == "pool"``, or ``data.pretrain_source``'s images), on ``device``."""
    train_split, test_split = load_splits(cfg.data, cfg.seed)
    check_shape(cfg, train_split.images, cfg.data.source)
    classes = run_classes(cfg)
    tr_y = class_index(train_split.labels, classes)
    te_y = class_index(test_split.labels, classes)
    train_images = to_device(train_split.images, device)
    pretrain_images = train_images
    if cfg.data.pretrain_source:
        from mnist_ssl.data.sources import load_pretrain_images

        pretrain = load_pretrain_images(cfg.data.pretrain_source, cfg.data.dataset)
        check_shape(cfg, pretrain.images, cfg.data.pretrain_source)
        pretrain_images = to_device(pretrain.images, device)
    elif cfg.data.pretrain_on == "pool":
        pretrain_images = to_device(load_unlabelled_pool(cfg.data, cfg.seed).images, device)
    return RunData(train_images, to_device(tr_y, device), to_device(test_split.images, device),
                   to_device(te_y, device), pretrain_images, classes)


def load_test_sample(cfg):
    """(test images uint8, class indices) of the seed's sample, on the CPU."""
    _, test = load_splits(cfg.data, cfg.seed)
    return test.images, class_index(test.labels, run_classes(cfg))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
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


def clip_builder(cfg) -> Callable | None:
    """Clip construction for video models (frames > 1); None for image models."""
    if cfg.model.frames == 1:
        return None
    from mnist_ssl.data.clips import make_clips

    return lambda x: make_clips(x, cfg.model.frames, cfg.videomae.clip_mode)


def phase_view(cfg, phase: str) -> Callable | None:
    """What the engine trains ``phase`` ("pretrain" or "finetune") on: its augmentation, then clips."""
    return make_view(getattr(cfg, f"{phase}_augment"), clip_builder(cfg))
