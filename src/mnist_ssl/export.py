"""Export a checkpoint's encoder to timm or HuggingFace transformers, loadable without mnist-ssl.

Neither library is needed to export: the weights are renamed into the other
library's layout and written with safetensors, beside a config file.

* ``--format timm`` writes ``model.safetensors`` (timm ``VisionTransformer`` key
  names) and ``timm.json`` (the ``timm.create_model`` arguments)::

      spec = json.load(open("DIR/timm.json"))
      model = timm.create_model(spec["model_name"], pretrained=False,
                                norm_layer=torch.nn.LayerNorm, **spec["kwargs"])
      model.load_state_dict(safetensors.torch.load_file("DIR/model.safetensors"))

  ``norm_layer=torch.nn.LayerNorm``: mnist-ssl's LayerNorms use torch's eps
  (1e-5); timm's ViT default is 1e-6, and a JSON file cannot name a class.
  ``model(x)`` gives the CLS features (or, for a fine-tuned classifier, the
  logits; ``model.forward_head(model.forward_features(x), pre_logits=True)``
  the features).
* ``--format hf`` writes ``config.json`` + ``model.safetensors`` in the layout of
  the Hub's ViT checkpoints: ``transformers.ViTModel.from_pretrained(DIR)``.
  ``last_hidden_state[:, 0]`` is the CLS feature, and so is ``pooler_output``
  (its pooler is written as the identity, with ``pooler_act="linear"``).

Both take pixels in [0, 1], (B, C, H, W), as mnist-ssl does: its pixel
normalisation is folded into the patch embedding. Differences from mnist-ssl's
encoder that the mapping absorbs: no position embedding on the CLS token (a zero
row in the other libraries' table), one fused qkv projection (split into
query/key/value for transformers), a Conv3d patch embedding (its one-frame
kernel). Video encoders whose clips have more than one token per image position
(``frames / tubelet`` > 1, Video MAE's default) are refused: an image ViT has no
place for their temporal tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mnist_ssl.config import ModelConfig
from mnist_ssl.errors import ConfigError
from mnist_ssl.fileio import atomic_write_files

FORMATS = ("timm", "hf")
# Any timm ViT name works: every architecture argument is overridden by the kwargs.
TIMM_MODEL_NAME = "vit_tiny_patch16_224"


def _check_exportable(cfg: ModelConfig, where: str) -> None:
    if cfg.frames // cfg.tubelet > 1:
        raise ConfigError(
            f"{where}: a video encoder with {cfg.frames // cfg.tubelet} tokens per image position "
            f"(model.frames={cfg.frames}, model.tubelet={cfg.tubelet}) has no image-ViT equivalent "
            "in timm or transformers; export an image method's checkpoint"
        )


def _patch_weights(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The Conv2d (D, C, p, p) weight and bias that take raw [0, 1] pixels.

    A one-token-per-position clip of identical frames is the image seen by the
    summed time kernel; ``(x - mean) / std`` is folded into weight and bias.
    """
    weight = sd["patch_embed.proj.weight"].sum(dim=2)  # (D, C, t, p, p) -> (D, C, p, p)
    bias = sd["patch_embed.proj.bias"]
    weight = weight / cfg.pixel_std
    bias = bias - (cfg.pixel_mean / cfg.pixel_std) * sd["patch_embed.proj.weight"].sum(dim=(1, 2, 3, 4))
    return weight.contiguous(), bias.contiguous()


def _position_table(sd: dict[str, torch.Tensor], cfg: ModelConfig, encoder) -> torch.Tensor:
    """(1, 1 + N, D): a zero row for the CLS token, then mnist-ssl's patch positions."""
    table = encoder.pos_embed().detach()  # learned or sin-cos, (N, D)
    return torch.cat([torch.zeros(1, cfg.dim), table], dim=0).unsqueeze(0).contiguous()


