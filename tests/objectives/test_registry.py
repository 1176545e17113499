"""Every registered method, through the one interface: no special cases."""

import json

import pytest
import torch

from mnist_ssl.config import merge
from mnist_ssl.objectives.registry import RunConfig
from mnist_ssl.engine.loop import train
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.base import Objective, ObjectiveOutput
from mnist_ssl.objectives.registry import METHODS, build_objective, method_names

PRETRAINED = [m for m in method_names() if METHODS[m].build is not None]


def tiny_config(method: str) -> RunConfig:
    d = merge(RunConfig().to_dict(), METHODS[method].preset)
    d["method"] = method
    d["model"].update(dim=32, depth=1, heads=2)
    cfg = RunConfig.from_dict(d)
    return cfg.validate()


def make_views(cfg: RunConfig, n: int, views: int) -> list[torch.Tensor]:
    x = torch.rand(n, 1, 28, 28)
    if cfg.model.frames > 1:
        x = x.unsqueeze(2).expand(-1, -1, cfg.model.frames, -1, -1).contiguous()
    return [x + 0.01 * i for i in range(views)]


@pytest.mark.parametrize("method", [m for m, spec in METHODS.items() if spec.section is not None])
def test_each_method_section_is_a_run_config_section_that_validates_and_sets(method):
    """One registry entry is all a method needs: its section exists, validates under its own
    name, round-trips through config.json and takes --set."""
    from mnist_ssl.config import apply_overrides

    spec = METHODS[method]
    cfg = RunConfig(method=method).validate()
    section = getattr(cfg, spec.section)
    assert isinstance(section, spec.config)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    field = next(iter(section.__dataclass_fields__))
    value = getattr(section, field)
    changed = apply_overrides(cfg, [f"{spec.section}.{field}={json.dumps(value)}"])
    assert getattr(getattr(changed, spec.section), field) == value


@pytest.mark.parametrize("method", PRETRAINED)
def test_objective_interface(method):
    torch.manual_seed(0)
    cfg = tiny_config(method)
    enc = ViTEncoder(cfg.model)
    obj = build_objective(cfg, enc)
    assert isinstance(obj, Objective)
    assert obj.views >= 1  # DINO asks for its global + local crops
    out = obj(make_views(cfg, 6, obj.views))
    assert isinstance(out, ObjectiveOutput)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.terms and all(torch.isfinite(v) for v in out.terms.values())
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters()), \
        "the pretraining loss must reach the encoder"


@pytest.mark.parametrize("method", PRETRAINED)
def test_objective_learns_through_the_engine(method):
    torch.manual_seed(0)
    cfg = tiny_config(method)
    cfg.pretrain.epochs = 8
    cfg.pretrain.batch_size = 16
    cfg.pretrain.lr = 2e-3
    enc = ViTEncoder(cfg.model)
    obj = build_objective(cfg, enc)
    images = torch.zeros(32, 1, 28, 28, dtype=torch.uint8)
    for i in range(32):  # bars at different places: learnable structure
        images[i, 0, 4 + i % 16: 12 + i % 16, 6:22] = 255
    from mnist_ssl.experiment.data import clip_builder as _clip_builder, make_view

    state = train(obj, images, None, cfg.pretrain, phase="pretrain",
                  view=make_view(cfg.pretrain_augment, _clip_builder(cfg)))
    losses = [r["loss"] for r in state.history]
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("method", PRETRAINED)
def test_pretrained_checkpoint_round_trip(method, tmp_path):
    from mnist_ssl.engine.checkpoint import load_encoder, save_checkpoint

    torch.manual_seed(0)
    cfg = tiny_config(method)
    enc = ViTEncoder(cfg.model)
    obj = build_objective(cfg, enc)
    save_checkpoint(tmp_path / "pretrained", obj, kind="objective", model=cfg.model)
    enc2, meta = load_encoder(tmp_path / "pretrained.safetensors")
    x = torch.rand(2, 1, 28, 28)
    enc.eval()
    enc2.eval()
    torch.testing.assert_close(enc2(x), enc(x))


def test_document_preset_restores_the_documents_recipe_over_the_method_presets():
    """configs/document.json wins over every method's measured recipe: the literal 15 + 15 protocol."""
    import argparse
    from pathlib import Path

    from mnist_ssl.commands.common import build_config

    path = Path(__file__).resolve().parents[2] / "configs" / "document.json"
    args = argparse.Namespace(config=str(path), set=[])
    mae_cfg = build_config(args, "mae")
    assert (mae_cfg.mae.masking, mae_cfg.mae.mask_ratio) == ("zero", 0.75)
    assert (mae_cfg.pretrain.epochs, mae_cfg.pretrain.lr, mae_cfg.pretrain.warmup_epochs) == (15, 1e-3, 0.0)
    video = build_config(args, "videomae")
    assert (video.videomae.masking, video.videomae.mask_ratio, video.videomae.loss) == ("random", 0.75, "l1")
    assert video.model.frames == 3
    # Without the preset file the measured recipes apply.
    plain = build_config(argparse.Namespace(set=[]), "mae")
    assert (plain.mae.masking, plain.mae.mask_ratio, plain.pretrain.epochs) == ("drop", 0.5, 300)


def test_a_phase_shorter_than_the_presets_warmup_warms_up_over_the_whole_phase():
    """MAE's preset warms up 10 epochs: --set pretrain.epochs=5 (or --epochs 5) shortens the warm-up
    with it, while a warm-up the user sets longer than the phase stays an error."""
    import argparse

    import pytest

    from mnist_ssl.commands.common import build_config
    from mnist_ssl.errors import ConfigError

    cfg = build_config(argparse.Namespace(set=["pretrain.epochs=5"]), "mae")
    assert (cfg.pretrain.epochs, cfg.pretrain.warmup_epochs) == (5, 5.0)
    cfg = build_config(argparse.Namespace(set=[], epochs=2), "mae")
    assert (cfg.pretrain.warmup_epochs, cfg.finetune.warmup_epochs) == (2.0, 1.0)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_config(argparse.Namespace(set=["pretrain.epochs=5", "pretrain.warmup_epochs=10"]), "mae")
