"""The engine, every objective and the CLI on a CUDA device (skipped without one: tests/conftest.py).

The same commands as on the CPU, with ``--device cuda``: data held on the GPU
(copied once from pinned memory), bf16 autocast in the forward pass, fused
AdamW, no per-step sync. Run on a GPU machine with:

    .venv/bin/pytest -q -m cuda tests/test_cuda.py
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from mnist_ssl.cli import build_config, main
from mnist_ssl.config import ModelConfig
from mnist_ssl.objectives.registry import RunConfig
from mnist_ssl.engine.loop import train
from mnist_ssl.models.layers import Dropout
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.registry import build_objective, method_names

pytestmark = pytest.mark.cuda

TINY = ["--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2",
        "--train-per-class", "16", "--test-per-class", "8", "--epochs", "1", "--quiet", "--device", "cuda"]


def _cfg(method: str) -> RunConfig:
    ns = argparse.Namespace(config=None, set=["model.dim=32", "model.depth=1", "model.heads=2",
                                              "pretrain.epochs=2", "pretrain.batch_size=16"],
                            data=None, threads=None, device="cuda")
    return build_config(ns, method)


@pytest.mark.parametrize("method", [m for m in method_names() if m != "supervised"])
def test_every_objective_trains_on_cuda_under_bf16_autocast(method):
    from mnist_ssl.data import load_embedded
    from mnist_ssl.experiment.data import clip_builder as _clip_builder, make_view

    cfg = _cfg(method)
    device = torch.device("cuda")
    torch.manual_seed(0)
    objective = build_objective(cfg, ViTEncoder(cfg.model)).to(device)
    before = {k: v.detach().clone() for k, v in objective.state_dict().items()}
    images = load_embedded().images[:64].to(device)
    state = train(objective, images, None, cfg.pretrain, phase="pretrain",
                  view=make_view(cfg.pretrain_augment, _clip_builder(cfg)))
    assert len(state.history) == 2
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in state.history)
    assert state.optimizer.defaults.get("fused") is True
    after = objective.state_dict()
    assert all(v.is_cuda and v.dtype == before[k].dtype for k, v in after.items())  # fp32 weights kept
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bf16_autocast_keeps_losses_in_fp32():
    from mnist_ssl.losses import nt_xent

    z = torch.randn(8, 16, device="cuda", dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = nt_xent(z, z.flip(0), 0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_dropout_on_cuda_is_torchs():
    torch.manual_seed(0)
    y = Dropout(0.25).train()(torch.ones(100_000, device="cuda"))
    assert y.is_cuda and abs((y > 0).float().mean().item() - 0.75) < 0.01


def test_reproduce_on_cuda_and_predict_on_cpu(tmp_path, capsys):
    from PIL import Image

    from mnist_ssl.data import load_embedded

    out = tmp_path / "run"
    assert main(["reproduce", "--methods", "mae,supervised", "--out", str(out), "--no-baselines", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["machine"]["cuda"]
    ckpt = out / "runs" / "mae" / "seed0" / "finetuned.safetensors"
    Image.fromarray(255 - load_embedded().images[0, 0].numpy()).resize((56, 56)).save(tmp_path / "d.png")
    capsys.readouterr()
    assert main(["predict", "--json", "--checkpoint", str(ckpt), str(tmp_path / "d.png")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["class"] in (0, 1, 2)


def test_prepare_data_puts_uint8_images_on_the_gpu():
    from mnist_ssl.experiment.data import prepare_data

    cfg = _cfg("mae")
    data = prepare_data(cfg, torch.device("cuda"))
    assert data.train_images.is_cuda and data.train_images.dtype == torch.uint8
    assert data.test_targets.is_cuda


def test_compiled_step_on_cuda_saves_plain_names(tmp_path):
    from mnist_ssl.data import load_embedded
    from mnist_ssl.engine.checkpoint import load_encoder, save_checkpoint

    cfg = _cfg("mae")
    device = torch.device("cuda")
    objective = build_objective(cfg, ViTEncoder(cfg.model)).to(device)
    train(objective, load_embedded().images[:32].to(device), None, cfg.pretrain, phase="pretrain", compile=True)
    path = save_checkpoint(tmp_path / "p", objective, kind="objective", model=cfg.model)
    encoder, _ = load_encoder(path)
    assert isinstance(encoder, ViTEncoder) and encoder.cfg == ModelConfig(**{**cfg.model.__dict__, "num_classes": 0})