def timm_state_dict(encoder, head: torch.nn.Linear | None = None) -> dict[str, torch.Tensor]:
    """mnist-ssl ViTEncoder (+ classifier head) -> timm ``VisionTransformer`` state_dict."""
    cfg = encoder.cfg
    sd = {k: v.detach() for k, v in encoder.state_dict().items()}
    weight, bias = _patch_weights(sd, cfg)
    out = {"cls_token": sd["cls_token"], "pos_embed": _position_table(sd, cfg, encoder),
           "patch_embed.proj.weight": weight, "patch_embed.proj.bias": bias,
           "norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    for i in range(cfg.depth):
        src = f"blocks.{i}."
        for ours, theirs in (("norm1", "norm1"), ("attn.qkv", "attn.qkv"), ("attn.proj", "attn.proj"),
                             ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for p in ("weight", "bias"):
                out[f"blocks.{i}.{theirs}.{p}"] = sd[f"{src}{ours}.{p}"]
    if head is not None:
        out["head.weight"], out["head.bias"] = head.weight.detach(), head.bias.detach()
    return {k: v.contiguous().clone() for k, v in out.items()}


def timm_kwargs(cfg: ModelConfig, num_classes: int) -> dict[str, Any]:
    """``timm.create_model`` arguments that rebuild the encoder (JSON-serialisable)."""
    return {"img_size": cfg.image_size, "patch_size": cfg.patch_size, "in_chans": cfg.in_chans,
            "embed_dim": cfg.dim, "depth": cfg.depth, "num_heads": cfg.heads, "mlp_ratio": cfg.mlp_ratio,
            "qkv_bias": True, "class_token": True, "global_pool": "token", "num_classes": num_classes}


def hf_state_dict(encoder) -> dict[str, torch.Tensor]:
    """mnist-ssl ViTEncoder -> transformers ``ViTModel`` state_dict (the Hub's ViT key names)."""
    cfg = encoder.cfg
    sd = {k: v.detach() for k, v in encoder.state_dict().items()}
    weight, bias = _patch_weights(sd, cfg)
    D = cfg.dim
    out = {"embeddings.cls_token": sd["cls_token"],
           "embeddings.position_embeddings": _position_table(sd, cfg, encoder),
           "embeddings.patch_embeddings.projection.weight": weight,
           "embeddings.patch_embeddings.projection.bias": bias,
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"],
           # The identity pooler (with pooler_act="linear"): pooler_output is the CLS feature.
           "pooler.dense.weight": torch.eye(D), "pooler.dense.bias": torch.zeros(D)}
    for i in range(cfg.depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        qkv_w, qkv_b = sd[f"{src}attn.qkv.weight"], sd[f"{src}attn.qkv.bias"]
        # mnist-ssl's qkv output is laid out (3, heads, head_dim): rows [0, D) are the query.
        for j, name in enumerate(("query", "key", "value")):
            out[f"{dst}attention.attention.{name}.weight"] = qkv_w[j * D:(j + 1) * D]
            out[f"{dst}attention.attention.{name}.bias"] = qkv_b[j * D:(j + 1) * D]
        for ours, theirs in (("attn.proj", "attention.output.dense"), ("norm1", "layernorm_before"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"),
                             ("mlp.fc2", "output.dense")):
            for p in ("weight", "bias"):
                out[f"{dst}{theirs}.{p}"] = sd[f"{src}{ours}.{p}"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """``config.json`` of a transformers ``ViTModel`` with the encoder's shape."""
    return {"architectures": ["ViTModel"], "model_type": "vit", "hidden_size": cfg.dim,
            "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.heads,
            "intermediate_size": int(cfg.dim * cfg.mlp_ratio), "hidden_act": "gelu",
            "layer_norm_eps": 1e-5, "image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "num_channels": cfg.in_chans, "qkv_bias": True, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "pooler_output_size": cfg.dim, "pooler_act": "linear",
            "torch_dtype": "float32"}


def export(checkpoint: str | Path, fmt: str, out: str | Path) -> list[Path]:
    """Write ``checkpoint``'s encoder to folder ``out`` in ``fmt`` ("timm" or "hf"); returns the files.

    A fine-tuned classifier's head goes with it to timm (``model(x)`` gives
    its logits); the HF export is the encoder (``ViTModel``) in both cases.
    """
    from safetensors.torch import save

    from mnist_ssl.engine.checkpoint import checkpoint_paths, load_classifier, load_encoder, read_checkpoint

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    where = str(checkpoint_paths(checkpoint)[0])
    _, meta = read_checkpoint(checkpoint)
    head = None
    if meta.get("kind") == "classifier":
        classifier, meta = load_classifier(checkpoint)
        encoder, head = classifier.encoder, classifier.head
    else:
        encoder, meta = load_encoder(checkpoint)
    _check_exportable(encoder.cfg, where)
    encoder.eval()
    source = {"checkpoint": where, "method": meta.get("method"), "classes": meta.get("classes"),
              "input": f"float pixels in [0, 1], (B, {encoder.cfg.in_chans}, {encoder.cfg.image_size}, "
                       f"{encoder.cfg.image_size})"}
    if fmt == "timm":
        num_classes = 0 if head is None else head.out_features
        spec = {"model_name": TIMM_MODEL_NAME, "kwargs": timm_kwargs(encoder.cfg, num_classes),
                "norm_layer": "torch.nn.LayerNorm", "mnist_ssl": source}
        files = {out / "model.safetensors": save(timm_state_dict(encoder, head)),
                 out / "timm.json": json.dumps(spec, indent=2).encode()}
    else:
        config = {**hf_config(encoder.cfg), "mnist_ssl": source}
        files = {out / "model.safetensors": save(hf_state_dict(encoder), metadata={"format": "pt"}),
                 out / "config.json": json.dumps(config, indent=2).encode()}
    atomic_write_files(files)
    return list(files)

