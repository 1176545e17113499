"""Batched MAE pretraining (engine/batched.py BatchedMAEPretrain): K objectives in one step, each as if trained alone."""

from __future__ import annotations

import copy

import pytest
import torch

from mnist_ssl.config import AugmentConfig, ModelConfig, OptimConfig
from mnist_ssl.engine.batched import BatchedMAEPretrain, MAEPretrainTask
from mnist_ssl.engine.callbacks import TrainingInterrupted
from mnist_ssl.engine.loop import train
from mnist_ssl.engine.resume import ResumeWriter, load_train_state
from mnist_ssl.models import ViTEncoder
from mnist_ssl.models.layers import _keep_mask
from mnist_ssl.objectives.mae import MAE, MAEConfig

SEEDS = [0, 1, 2]
N = 20  # per model: 3 steps of 8, the last one of 4
OFF = AugmentConfig(enabled=False)


def recipe(epochs: int = 2, grad_clip: float = 0.0) -> OptimConfig:
    """MAE's pretraining recipe's parts (AdamW, warm-up + cosine), shortened, at batch 8."""
    return OptimConfig(epochs=epochs, batch_size=8, lr=2e-3, warmup_epochs=1.0, grad_clip=grad_clip)


def objectives_and_data(seeds=SEEDS, masking: str = "drop", dropout: float = 0.1, **mae):
    """Per seed: a small MAE (its own initialisation) and its own unlabelled sample."""
    out = []
    for s in seeds:
        torch.manual_seed(100 + s)
        objective = MAE(ViTEncoder(ModelConfig(dim=16, depth=2, heads=2, dropout=dropout)),
                        MAEConfig(masking=masking, mask_ratio=0.5, decoder_dim=16, decoder_depth=1, decoder_heads=2,
                                  **mae))
        out.append((objective, torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8)))
    return out


def batched(runs, seeds, cfg, augment=OFF, **kw) -> BatchedMAEPretrain:
    return BatchedMAEPretrain([copy.deepcopy(o) for o, _ in runs], [x for _, x in runs], seeds, cfg, augment, **kw)


def alone(run, seed, cfg, view=None):
    """The objective trained by the one-model engine, seeded as stages.pretrain seeds it."""
    objective, images = run
    objective = copy.deepcopy(objective)
    torch.manual_seed(seed)
    return train(objective, images, None, cfg, phase="pretrain", view=view), objective


def test_each_models_masking_noise_and_dropout_masks_are_the_numbers_it_draws_alone():
    objective, _ = objectives_and_data(SEEDS[:1])[0]
    task = MAEPretrainTask(objective)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    draws = task.draws(4, gens)
    assert draws["noise"].shape == (2, 4, objective.encoder.num_patches)
    # visible tokens only: CLS and round(49 * 0.5) = 24 patches (the encoder never sees the rest)
    assert draws["masks"][0].shape == (2, 4, 1 + objective.num_keep, 16) and objective.num_keep == 24
    for k, s in enumerate((5, 6)):
        torch.manual_seed(s)  # MAE.forward alone: the masking noise, then the encoder's dropout masks
        assert torch.equal(draws["noise"][k], torch.rand(4, objective.encoder.num_patches))
        alone_masks = [_keep_mask(torch.empty(m.shape[1:]), 0.1) for m in draws["masks"]]
        assert all(torch.equal(m[k], a) for m, a in zip(draws["masks"], alone_masks))


