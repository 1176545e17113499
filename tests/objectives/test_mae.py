import pytest
import torch

from mnist_ssl.config import ModelConfig
from mnist_ssl.objectives.mae import MAEConfig
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.mae import MAE, masked_reconstruction_loss, patch_targets, random_masking


def small_encoder(**kw):
    return ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, **kw))


@pytest.mark.parametrize("n,ratio,masked", [(49, 0.75, 37), (49, 0.5, 25), (16, 0.25, 4), (10, 0.99, 9)])
def test_random_masking_exact_count_and_restore(n, ratio, masked):
    torch.manual_seed(0)
    keep, mask, restore = random_masking(5, n, ratio, torch.device("cpu"))
    assert (mask.sum(1) == masked).all()
    assert keep.shape == (5, n - masked)
    # kept indices are exactly the visible ones
    for b in range(5):
        assert set(keep[b].tolist()) == set(torch.nonzero(mask[b] == 0).flatten().tolist())
    # restore_idx puts [visible, masked] back into patch order
    order = torch.argsort(restore, dim=1)
    assert torch.equal(order[:, : n - masked], keep)


def test_zero_masking_zeroes_exactly_the_masked_pixels():
    torch.manual_seed(0)
    enc = small_encoder()
    mae = MAE(enc, MAEConfig(masking="zero", mask_ratio=0.5))
    x = torch.rand(2, 1, 28, 28) + 0.1  # no zero pixel anywhere before masking
    torch.manual_seed(0)
    masked, _ = mae.reconstruct(x)
    torch.manual_seed(0)
    _, mask, _ = random_masking(2, enc.num_patches, 0.5, x.device)
    patches = enc.patchify(masked)
    assert (patches[mask.bool()] == 0).all()
    assert torch.equal(patches[~mask.bool()], enc.patchify(x)[~mask.bool()])


def test_drop_mode_encoder_sees_only_visible_tokens():
    torch.manual_seed(0)
    enc = small_encoder()
    mae = MAE(enc, MAEConfig(masking="drop", mask_ratio=0.75))
    latent, mask, restore = mae.forward_encoder(torch.rand(3, 1, 28, 28))
    assert latent.shape == (3, 1 + 12, 32)
    assert mae.forward_decoder(latent, restore).shape == (3, 49, 16)


def test_loss_ignores_visible_patches():
    torch.manual_seed(0)
    pred = torch.rand(2, 6, 4)
    target = torch.rand(2, 6, 4)
    mask = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float)
    base = masked_reconstruction_loss(pred, target, mask)
    changed = target.clone()
    changed[mask == 0] = 99.0
    torch.testing.assert_close(masked_reconstruction_loss(pred, changed, mask), base)
    # hand value: mean over the 5 masked patches of the per-patch mean squared error
    per_patch = ((pred - target) ** 2).mean(-1)
    expected = per_patch[mask.bool()].mean()
    torch.testing.assert_close(base, expected)
    l1 = masked_reconstruction_loss(pred, target, mask, "l1")
    torch.testing.assert_close(l1, (pred - target).abs().mean(-1)[mask.bool()].mean())


def test_norm_pix_targets_are_finite_on_black_patches():
    patches = torch.zeros(1, 3, 16)
    patches[0, 1] = torch.linspace(0, 1, 16)
    t = patch_targets(patches, norm_pix=True)
    assert torch.isfinite(t).all()
    assert torch.equal(t[0, 0], torch.zeros(16))
    torch.testing.assert_close(t[0, 1].mean(), torch.tensor(0.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("masking", ["zero", "drop"])
def test_mae_learns_on_a_tiny_problem(masking):
    torch.manual_seed(0)
    enc = small_encoder()
    mae = MAE(enc, MAEConfig(masking=masking, decoder_dim=32, decoder_depth=1))
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # a bar: predictable from its visible parts
    opt = torch.optim.Adam(mae.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = mae([x])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_masked_patch_error_compares_the_reconstruction_with_the_mean_patch():
    """A decoder that outputs the mean patch scores exactly the baseline; the check leaves the
    global random state and the training mode alone."""
    import torch

    from mnist_ssl.experiment.stages import reconstruction_check
    from mnist_ssl.models.vit import ViTEncoder
    from mnist_ssl.objectives.registry import RunConfig, build_objective

    cfg = RunConfig(method="mae")
    cfg.model.dim, cfg.model.depth, cfg.model.heads = 32, 1, 2
    cfg.mae.masking = "zero"
    obj = build_objective(cfg, ViTEncoder(cfg.model))
    train = (torch.rand(20, 1, 28, 28) * 255).to(torch.uint8)
    test = (torch.rand(6, 1, 28, 28) * 255).to(torch.uint8)
    mean_patch = obj.encoder.patchify(train.float() / 255).mean(0)
    with torch.no_grad():  # the linear decoder predicts the mean patch whatever it is given
        obj.decoder.weight.zero_()
        obj.decoder.bias.copy_(mean_patch[0])
        mean_patch[:] = mean_patch[0]
    state = torch.get_rng_state()
    obj.train()
    out = obj.masked_patch_error(test.float() / 255, mean_patch)
    assert torch.equal(torch.get_rng_state(), state) and obj.training
    assert abs(out["masked_mse"] - out["mean_patch_mse"]) < 1e-6
    again = reconstruction_check(obj, train, test)
    assert set(again) == {"masked_mse", "mean_patch_mse"} and again["masked_mse"] > 0
