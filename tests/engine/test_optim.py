"""Optimiser parameter groups: weight decay only on matrices, and layer-wise learning-rate decay."""

from __future__ import annotations

import pytest
import torch

from mnist_ssl.config import ModelConfig, OptimConfig
from mnist_ssl.errors import ConfigError
from mnist_ssl.engine.optim import layer_index, make_optimizer, make_schedule, param_groups
from mnist_ssl.models import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.supervised import Supervised


def classifier(depth: int = 2) -> Supervised:
    torch.manual_seed(0)
    return Supervised(ViTClassifier(ViTEncoder(ModelConfig(dim=16, depth=depth, heads=2)), 3))


def lr_of(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> float:
    (lr,) = [g["lr"] for g in optimizer.param_groups if any(p is param for p in g["params"])]
    return lr


def test_layer_index_of_encoder_names():
    assert layer_index("classifier.encoder.patch_embed.proj.weight", 4) == 0
    assert layer_index("classifier.encoder.cls_token", 4) == 0
    assert layer_index("classifier.encoder.pos_embed.table", 4) == 0
    assert layer_index("classifier.encoder.blocks.0.attn.qkv.weight", 4) == 1
    assert layer_index("module.classifier.encoder.blocks.3.mlp.fc1.bias", 4) == 4  # under DDP
    assert layer_index("classifier.encoder.norm.weight", 4) == 5
    assert layer_index("classifier.head.weight", 4) == 5
    assert layer_index("decoder.blocks.0.attn.qkv.weight", 4) == 5  # not the encoder's blocks


def test_without_layer_decay_two_groups_decay_only_matrices():
    module = classifier()
    groups = param_groups(module, 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert all(p.ndim >= 2 and p.shape[0] > 1 for p in groups[0]["params"])
    assert all(p.ndim <= 1 or p.shape[0] == 1 for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))
    opt = make_optimizer(module, OptimConfig(lr=3e-3), torch.device("cpu"))
    assert {g["lr"] for g in opt.param_groups} == {3e-3}


def test_layer_decay_scales_each_layer_and_keeps_the_ratio_through_the_schedule():
    module = classifier(depth=2)
    enc = module.classifier.encoder
    cfg = OptimConfig(lr=1e-2, layer_decay=0.5, epochs=2, warmup_epochs=1)
    opt = make_optimizer(module, cfg, torch.device("cpu"))
    sched = make_schedule(opt, cfg, steps_per_epoch=4)
    for _ in range(5):
        opt.step()
        sched.step()
        head = lr_of(opt, module.classifier.head.weight)
        assert head > 0
        assert lr_of(opt, enc.norm.weight) == pytest.approx(head)
        assert lr_of(opt, enc.blocks[1].attn.qkv.weight) == pytest.approx(head * 0.5)
        assert lr_of(opt, enc.blocks[0].attn.qkv.weight) == pytest.approx(head * 0.25)
        assert lr_of(opt, enc.cls_token) == pytest.approx(head * 0.125)
        assert lr_of(opt, enc.patch_embed.proj.weight) == pytest.approx(head * 0.125)
    assert opt.param_groups[0]["lr"] == pytest.approx(head)  # what the per-epoch log reports
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(module.parameters()))


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5])
def test_bad_layer_decay_is_refused(value):
    with pytest.raises(ConfigError, match=f"finetune.layer_decay={value} must be in"):
        OptimConfig(layer_decay=value).validate("finetune")
