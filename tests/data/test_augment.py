"""Augmentations: never a flip, shape and range kept, reproducible under a seed, batched."""

import pytest
import torch

from mnist_ssl.config import AugmentConfig
from mnist_ssl.data.augment import Augmenter, smooth
from mnist_ssl.errors import ConfigError

IDENTITY = dict(rotate=0.0, translate=0.0, scale_min=1.0, scale_max=1.0, shear=0.0)
STRONG = dict(rotate=20.0, translate=0.1, scale_min=0.8, scale_max=1.2, shear=10.0,
              elastic=1.0, erase=0.5, noise=0.1)


def l_shapes(n: int = 16) -> torch.Tensor:
    """An asymmetric pattern: an L (vertical bar on the left, foot to the right), (n, 1, 28, 28)."""
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 5:23, 7:11] = 1.0  # vertical stroke, left of centre
    x[:, :, 19:23, 7:21] = 1.0  # foot, bottom, to the right
    return x


def corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation of (B, 1, H, W) batches -> (B,)."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)


def test_no_geometry_is_the_identity():
    x = l_shapes(4)
    assert torch.allclose(Augmenter(AugmentConfig(**IDENTITY))(x), x, atol=1e-5)


def test_disabled_returns_the_input():
    x = torch.rand(3, 1, 28, 28)
    assert Augmenter(AugmentConfig(enabled=False))(x) is x


def shift_tolerant_corr(y: torch.Tensor, target: torch.Tensor, r: int = 4) -> torch.Tensor:
    """Best correlation of ``y`` with ``target`` shifted by up to ``r`` pixels: translation is allowed."""
    shifts = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    return torch.stack([corr(y, target.roll(s, dims=(-2, -1))) for s in shifts]).max(0).values


@pytest.mark.parametrize("cfg", [dict(), dict(STRONG, erase=0.0), dict(IDENTITY, elastic=1.5)],
                         ids=["defaults", "strong-geometry", "elastic"])
def test_never_flips(cfg):
    x = l_shapes(256)
    y = Augmenter(AugmentConfig(**cfg), generator=torch.Generator().manual_seed(0))(x)
    like_original = shift_tolerant_corr(y, x)
    for mirror in (x.flip(-1), x.flip(-2), x.transpose(-1, -2), x.flip(-1).flip(-2)):
        closer = (like_original > shift_tolerant_corr(y, mirror)).float().mean().item()
        # A flip would put (nearly) every view closer to the mirror. Strong distortions may
        # leave the odd view ambiguous (1 in 256 here), the milder ones none.
        assert closer >= (0.99 if "rotate" in cfg and cfg["rotate"] > 10 else 1.0)


def test_never_flips_mass_stays_on_its_side():
    # Defaults (10 degrees, 10 % shift): the stroke stays left, the foot stays at the bottom.
    y = Augmenter(AugmentConfig(), generator=torch.Generator().manual_seed(0))(l_shapes(256))
    stroke = y[..., 4:17, :]  # the rows above the foot
    assert (stroke[..., :14].sum((1, 2, 3)) > 3 * stroke[..., 14:].sum((1, 2, 3))).all()
    assert (y[..., 14:, :].sum((1, 2, 3)) > 1.1 * y[..., :14, :].sum((1, 2, 3))).all()


def test_affine_maps_preserve_orientation():
    # A flip has a negative determinant; rotation x shear x positive scale never does.
    aug = Augmenter(AugmentConfig(rotate=180.0, shear=80.0, scale_min=0.1, scale_max=3.0, translate=0.5),
                    generator=torch.Generator().manual_seed(0))
    theta = aug.affine_matrices(4096, torch.device("cpu"))
    assert (torch.linalg.det(theta[:, :, :2]) > 0).all()


@pytest.mark.parametrize("cfg", [dict(IDENTITY, erase=1.0), dict(IDENTITY, noise=0.1)], ids=["erase", "noise"])
def test_pixel_stages_do_not_move_the_pattern(cfg):
    x = l_shapes(64)
    y = Augmenter(AugmentConfig(**cfg), generator=torch.Generator().manual_seed(0))(x)
    assert (corr(y, x) > corr(y, x.flip(-1))).all() and (corr(y, x) > corr(y, x.flip(-2))).all()


