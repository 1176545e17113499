"""Checkpoints: safetensors weights + a JSON sidecar with the config. Nothing is ever unpickled.

``NAME.safetensors`` holds the tensors; ``NAME.json`` holds the format tag, the
kind of model, its :class:`ModelConfig`, the classes it predicts, the method,
and the SHA-256 of the weights file (so a truncated or swapped file is caught
before it is parsed). Both are written to a temporary file in the same folder,
fsynced, then renamed into place; both temporary files are written before
either is renamed, so a full disk leaves the previous pair as it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_ssl.config import ModelConfig, from_dict
from mnist_ssl.errors import CheckpointError, ConfigError
from mnist_ssl.fileio import atomic_write_bytes, atomic_write_files, atomic_write_text  # noqa: F401  (re-exported)

FORMAT = "mnist-ssl/checkpoint/v1"
# torch.save / pickle files: refused by name before anything is read.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """'run/finetuned', 'run/finetuned.safetensors' or 'run/finetuned.json' -> (weights, sidecar)."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json", ".pt", ".pth", ".bin", ".ckpt"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def save_checkpoint(path: str | Path, module: nn.Module, *, kind: str, model: ModelConfig,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save ``module.state_dict()`` (uncompiled names) + sidecar; returns the weights path."""
    from safetensors.torch import save

    weights_path, meta_path = checkpoint_paths(path)
    module = getattr(module, "_orig_mod", module)  # torch.compile wrapper: save the plain names
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"refusing to save {weights_path}: tensor {k} holds NaN or inf")
    blob = save(tensors)
    meta = {"format": FORMAT, "kind": kind, "model": _asdict(model),
            "sha256": hashlib.sha256(blob).hexdigest(), **(extra or {})}
    atomic_write_files({weights_path: blob, meta_path: json.dumps(meta, indent=2, sort_keys=True).encode()})
    return weights_path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """-> (tensors, sidecar metadata), after checking format, hash and parse. Never unpickles."""
    from safetensors.torch import load

    if Path(path).suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"checkpoint {path}: {Path(path).suffix} files are pickles, which can run code when loaded, "
            "and are never read; give an mnist-ssl .safetensors checkpoint (with its .json beside it)"
        )
    given = Path(path)
    if given.is_file() and given.suffix.lower() not in (".safetensors", ".json"):
        # Otherwise the suffix swap below would report a made-up 'X.safetensors' as missing.
        raise CheckpointError(f"checkpoint {path}: not a .safetensors file; give an mnist-ssl checkpoint "
                              "(DIR/finetuned.safetensors or DIR/pretrained.safetensors, .json beside it)")
    weights_path, meta_path = checkpoint_paths(path)
    if not weights_path.exists():
        raise CheckpointError(f"checkpoint {weights_path} does not exist")
    if not meta_path.exists():
        raise CheckpointError(
            f"checkpoint {weights_path} has no {meta_path.name} beside it: not an mnist-ssl checkpoint"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint sidecar {meta_path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not an mnist-ssl checkpoint (format {FORMAT} expected)")
    blob = weights_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(
            f"checkpoint {weights_path} does not match the hash in {meta_path.name}: "
            "truncated, corrupted or replaced"
        )
    try:
        tensors = load(blob)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"checkpoint {weights_path} is not a valid safetensors file ({e})") from None
    return tensors, meta


def model_config_of(meta: dict[str, Any], where: str) -> ModelConfig:
    try:
        cfg = from_dict(ModelConfig, meta.get("model"), "model")
        cfg.validate()
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {where}: its config is invalid ({e})") from None
    return cfg


def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], where: str,
              allow_missing: tuple[str, ...] = ()) -> None:
    """Load exactly: every key present with the right shape, except prefixes in ``allow_missing``."""
    own = module.state_dict()
    missing = [k for k in own if k not in tensors and not k.startswith(allow_missing)]
    unexpected = [k for k in tensors if k not in own]
    wrong = [f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}"
             for k, v in own.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        detail = "; ".join(filter(None, [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"wrong shape {wrong[:3]}" if wrong else "",
        ]))
        raise CheckpointError(f"checkpoint {where} does not fit its config: {detail}")
    module.load_state_dict({k: v for k, v in tensors.items()}, strict=False)


def load_classifier(path: str | Path):
    """A fine-tuned classifier and its sidecar metadata (classes, method, ...)."""
    from mnist_ssl.models.vit import ViTClassifier, ViTEncoder

    tensors, meta = read_checkpoint(path)
    where = str(checkpoint_paths(path)[0])
    if meta.get("kind") != "classifier":
        raise CheckpointError(
            f"checkpoint {where} is a {meta.get('kind')!r} checkpoint, not a fine-tuned classifier: "
            "fine-tune it first (mnist-ssl finetune --checkpoint ...)"
        )
    cfg = model_config_of(meta, where)
    if cfg.num_classes < 2:
        raise CheckpointError(f"checkpoint {where}: model.num_classes={cfg.num_classes} is not a classifier")
    model = ViTClassifier(ViTEncoder(cfg), cfg.num_classes)
    load_into(model, tensors, where)
    model.eval()
    return model, meta


def load_encoder(path: str | Path):
    """The encoder of any checkpoint (pretrained objective or classifier) and its metadata.

    Only the ``encoder.`` tensors are taken; a pretrained checkpoint must contain
    every one of them (exact transfer: nothing silently left at random).
    """
    from mnist_ssl.models.vit import ViTEncoder

    tensors, meta = read_checkpoint(path)
    where = str(checkpoint_paths(path)[0])
    cfg = model_config_of(meta, where)
    cfg.num_classes = 0
    # Objectives and classifiers both hold the shared encoder as ``encoder``.
    enc_tensors = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    encoder = ViTEncoder(cfg)
    load_into(encoder, enc_tensors, where)
    return encoder, meta


def _asdict(cfg: ModelConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg)
