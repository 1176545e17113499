"""The fine-tuning recipe every command uses: LP-FT head initialisation, warm-up then cosine, label smoothing."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from mnist_ssl.config import ModelConfig, OptimConfig
from mnist_ssl.engine.optim import make_schedule
from mnist_ssl.experiment.stages import finetune, fit_head_on_frozen_features
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.registry import RunConfig
from mnist_ssl.objectives.supervised import Supervised

TINY = ModelConfig(dim=32, depth=1, heads=2, dropout=0.0)  # no dropout: forward passes compare exactly


def _two_shapes(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, 1, 28, 28) of two classes that any encoder tells apart: bright left or right half."""
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    y = torch.arange(n) % 2
    x[y == 0, :, :, :14] = 255
    x[y == 1, :, :, 14:] = 255
    return x, y


def _head_objective(clf: ViTClassifier, x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3) -> torch.Tensor:
    with torch.no_grad():
        feats = clf.encoder(x.float() / 255.0)
    return F.cross_entropy(clf.head(feats), y) + l2 * clf.head.weight.pow(2).sum()


def test_lp_ft_head_is_the_regularised_logistic_regression_on_frozen_features():
    torch.manual_seed(0)
    x, y = _two_shapes()
    clf = ViTClassifier(ViTEncoder(TINY), 2)
    encoder_before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    start = _head_objective(clf, x, y).item()
    fit_head_on_frozen_features(clf, x, y)
    head = clf.head
    loss = _head_objective(clf, x, y)
    assert loss.item() < 0.5 * start
    head.zero_grad()
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in head.parameters()])
    assert grad.abs().max() < 1e-3, "the head is at the optimum of its objective (L-BFGS converged)"
    with torch.no_grad():
        assert (clf(x.float() / 255.0).argmax(1) == y).all()
    for k, v in clf.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), f"the encoder stays frozen: {k} changed"
    assert clf.training, "back in training mode for fine-tuning"


@pytest.mark.parametrize("head_init", ["zero", "probe"])
def test_finetuning_starts_from_the_head_that_head_init_names(head_init):
    x, y = _two_shapes(16)
    cfg = RunConfig(method="supervised", model=TINY)
    cfg.finetune_augment.enabled = False
    # One step at a negligible learning rate: the head after fine-tuning is the head it started from.
    ft = dataclasses.replace(cfg.finetune, epochs=1, batch_size=16, lr=1e-12, warmup_epochs=0.0, head_init=head_init)
    torch.manual_seed(0)
    clf = ViTClassifier(ViTEncoder(TINY), 2)
    finetune(cfg, ft, clf, x, y, seed=0)
    if head_init == "zero":
        assert clf.head.weight.abs().max() < 1e-6
    else:
        reference = ViTClassifier(ViTEncoder(TINY), 2)
        reference.load_state_dict(clf.state_dict())
        torch.nn.init.zeros_(reference.head.weight), torch.nn.init.zeros_(reference.head.bias)
        fit_head_on_frozen_features(reference, x, y)
        torch.testing.assert_close(clf.head.weight, reference.head.weight, atol=1e-6, rtol=1e-4)
        assert clf.head.weight.abs().max() > 0.01


def _lrs(cfg: OptimConfig, steps_per_epoch: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_schedule(opt, cfg, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_is_linear_then_cosine_decays_to_zero():
    lrs = _lrs(OptimConfig(epochs=3, lr=0.1, warmup_epochs=1.0), steps_per_epoch=4)
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])  # (step + 1) / warmup
    # then 0.5 * (1 + cos(pi * k / 8)) for k = 0..7 over the 8 steps after the warm-up
    assert lrs[4:] == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)])
    assert lrs[-1] < 0.01 and lrs[4] == pytest.approx(0.1)


def test_constant_schedule_after_warmup_and_no_warmup():
    assert _lrs(OptimConfig(epochs=2, lr=0.1, warmup_epochs=0.5, schedule="constant"), 4) == \
        pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    lrs = _lrs(OptimConfig(epochs=1, lr=0.2, warmup_epochs=0.0), 4)
    assert lrs == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_mixes_the_uniform_target_into_the_loss(eps):
    torch.manual_seed(0)
    clf = ViTClassifier(ViTEncoder(TINY), 3)
    torch.nn.init.normal_(clf.head.weight)
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])
    out = Supervised(clf, label_smoothing=eps)([x], y)
    logp = torch.log_softmax(clf(x), dim=-1)
    # (1 - eps) * cross-entropy to the label + eps * cross-entropy to the uniform distribution
    expected = ((1 - eps) * -logp[torch.arange(6), y] + eps * -logp.mean(dim=-1)).mean()
    torch.testing.assert_close(out.loss, expected)
    assert out.terms["ce"] == out.loss.detach()


def test_label_smoothing_reaches_the_engine_from_the_config():
    """finetune.label_smoothing (as --set gives it) reaches the loss the engine minimises."""
    x, y = _two_shapes(8)
    cfg = RunConfig(method="supervised", model=TINY)
    cfg.finetune_augment.enabled = False
    losses = {}
    for eps in (0.0, 0.2):
        ft = dataclasses.replace(cfg.finetune, epochs=1, batch_size=8, head_init="probe", label_smoothing=eps)
        torch.manual_seed(0)
        state = finetune(cfg, ft, ViTClassifier(ViTEncoder(TINY), 2), x, y, seed=0)
        losses[eps] = state.history[-1]["loss"]
    # The LP-FT head is confident on these two shapes: smoothing raises the loss of the same step.
    assert losses[0.2] > losses[0.0] + 0.01