@pytest.mark.parametrize("cfg", [dict(), STRONG], ids=["defaults", "strong"])
def test_keeps_shape_dtype_and_range(cfg):
    x = torch.rand(5, 1, 28, 28)
    y = Augmenter(AugmentConfig(**cfg), generator=torch.Generator().manual_seed(1))(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_reproducible_under_a_seeded_generator():
    x = torch.rand(8, 1, 28, 28)
    a = Augmenter(AugmentConfig(**STRONG), generator=torch.Generator().manual_seed(7))(x)
    b = Augmenter(AugmentConfig(**STRONG), generator=torch.Generator().manual_seed(7))(x)
    c = Augmenter(AugmentConfig(**STRONG), generator=torch.Generator().manual_seed(8))(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reproducible_under_the_global_seed():
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(3)
    a = Augmenter(AugmentConfig(**STRONG))(x)
    torch.manual_seed(3)
    assert torch.equal(a, Augmenter(AugmentConfig(**STRONG))(x))


def test_each_image_gets_its_own_transform():
    x = l_shapes(8)
    y = Augmenter(AugmentConfig(**STRONG), generator=torch.Generator().manual_seed(0))(x)
    assert not torch.allclose(y[0], y[1])


def test_optional_stages_leave_the_affine_draws_unchanged():
    # Turning off elastic/erase/noise must give back the plain affine stream exactly:
    # the fine-tuning views of earlier runs do not change when these stages exist.
    x = torch.rand(4, 1, 28, 28)
    base = dict(rotate=10.0, translate=0.1)
    a = Augmenter(AugmentConfig(**base), generator=torch.Generator().manual_seed(0))
    m = a.affine_matrices(4, x.device)
    b = Augmenter(AugmentConfig(**base, noise=0.0, erase=0.0, elastic=0.0),
                  generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, b.affine_matrices(4, x.device))


def test_erase_removes_one_rectangle_per_image():
    x = torch.ones(32, 1, 28, 28)
    y = Augmenter(AugmentConfig(**IDENTITY, erase=1.0), generator=torch.Generator().manual_seed(0))(x)
    erased = (y == 0).squeeze(1)
    frac = erased.float().mean((1, 2))
    assert (frac > 0.01).all() and (frac < 0.2).all()
    for img in erased:  # a rectangle: its bounding box is full
        rows, cols = img.any(1).nonzero(), img.any(0).nonzero()
        box = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()
    kept = Augmenter(AugmentConfig(**IDENTITY, erase=0.0))(x)
    assert torch.allclose(kept, x, atol=1e-5)


def test_elastic_moves_pixels_by_about_its_strength():
    x = l_shapes(16)
    g = torch.Generator().manual_seed(0)
    aug = Augmenter(AugmentConfig(**IDENTITY, elastic=1.0), generator=g)
    field = aug.elastic_field(16, 28, 28, torch.device("cpu"))
    assert field.shape == (16, 28, 28, 2)
    rms_pixels = (field * 14).pow(2).sum(-1).mean((1, 2)).sqrt()  # normalised -> pixels
    assert torch.allclose(rms_pixels, torch.full((16,), 2 ** 0.5), rtol=1e-4)  # 1 px per axis
    y = aug(x)
    assert 0.5 < corr(y, x).min() < 1.0


def test_noise_has_its_standard_deviation():
    x = torch.full((64, 1, 28, 28), 0.5)
    y = Augmenter(AugmentConfig(**IDENTITY, noise=0.05), generator=torch.Generator().manual_seed(0))(x)
    assert (y - x).std().item() == pytest.approx(0.05, rel=0.05)


def test_smooth_keeps_a_constant_away_from_the_border():
    f = torch.ones(1, 2, 28, 28)
    assert torch.allclose(smooth(f, 2.0)[..., 10:18, 10:18], torch.ones(1, 2, 8, 8), atol=1e-5)


def test_runs_batched_without_a_python_loop_per_image(monkeypatch):
    # One grid_sample for the whole batch, whatever its size.
    import torch.nn.functional as F

    calls = []
    real = F.grid_sample
    monkeypatch.setattr(F, "grid_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    Augmenter(AugmentConfig(**STRONG))(torch.rand(64, 1, 28, 28))
    assert len(calls) == 1


@pytest.mark.parametrize("field,value", [("elastic", -1.0), ("elastic_sigma", 0.0), ("erase", 1.5),
                                         ("shear", 90.0), ("noise", -0.1)])
def test_bad_strengths_are_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        AugmentConfig(**{field: value}).validate("pretrain_augment")


@pytest.mark.cuda
def test_runs_on_the_batch_device():
    x = torch.rand(4, 1, 28, 28, device="cuda")
    assert Augmenter(AugmentConfig(**STRONG))(x).device == x.device
