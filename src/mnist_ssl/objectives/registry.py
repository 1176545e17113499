"""The table of methods: adding one touches its own file, one line here and its preset.

``build`` makes the pretraining objective around a fresh encoder (``None``:
no pretraining, the from-scratch baseline). ``preset`` holds the method's
defaults as ``RunConfig`` overrides, applied before the user's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mnist_ssl.errors import ConfigError
from mnist_ssl.objectives import mae
from mnist_ssl.objectives import videomae
from mnist_ssl.objectives import infonce, mae_infonce


@dataclass(frozen=True)
class MethodSpec:
    name: str
    build: Callable[..., Any] | None
    description: str
    document_accuracy: float | None = None  # percent, as the source document reports it
    preset: dict = field(default_factory=dict)
    masked: bool = False  # writes a reconstruction figure
    contrastive: bool = False  # writes an augmented-views figure


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in [
        MethodSpec("mae", mae.build, "masked autoencoder ViT (chapter 1)", 99.00, masked=True),
        MethodSpec("videomae", videomae.build, "video MAE on 3-frame digit clips (2.11-2.15)", 98.00,
                   masked=True, preset={"model": {"frames": 3}, "pretrain": {"epochs": 20}}),
        MethodSpec("infonce", infonce.build, "contrastive ViT, InfoNCE between CLS tokens of two views (chapter 2)",
                   98.67, contrastive=True, preset=infonce.PRESET),
        MethodSpec("mae-infonce", mae_infonce.build, "MAE + InfoNCE, weighted sum of both losses (chapter 2)",
                   98.00, masked=True, preset=mae_infonce.PRESET),
        MethodSpec("supervised", None, "the same ViT trained from scratch, no pretraining"),
    ]
}


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def build_objective(cfg, encoder):
    """The pretraining objective of ``cfg.method`` around ``encoder`` (None for no pretraining)."""
    spec = get_method(cfg.method)
    return None if spec.build is None else spec.build(encoder, cfg)