@pytest.mark.parametrize("masking", ["drop", "zero"])
def test_model_k_is_the_same_alone_or_batched_with_others(masking):
    runs = objectives_and_data(masking=masking)
    cfg = recipe()
    together = batched(runs, SEEDS, cfg).train()
    for k in range(len(SEEDS)):
        solo = batched(runs[k:k + 1], SEEDS[k:k + 1], cfg).train()[0]
        assert [r["loss"] for r in solo.history] == [r["loss"] for r in together[k].history]
        for a, b in zip(solo.module.parameters(), together[k].module.parameters()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("masking,extra", [("drop", {}), ("zero", {}), ("drop", {"norm_pix_loss": True, "loss": "l1"})])
def test_batched_matches_the_one_model_engine_within_rounding(masking, extra):
    runs = objectives_and_data(masking=masking, **extra)
    cfg = recipe()
    states = batched(runs, SEEDS, cfg).train()
    images = torch.rand(6, 1, 28, 28)
    for k, s in enumerate(SEEDS):
        ref, ref_objective = alone(runs[k], s, cfg)
        want = [r["loss"] for r in ref.history]
        # Same draws, other summation order only: the losses agree to float32 rounding.
        assert [r["loss"] for r in states[k].history] == pytest.approx(want, rel=1e-5)
        assert [r["terms"]["mae"] for r in states[k].history] == pytest.approx(want, rel=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(states[k].module.encoder.eval()(images), ref_objective.encoder.eval()(images),
                                       rtol=1e-4, atol=1e-5)


def test_augmented_views_come_from_each_models_generator():
    from mnist_ssl.data.augment import Augmenter

    aug = AugmentConfig(rotate=10.0, translate=0.1)
    runs = objectives_and_data(SEEDS[:2])
    cfg = recipe(epochs=1)
    states = batched(runs, SEEDS[:2], cfg, augment=aug).train()
    for k, s in enumerate(SEEDS[:2]):
        ref, _ = alone(runs[k], s, cfg, view=Augmenter(aug))
        assert [r["loss"] for r in states[k].history] == pytest.approx([r["loss"] for r in ref.history], rel=1e-5)


def test_clipped_model_does_not_depend_on_its_neighbours():
    runs = objectives_and_data()
    cfg = recipe(grad_clip=0.05)
    together = batched(runs, SEEDS, cfg).train()
    solo = batched(runs[1:2], SEEDS[1:2], cfg).train()[0]
    for a, b in zip(solo.module.parameters(), together[1].module.parameters()):
        assert torch.equal(a, b)


def test_interrupted_batched_pretraining_resumes_and_its_state_continues_in_the_one_model_engine(tmp_path):
    runs = objectives_and_data(SEEDS[:2])
    cfg = recipe(epochs=3)
    uninterrupted = batched(runs, SEEDS[:2], cfg).train()
    dirs = [tmp_path / f"seed{s}" for s in SEEDS[:2]]
    for d in dirs:
        d.mkdir()
    stops = iter([False] * 3 + [True])  # stop at the first batch of epoch 2
    with pytest.raises(TrainingInterrupted):
        batched(runs, SEEDS[:2], cfg, callbacks=[[ResumeWriter(d, {})] for d in dirs]).train(lambda: next(stops))
    saved = [load_train_state(d) for d in dirs]
    assert [s["meta"]["epoch"] for s in saved] == [1, 1]
    again = batched(runs, SEEDS[:2], cfg)
    again.resume(saved)
    for k, state in enumerate(again.train()):
        assert [r["loss"] for r in state.history] == [r["loss"] for r in uninterrupted[k].history]
        for a, b in zip(state.module.parameters(), uninterrupted[k].module.parameters()):
            assert torch.equal(a, b)
    # The same saved state, continued one model at a time by the engine.
    objective = copy.deepcopy(runs[0][0])
    state = train(objective, runs[0][1], None, cfg, phase="pretrain", resume=load_train_state(dirs[0]))
    ref, _ = alone(runs[0], SEEDS[0], cfg)
    assert [r["loss"] for r in state.history] == pytest.approx([r["loss"] for r in ref.history], rel=1e-5)


def test_refuses_other_objectives_and_attention_dropout():
    from mnist_ssl.objectives.videomae import VideoMAE, VideoMAEConfig

    video = VideoMAE(ViTEncoder(ModelConfig(dim=16, depth=1, heads=2, frames=3)), VideoMAEConfig())
    with pytest.raises(ValueError, match="MAE only"):
        BatchedMAEPretrain([video], [torch.zeros(4, 1, 28, 28, dtype=torch.uint8)], [0], recipe(), OFF)
    mae = MAE(ViTEncoder(ModelConfig(dim=16, depth=1, heads=2, attn_dropout=0.1)), MAEConfig(masking="drop"))
    with pytest.raises(ValueError, match="attn_dropout"):
        BatchedMAEPretrain([mae], [torch.zeros(4, 1, 28, 28, dtype=torch.uint8)], [0], recipe(), OFF)
