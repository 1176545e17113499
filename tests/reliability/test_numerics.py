"""NaN or infinite losses stop training with a message naming epoch, step and loss term."""

from __future__ import annotations

import json

import pytest
import torch

from mnist_ssl.cli import main
from mnist_ssl.config import ModelConfig, OptimConfig
from mnist_ssl.engine.loop import FiniteGuard, TrainState, train
from mnist_ssl.engine.resume import load_train_state, save_train_state
from mnist_ssl.errors import TrainingDiverged
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.base import ObjectiveOutput
from mnist_ssl.objectives.supervised import Supervised

from .helpers import TINY, assert_same_job, job, one_line_error, run_cli


def test_exploding_learning_rate_stops_with_epoch_step_and_term(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["reproduce", "--out", out, "--methods", "mae", "--no-baselines", "--no-report",
                            "--epochs", "1", "--set", "pretrain.batch_size=8", "--set", "pretrain.lr=1e30",
                            *TINY], capsys)
    line = one_line_error(code, err, "pretrain: loss became", "at epoch 1, step", "(loss term mae)",
                          "--set pretrain.grad_clip")
    assert "nan" in line or "inf" in line
    assert not list(out.rglob("*.safetensors")), "no weights may be written"


def test_nan_in_a_later_epoch_keeps_the_last_good_state(reference, tmp_path, monkeypatch, capsys):
    """The 6th fine-tuning step of MAE (epoch 2, step 2) returns NaN; epoch 1's state stays, and
    ``--resume`` (once the fault is gone) ends exactly where an uninterrupted run ends."""
    out = tmp_path / "out"
    forward = Supervised.forward
    calls = {"n": 0}

    def faulty(self, views, labels=None):
        result = forward(self, views, labels)
        calls["n"] += 1
        if calls["n"] == 6:
            nan = torch.tensor(float("nan"))
            return ObjectiveOutput(result.loss * nan, {"ce": result.terms["ce"] * nan,
                                                       "train_acc": result.terms["train_acc"]})
        return result

    monkeypatch.setattr(Supervised, "forward", faulty)
    code, _, err = run_cli(["reproduce", "--out", out, *job("mae")], capsys)
    one_line_error(code, err, "finetune: loss became nan at epoch 2, step 2 (loss term ce)")
    run = out / "runs" / "mae" / "seed0"
    saved = load_train_state(run)
    assert (saved["meta"]["phase"], saved["meta"]["epoch"]) == ("finetune", 1)
    assert all(torch.isfinite(t).all() for k, t in saved["tensors"].items() if t.is_floating_point())
    assert not (run / "finetuned.safetensors").exists()
    assert (run / "pretrained.safetensors").exists()  # the finished phase's checkpoint is kept

    monkeypatch.setattr(Supervised, "forward", forward)
    assert main(["reproduce", "--out", str(out), *job("mae"), "--resume"]) == 0
    assert_same_job(reference, out, ("mae",))


def test_loss_checked_every_step_on_cpu_before_backward():
    guard = FiniteGuard("pretrain", torch.device("cpu"))
    guard.add(1, 1, torch.tensor(0.5), {"mae": torch.tensor(0.5)})
    with pytest.raises(TrainingDiverged, match=r"pretrain: loss became inf at epoch 1, step 2 \(loss term mae\)"):
        guard.add(1, 2, torch.tensor(float("inf")), {"mae": torch.tensor(float("inf")), "nce": torch.tensor(1.0)})


def test_loss_checked_every_k_steps_on_an_accelerator():
    """No sync per step: losses wait on the device; the first bad one is named when they are read."""
    guard = FiniteGuard("finetune", torch.device("cuda"), every=4)  # the tensors may stay on the CPU here
    guard.add(3, 1, torch.tensor(1.0), {"ce": torch.tensor(1.0)})
    guard.add(3, 2, torch.tensor(float("nan")), {"ce": torch.tensor(float("nan"))})
    guard.add(3, 3, torch.tensor(float("nan")), {"ce": torch.tensor(float("nan"))})
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 2 \(loss term ce\)"):
        guard.add(3, 4, torch.tensor(1.0), {"ce": torch.tensor(1.0)})
    guard.add(4, 1, torch.tensor(float("nan")), {"ce": torch.tensor(float("nan"))})
    with pytest.raises(TrainingDiverged, match="epoch 4, step 1"):
        guard.check()  # the epoch-end check, before any file of the epoch is written


def test_nan_weights_are_never_written_to_the_resume_state(tmp_path):
    from mnist_ssl.engine.optim import make_optimizer, make_schedule

    module = torch.nn.Linear(3, 2)
    cfg = OptimConfig(epochs=2, batch_size=4)
    opt = make_optimizer(module, cfg, torch.device("cpu"))
    state = TrainState("pretrain", module, opt, make_schedule(opt, cfg, 1), 2, 1, epoch=1, step=1)
    with torch.no_grad():
        module.bias[0] = float("nan")
    with pytest.raises(TrainingDiverged, match="weight bias became NaN or inf by the end of epoch 1"):
        save_train_state(tmp_path, state, run_config={}, log_lines=[])
    assert not list(tmp_path.iterdir())


def _tiny_classifier_run(grad_clip: float) -> list[float]:
    """Gradient norms seen after each step of a short fine-tuning run."""
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, depth=1, heads=2)
    objective = Supervised(ViTClassifier(ViTEncoder(cfg), 3))
    images = torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(24) % 3
    norms: list[float] = []

    class GradNorm:
        def on_step(self, state):
            grads = [p.grad for p in state.module.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        def on_epoch_end(self, state, record):
            pass

    train(objective, images, labels, OptimConfig(epochs=1, batch_size=8, lr=1e-3, grad_clip=grad_clip),
          phase="finetune", callbacks=[GradNorm()])
    return norms


def test_gradient_clipping_bounds_the_gradient_norm():
    unclipped = _tiny_classifier_run(0.0)
    clipped = _tiny_classifier_run(0.01)
    assert max(unclipped) > 0.01
    assert max(clipped) <= 0.01 * (1 + 1e-4)


def test_grad_clip_is_set_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    assert main(["reproduce", "--out", str(out), "--methods", "supervised", "--no-baselines", "--no-report",
                 "--epochs", "1", "--set", "finetune.grad_clip=0.5", *TINY]) == 0
    cfg = json.loads((out / "runs" / "supervised" / "seed0" / "config.json").read_text())
    assert cfg["finetune"]["grad_clip"] == 0.5
