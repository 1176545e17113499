"""`export`: timm and transformers load the exported encoder and give mnist-ssl's CLS features."""

from __future__ import annotations

import importlib.util
import os
import json

import pytest
import torch

from mnist_ssl.config import ModelConfig
from mnist_ssl.engine.checkpoint import save_checkpoint
from mnist_ssl.errors import ConfigError
from mnist_ssl.export import export
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder

TOLERANCE = 1e-5


def _declare_torchvision_ops() -> None:
    """Let torchvision's Python side import where its C++ ops cannot load.

    timm and transformers import torchvision. Beside a CPU torch the only
    torchvision wheel may be a CUDA build whose ops library does not load; its
    ``_meta_registrations`` then fails on two ops it registers unguarded (nms,
    qnms). The ViTs compared here use no torchvision op, so declaring those two
    schemas is enough. Where the ops load (a matching torchvision), this does nothing.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "nms"):
        return
    from pathlib import Path

    libs = sorted(Path(spec.origin).parent.glob("_C*.so"))
    try:
        torch.ops.load_library(str(libs[0]))
        return
    except (IndexError, OSError):
        pass
    for op in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # already declared by an earlier test
            pass


def _import(name: str):
    if importlib.util.find_spec(name) is None:
        if os.environ.get("CI"):  # .ci/run installs timm and the test extra transformers
            pytest.fail(f"{name} is not installed in CI: .ci/run should have installed it")
        pytest.skip(f"{name} is not installed (pip install 'mnist-ssl[export]')")
    _declare_torchvision_ops()
    return importlib.import_module(name)


def _images(cfg: ModelConfig, n: int = 100) -> torch.Tensor:
    return torch.rand(n, cfg.in_chans, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))


def _checkpoint(tmp_path, classifier: bool = False, **model):
    torch.manual_seed(0)
    cfg = ModelConfig(**model)
    encoder = ViTEncoder(cfg)
    with torch.no_grad():  # weights away from their init (unit norms, zero biases), so every tensor matters
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    module = ViTClassifier(encoder, 3) if classifier else encoder
    if classifier:
        with torch.no_grad():
            module.head.weight.normal_()
            module.head.bias.normal_()
        cfg.num_classes = 3
    module.eval()
    kind = "classifier" if classifier else "objective"
    # An objective checkpoint holds the encoder under "encoder."; a bare encoder is wrapped the same way.
    wrapped = module if classifier else torch.nn.ModuleDict({"encoder": encoder})
    path = save_checkpoint(tmp_path / "ckpt", wrapped, kind=kind, model=cfg,
                           extra={"method": "mae", "classes": [0, 1, 2]})
    return path, module


MODELS = [
    {},  # the defaults: 28 x 28, one channel, learned positions
    {"image_size": 32, "in_chans": 3, "patch_size": 8, "pos_embed": "sincos", "pixel_mean": 0.5, "pixel_std": 0.25},
    {"frames": 2, "tubelet": 2},  # one token per position: the summed time kernel
]


@pytest.mark.parametrize("model", MODELS, ids=["default", "rgb32-sincos-normalised", "tubelet2"])
def test_timm_features_match(tmp_path, model):
    timm = _import("timm")
    from safetensors.torch import load_file

    path, encoder = _checkpoint(tmp_path, **model)
    export(path, "timm", tmp_path / "timm")
    spec = json.loads((tmp_path / "timm" / "timm.json").read_text())
    other = timm.create_model(spec["model_name"], pretrained=False, norm_layer=torch.nn.LayerNorm, **spec["kwargs"])
    other.load_state_dict(load_file(tmp_path / "timm" / "model.safetensors"))  # strict: every key, no extra
    other.eval()
    x = _images(encoder.cfg)
    with torch.no_grad():
        torch.testing.assert_close(other(x), encoder(x), atol=TOLERANCE, rtol=0)


def test_timm_classifier_gives_logits(tmp_path):
    timm = _import("timm")
    from safetensors.torch import load_file

    path, classifier = _checkpoint(tmp_path, classifier=True)
    export(path, "timm", tmp_path / "timm")
    spec = json.loads((tmp_path / "timm" / "timm.json").read_text())
    assert spec["mnist_ssl"]["classes"] == [0, 1, 2]
    other = timm.create_model(spec["model_name"], pretrained=False, norm_layer=torch.nn.LayerNorm, **spec["kwargs"])
    other.load_state_dict(load_file(tmp_path / "timm" / "model.safetensors"))
    other.eval()
    x = _images(classifier.cfg)
    with torch.no_grad():
        torch.testing.assert_close(other(x), classifier(x), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("model", MODELS, ids=["default", "rgb32-sincos-normalised", "tubelet2"])
def test_hf_features_match(tmp_path, model):
    transformers = _import("transformers")
    path, encoder = _checkpoint(tmp_path, **model)
    export(path, "hf", tmp_path / "hf")
    other = transformers.ViTModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    other, info = other
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    other.eval()
    x = _images(encoder.cfg)
    with torch.no_grad():
        out = other(pixel_values=x)
        theirs = encoder(x)
    torch.testing.assert_close(out.last_hidden_state[:, 0], theirs, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(out.pooler_output, theirs, atol=TOLERANCE, rtol=0)


def test_refuses_video_encoder_and_unknown_format(tmp_path):
    path, _ = _checkpoint(tmp_path, frames=3)
    with pytest.raises(ConfigError, match="video encoder"):
        export(path, "timm", tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown export format"):
        export(path, "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_and_embed_commands(tmp_path, capsys):
    from mnist_ssl.cli import main

    path, _ = _checkpoint(tmp_path)
    assert main(["export", "--checkpoint", str(path), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert {p.name for p in (tmp_path / "hf").iterdir()} == {"config.json", "model.safetensors"}
    assert main(["embed", "--checkpoint", str(path), "--data", "embedded", "--out", str(tmp_path / "f.npz")]) == 0
    assert "5000 images (all 5000), 64 features each" in capsys.readouterr().out
    video, _ = _checkpoint(tmp_path / "v", frames=3)
    assert main(["export", "--checkpoint", str(video), "--format", "timm", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "video encoder" in err[0] and not (tmp_path / "t").exists()
