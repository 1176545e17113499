"""Video MAE: masking (random, tube), the loss over masked tokens only, learning, registry preset."""

import pytest
import torch

from mnist_ssl.config import ModelConfig, merge
from mnist_ssl.objectives.registry import RunConfig
from mnist_ssl.objectives.videomae import VideoMAEConfig
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.registry import METHODS, build_objective
from mnist_ssl.objectives.videomae import VideoMAE, tube_masking


def tiny(frames: int = 3, tubelet: int = 1, **kw) -> VideoMAE:
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, frames=frames, tubelet=tubelet))
    return VideoMAE(enc, VideoMAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2, **kw))


def bars(n: int, frames: int = 3) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        x[i, 0, 4 + 2 * i: 12 + 2 * i, 6:22] = 1.0
    return x.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()


# ----- masking ------------------------------------------------------------------
@pytest.mark.parametrize("time_steps,ratio", [(1, 0.75), (3, 0.75), (3, 0.5), (2, 0.9), (4, 0.1)])
def test_tube_mask_is_shared_by_all_frames_with_the_exact_count(time_steps, ratio):
    torch.manual_seed(0)
    B, S = 5, 49
    keep_idx, mask, restore_idx = tube_masking(B, time_steps, S, ratio, torch.device("cpu"))
    K = max(1, min(S - 1, round(S * (1 - ratio))))
    assert mask.shape == (B, time_steps * S)
    per_frame = mask.reshape(B, time_steps, S)
    assert (per_frame == per_frame[:, :1]).all(), "one spatial mask for every frame"
    assert (mask.sum(1) == time_steps * (S - K)).all(), "exact masked count per sample"
    assert not torch.equal(per_frame[0, 0], per_frame[1, 0]), "a different mask per sample"
    # keep_idx lists exactly the visible tokens; restore_idx undoes [visible, masked]
    assert keep_idx.shape == (B, time_steps * K)
    assert (torch.gather(mask, 1, keep_idx) == 0).all()
    shuffle = torch.argsort(restore_idx, dim=1)
    assert torch.equal(shuffle[:, : time_steps * K], keep_idx)
    assert (torch.gather(mask, 1, shuffle[:, time_steps * K:]) == 1).all()


def test_random_masking_masks_frames_independently():
    torch.manual_seed(0)
    obj = tiny(masking="random")
    _, mask, _ = obj.masking(64, torch.device("cpu"))
    assert (mask.sum(1) == 147 - 37).all()  # round(147 * 0.25) = 37 visible
    per_frame = mask.reshape(64, 3, 49)
    assert not (per_frame == per_frame[:, :1]).all()


@pytest.mark.parametrize("masking", ["random", "tube"])
def test_encoder_sees_only_visible_tokens(masking):
    torch.manual_seed(0)
    obj = tiny(masking=masking).eval()
    x = torch.rand(2, 1, 3, 28, 28)
    torch.manual_seed(1)
    latent, mask, _ = obj.forward_encoder(x)
    assert latent.shape[1] == 1 + int((mask[0] == 0).sum())
    # overwrite every masked token's pixels: same mask (same seed), same latent
    patches = obj.encoder.patchify(x)
    other = obj.encoder.unpatchify(torch.where(mask.bool().unsqueeze(-1), torch.rand_like(patches), patches))
    torch.manual_seed(1)
    latent2, mask2, _ = obj.forward_encoder(other)
    assert torch.equal(mask, mask2)
    torch.testing.assert_close(latent, latent2)


# ----- the loss ------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_loss_ignores_visible_tokens(loss):
    torch.manual_seed(0)
    obj = tiny(loss=loss)
    x = torch.rand(2, 1, 3, 28, 28)
    pred = torch.rand(2, 147, 16)
    mask = torch.zeros(2, 147)
    mask[:, 50:100] = 1
    base = obj.forward_loss(x, pred, mask)
    patches = obj.encoder.patchify(x)
    changed = patches.clone()
    changed[:, 10] += 5.0  # a visible token's target
    changed[:, 120] -= 3.0
    torch.testing.assert_close(obj.forward_loss(obj.encoder.unpatchify(changed), pred, mask), base)
    changed[:, 60] += 1.0  # a masked token's target
    assert obj.forward_loss(obj.encoder.unpatchify(changed), pred, mask) > base
    # reference: mean over masked tokens of the per-token mean error
    err = (pred - patches).abs() if loss == "l1" else (pred - patches) ** 2
    torch.testing.assert_close(base, err[:, 50:100].mean())


def test_images_and_replicated_clips_give_the_same_loss():
    torch.manual_seed(0)
    obj = tiny().eval()
    x = torch.rand(3, 1, 28, 28)
    torch.manual_seed(5)
    a = obj([x]).loss
    torch.manual_seed(5)
    b = obj([x.unsqueeze(2).expand(-1, -1, 3, -1, -1)]).loss
    torch.testing.assert_close(a, b)
    assert obj.loss_label == "Pretraining Loss" and obj.views == 1


@pytest.mark.parametrize("frames,tubelet,masking", [(3, 1, "random"), (3, 1, "tube"), (4, 2, "tube"),
                                                    (1, 1, "tube")])
def test_it_learns_a_tiny_problem(frames, tubelet, masking):
    torch.manual_seed(0)
    obj = tiny(frames, tubelet, masking=masking)
    x = bars(8, frames)
    opt = torch.optim.Adam(obj.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = obj([x])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("clip_mode", ["replicate", "motion"])
def test_figure_arrays_draw_a_clip_figure(tmp_path, clip_mode):
    from mnist_ssl.report.plots import draw_method_figure

    torch.manual_seed(0)
    obj = tiny(clip_mode=clip_mode)
    obj.train()
    arrays = obj.figure(bars(2)[:, :, 0])
    frames = obj.encoder.cfg.frames
    assert {k: v.shape for k, v in arrays.items()} == {k: (2, frames, 28, 28)
                                                       for k in ("original", "masked", "reconstruction")}
    draw_method_figure("reconstruction", arrays, str(tmp_path / "reconstruction.png"))
    assert (tmp_path / "reconstruction.png").stat().st_size > 1000
    assert obj.training, "figure() restores the training mode"
    clip, masked, recon = obj.reconstruct(bars(2))
    assert clip.shape == masked.shape == recon.shape == (2, 1, 3, 28, 28)
    assert recon.min() >= 0 and recon.max() <= 1


# ----- the registry --------------------------------------------------------------
def test_build_objective_applies_the_preset():
    spec = METHODS["videomae"]
    assert spec.figure == "reconstruction"
    d = merge(RunConfig().to_dict(), spec.preset)
    d["method"] = "videomae"
    d["model"].update(dim=32, depth=1, heads=2)
    cfg = RunConfig.from_dict(d).validate()
    # The measured recipe: tube masking of half the tokens, MSE, 150 epochs; fine-tuning is shared.
    assert cfg.model.frames == 3 and cfg.pretrain.epochs == 150
    assert cfg.finetune.epochs == RunConfig().finetune.epochs
    obj = build_objective(cfg, ViTEncoder(cfg.model))
    assert isinstance(obj, VideoMAE)
    assert obj.encoder.num_patches == 3 * 49
    assert obj.cfg.masking == "tube" and obj.cfg.loss == "mse" and obj.cfg.mask_ratio == 0.5
    out = obj([torch.rand(2, 1, 3, 28, 28)])
    assert torch.isfinite(out.loss) and set(out.terms) == {"videomae"}
