"""Batched fine-tuning (engine/batched.py): K models in one step, each as if trained alone."""

from __future__ import annotations

import copy

import pytest
import torch

from mnist_ssl.config import AugmentConfig, ModelConfig, OptimConfig
from mnist_ssl.engine.batched import ALIGN, BatchedFinetune, PerModelAugmenter, StackedParams, clip_per_model, dropout_masks
from mnist_ssl.engine.loop import train
from mnist_ssl.engine.resume import ResumeWriter, load_train_state
from mnist_ssl.models import ViTClassifier, ViTEncoder
from mnist_ssl.models.layers import _keep_mask
from mnist_ssl.objectives.supervised import Supervised
from mnist_ssl.data.augment import Augmenter

SEEDS = [0, 1, 2]
N = 20  # per model: 3 steps of 8, the last one of 4


def recipe(epochs: int = 2, grad_clip: float = 0.0) -> OptimConfig:
    """The default fine-tuning recipe's parts (AdamW, warm-up + cosine, batch 8), shortened."""
    return OptimConfig(epochs=epochs, batch_size=8, lr=2e-3, warmup_epochs=1.0, grad_clip=grad_clip)


AUGMENT = AugmentConfig(elastic=1.0)


def models_and_data(seeds=SEEDS, dropout: float = 0.1):
    """Per seed: a small classifier (its own initialisation) and its own sample."""
    out = []
    for s in seeds:
        torch.manual_seed(100 + s)
        clf = ViTClassifier(ViTEncoder(ModelConfig(dim=16, depth=2, heads=2, dropout=dropout)), 3)
        torch.nn.init.normal_(clf.head.weight, std=0.1)  # a non-zero head, as LP-FT leaves it
        images = torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8)
        labels = torch.randint(0, 3, (N,))
        out.append((clf, images, labels))
    return out


def batched(runs, seeds, cfg, **kw) -> BatchedFinetune:
    return BatchedFinetune([copy.deepcopy(c) for c, _, _ in runs], [x for _, x, _ in runs],
                           [y for _, _, y in runs], seeds, cfg, AUGMENT, **kw)


def alone(run, seed, cfg):
    """Model trained by the one-model engine, seeded as pipeline.finetune_stage seeds it."""
    clf, images, labels = run
    clf = copy.deepcopy(clf)
    torch.manual_seed(seed + 1)
    augment = Augmenter(AUGMENT)
    state = train(Supervised(clf), images, labels, cfg, phase="finetune", view=augment)
    return state, clf


def test_each_models_masks_and_augmentation_are_the_numbers_it_draws_alone():
    cfg = ModelConfig(dim=16, depth=2, heads=2, dropout=0.1)
    images = torch.rand(2 * 4, 1, 28, 28)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    views = PerModelAugmenter(AUGMENT, gens)(images)
    masks = dropout_masks(cfg, 4, gens)
    for k, s in enumerate((5, 6)):
        torch.manual_seed(s)  # the one-model engine: the global RNG, augmentation then the encoder's masks
        assert torch.equal(views[4 * k:4 * k + 4], Augmenter(AUGMENT)(images[4 * k:4 * k + 4]))
        alone = [_keep_mask(torch.empty(m.shape[1:]), 0.1) for m in masks]
        assert all(torch.equal(m[k], a) for m, a in zip(masks, alone))
    assert len(masks) == 1 + 3 * cfg.depth


def test_model_k_is_the_same_alone_or_batched_with_others():
    runs = models_and_data()
    cfg = recipe()
    together = batched(runs, SEEDS, cfg).train()
    for k in range(len(SEEDS)):
        solo = batched(runs[k:k + 1], SEEDS[k:k + 1], cfg).train()[0]
        assert [r["loss"] for r in solo.history] == [r["loss"] for r in together[k].history]
        for a, b in zip(solo.module.parameters(), together[k].module.parameters()):
            assert torch.equal(a, b)


def test_batched_matches_the_one_model_engine_within_rounding():
    runs = models_and_data()
    cfg = recipe()
    states = batched(runs, SEEDS, cfg).train()
    test_x = torch.rand(64, 1, 28, 28)
    for k, s in enumerate(SEEDS):
        ref, ref_clf = alone(runs[k], s, cfg)
        got = [r["loss"] for r in states[k].history]
        want = [r["loss"] for r in ref.history]
        # Same draws, other summation order only: the losses agree to float32 rounding.
        assert got == pytest.approx(want, rel=1e-5)
        assert [r["terms"]["train_acc"] for r in states[k].history] == \
            [r["terms"]["train_acc"] for r in ref.history]
        with torch.no_grad():
            assert torch.equal(states[k].module.classifier(test_x).argmax(-1), ref_clf.eval()(test_x).argmax(-1))


def test_gradient_clipping_is_per_model():
    torch.manual_seed(0)
    params = {"w": torch.randn(3, 4, 5, requires_grad=True), "b": torch.randn(3, 4, requires_grad=True)}
    params["w"].grad = torch.randn(3, 4, 5) * torch.tensor([0.01, 1.0, 100.0]).view(3, 1, 1)
    params["b"].grad = torch.randn(3, 4)
    expected = []
    for k in range(3):
        w, b = params["w"][k].detach().clone(), params["b"][k].detach().clone()
        w.grad, b.grad = params["w"].grad[k].clone(), params["b"].grad[k].clone()
        torch.nn.utils.clip_grad_norm_([w, b], 1.0)
        expected.append((w.grad, b.grad))
    clip_per_model(params, 1.0)
    for k, (gw, gb) in enumerate(expected):
        assert torch.allclose(params["w"].grad[k], gw, rtol=1e-6, atol=0)
        assert torch.allclose(params["b"].grad[k], gb, rtol=1e-6, atol=0)
    assert params["w"].grad[0].norm() < 1.0  # the small model was left as it was
    assert torch.allclose(params["w"].grad[0], expected[0][0])


def test_clipped_model_does_not_depend_on_its_neighbours():
    runs = models_and_data()
    cfg = recipe(grad_clip=0.05)
    together = batched(runs, SEEDS, cfg).train()
    solo = batched(runs[2:], SEEDS[2:], cfg).train()[0]
    for a, b in zip(solo.module.parameters(), together[2].module.parameters()):
        assert torch.equal(a, b)


def test_interrupted_batched_run_resumes_to_the_same_weights(tmp_path):
    runs = models_and_data()
    cfg = recipe(epochs=3)
    uninterrupted = batched(runs, SEEDS, cfg).train()

    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    for d in dirs:
        d.mkdir()
    writers = [[ResumeWriter(d, {"seed": s})] for d, s in zip(dirs, SEEDS)]
    first = batched(runs, SEEDS, cfg, callbacks=writers)
    stops = iter([False] * 3 + [True])  # stop at the first batch of epoch 2 (3 steps an epoch)
    from mnist_ssl.engine.callbacks import TrainingInterrupted

    with pytest.raises(TrainingInterrupted):
        first.train(stop_requested=lambda: next(stops))
    saved = [load_train_state(d) for d in dirs]
    assert [s["meta"]["epoch"] for s in saved] == [1, 1, 1]

    again = batched(runs, SEEDS, cfg)
    again.resume(saved)
    resumed = again.train()
    for k in range(len(SEEDS)):
        assert [r["loss"] for r in resumed[k].history] == [r["loss"] for r in uninterrupted[k].history]
        for a, b in zip(resumed[k].module.parameters(), uninterrupted[k].module.parameters()):
            assert torch.equal(a, b)


def test_a_batched_state_resumes_in_the_one_model_engine(tmp_path):
    runs = models_and_data(SEEDS[:1])
    cfg = recipe(epochs=2)
    stops = iter([False] * 3 + [True])
    from mnist_ssl.engine.callbacks import TrainingInterrupted

    with pytest.raises(TrainingInterrupted):
        batched(runs, SEEDS[:1], cfg, callbacks=[[ResumeWriter(tmp_path, {})]]).train(lambda: next(stops))
    clf, images, labels = runs[0]
    clf = copy.deepcopy(clf)
    state = train(Supervised(clf), images, labels, cfg, phase="finetune", view=Augmenter(AUGMENT),
                  resume=load_train_state(tmp_path))
    ref, _ = alone(runs[0], SEEDS[0], cfg)
    assert [r["loss"] for r in state.history] == pytest.approx([r["loss"] for r in ref.history], rel=1e-5)


def test_refuses_samples_of_other_sizes_and_attention_dropout():
    runs = models_and_data(SEEDS[:2])
    with pytest.raises(ValueError, match="one size"):
        BatchedFinetune([c for c, _, _ in runs], [runs[0][1], runs[1][1][:10]], [runs[0][2], runs[1][2][:10]],
                        SEEDS[:2], recipe(), AUGMENT)
    clf = ViTClassifier(ViTEncoder(ModelConfig(dim=16, depth=1, heads=2, attn_dropout=0.1)), 3)
    with pytest.raises(ValueError, match="attn_dropout"):
        BatchedFinetune([clf], [runs[0][1]], [runs[0][2]], SEEDS[:1], recipe(), AUGMENT)


def test_stacked_parameters_are_padded_leaves_with_a_model_dimension():
    runs = models_and_data(SEEDS[:2])
    params = StackedParams([c for c, _, _ in runs])
    store = params.store["head.bias"]  # 3 numbers a model, padded to a whole vector
    assert store.shape == (2, ALIGN) and store.is_leaf and store.requires_grad
    w = params.views()["encoder.blocks.0.attn.qkv.weight"]
    assert w.shape == (2, 48, 16)
    assert torch.equal(w[1], runs[1][0].encoder.blocks[0].attn.qkv.weight)


def test_video_models_clips_come_from_each_models_generator():
    from mnist_ssl.data.clips import make_clips

    runs = []
    for s in SEEDS[:2]:
        torch.manual_seed(100 + s)
        clf = ViTClassifier(ViTEncoder(ModelConfig(dim=16, depth=1, heads=2, frames=3)), 3)
        runs.append((clf, torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 3, (N,))))
    cfg = recipe(epochs=1)
    states = batched(runs, SEEDS[:2], cfg, clip=lambda x, g: make_clips(x, 3, "motion", generator=g)).train()
    for k, s in enumerate(SEEDS[:2]):
        clf, images, labels = runs[k]
        clf = copy.deepcopy(clf)
        torch.manual_seed(s + 1)
        augment = Augmenter(AUGMENT)
        ref = train(Supervised(clf), images, labels, cfg, phase="finetune",
                    view=lambda x: make_clips(augment(x), 3, "motion"))
        assert [r["loss"] for r in states[k].history] == pytest.approx([r["loss"] for r in ref.history], rel=1e-5)
