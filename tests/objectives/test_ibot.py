"""iBOT: the masked patch loss by hand, the masks, the encoder's mask token, the teacher as an EMA
without gradient (patch prototypes included), the patch centring, and its place in the registry."""

import math

import pytest
import torch

from mnist_ssl.config import ModelConfig, OptimConfig
from mnist_ssl.errors import ConfigError
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.ibot import IBOT, IBOTConfig, masked_patch_loss, random_patch_masks

TINY = ModelConfig(dim=32, depth=1, heads=2, patch_size=7, dropout=0.0)  # a 4 x 4 patch grid


def small(**kw) -> IBOTConfig:
    return IBOTConfig(**{"out_dim": 16, "hidden_dim": 32, "bottleneck_dim": 8, "patch_out_dim": 12,
                         "local_crops": 1, **kw})


def make(**kw) -> IBOT:
    torch.manual_seed(0)
    return IBOT(ViTEncoder(TINY), small(**kw))


def views_for(obj: IBOT, n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(n, 1, 28, 28, generator=g) for _ in range(obj.views)]


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_patch_loss_matches_a_hand_computation():
    # one global crop, 2 images of 2 patches, 2 prototypes; image 0 masks patch 1, image 1 nothing
    s = torch.tensor([[[0.0, 1.0], [2.0, 0.0]], [[1.0, 1.0], [0.0, 3.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.0], [2.0, 0.0]]])
    mask = torch.tensor([[False, True], [False, False]])
    center = torch.tensor([[0.5, 0.0]])
    st, tt = 0.5, 0.25
    target = _softmax([(0.0 - 0.5) / tt, (1.0 - 0.0) / tt])  # image 0, patch 1
    pred = _softmax([2.0 / st, 0.0 / st])
    ce = -sum(a * math.log(b) for a, b in zip(target, pred))
    expected = (ce / 1 + 0.0) / 2  # image 0: its one masked patch; image 1: no mask counts 0
    got = masked_patch_loss([s], [t], [mask], center, st, tt)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # two crops: the mean over crops
    two = masked_patch_loss([s, s], [t, t], [mask, torch.zeros_like(mask)], center, st, tt)
    assert two.item() == pytest.approx(expected / 2, rel=1e-6)


def test_masks_follow_the_probability_and_the_ratio():
    torch.manual_seed(0)
    assert not random_patch_masks(50, 16, 0.0, (0.1, 0.5), torch.device("cpu")).any()
    every = random_patch_masks(50, 16, 1.0, (0.5, 0.5), torch.device("cpu"))
    assert (every.sum(1) == 8).all()
    assert len({tuple(row.tolist()) for row in every}) > 1  # not the same patches every time
    some = random_patch_masks(4000, 49, 0.5, (0.1, 0.5), torch.device("cpu"))
    masked = some.any(1)
    assert 0.45 < masked.float().mean() < 0.55
    counts = some.sum(1)[masked]
    assert counts.min() >= round(0.1 * 49) and counts.max() <= round(0.5 * 49)


def test_the_mask_token_replaces_the_masked_patch_embeddings_only():
    torch.manual_seed(0)
    enc = ViTEncoder(TINY)
    x = torch.rand(2, 1, 28, 28)
    token = torch.randn(32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, 3] = mask[1, 0] = True
    plain, masked = enc.tokens(x), enc.tokens(x, mask, token)
    torch.testing.assert_close(masked[~mask], plain[~mask])
    pos = enc.pos_embed().expand(2, -1, -1)
    torch.testing.assert_close(masked[mask], (token + pos[mask]))
    assert torch.equal(enc.encode(x), enc.encode(x, mask=torch.zeros_like(mask), mask_token=token))


def test_forward_terms_and_gradients_reach_the_student_and_the_mask_token_not_the_teacher():
    obj = make(mask_prob=1.0)
    out = obj(views_for(obj))
    assert set(out.terms) >= {"cls", "patch", "masked_share"}
    assert out.loss.item() == pytest.approx(out.terms["cls"].item() + out.terms["patch"].item(), rel=1e-5)
    assert 0.1 <= out.terms["masked_share"].item() <= 0.5
    out.loss.backward()
    assert obj.mask_token.grad is not None and obj.mask_token.grad.abs().sum() > 0
    assert obj.head.patch_layer.weight.grad.abs().sum() > 0
    teacher = list(obj.teacher_encoder.parameters()) + list(obj.teacher_head.parameters())
    assert all(not p.requires_grad and p.grad is None for p in teacher)


def test_without_masks_the_patch_term_is_zero_and_the_loss_is_dinos():
    obj = make(mask_prob=0.0)
    out = obj(views_for(obj))
    assert out.terms["patch"].item() == 0.0
    assert out.loss.item() == pytest.approx(out.terms["cls"].item())


def test_the_teacher_follows_the_student_as_an_ema_patch_prototypes_included():
    obj = make(momentum=0.9)
    before = obj.teacher_head.patch_layer.weight.clone()
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.5)
    obj(views_for(obj)).loss.backward()
    opt.step()
    student = obj.head.patch_layer.weight.detach().clone()
    assert not torch.equal(student, before)
    obj.after_step(1, 10)
    torch.testing.assert_close(obj.teacher_head.patch_layer.weight, 0.9 * before + 0.1 * student)


def test_patch_centre_is_an_ema_of_the_teachers_mean_patch_score():
    obj = make(center_momentum=0.8)
    obj.eval()
    views = views_for(obj)
    globals_, _ = obj.make_crops(views)
    torch.manual_seed(5)
    _, patch = obj.forward_teacher_tokens(globals_)
    mean = torch.cat(patch).reshape(-1, patch[0].shape[-1]).mean(0, keepdim=True)
    obj.center_patch.fill_(1.0)
    obj.update_patch_center(patch)
    torch.testing.assert_close(obj.center_patch, 0.8 * torch.ones_like(mean) + 0.2 * mean)


def test_the_checkpointed_encoder_is_a_plain_vit_encoder():
    obj = make()
    keys = set(obj.encoder.state_dict())
    assert keys == set(ViTEncoder(TINY).state_dict())
    assert "mask_token" in dict(obj.named_parameters()) and "center_patch" in obj.state_dict()


def test_learns_through_the_engine():
    from mnist_ssl.engine.loop import train

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = ((torch.rand(32, 1, 4, 4, generator=g) > 0.5).repeat_interleave(7, -1)
              .repeat_interleave(7, -2) * 255).to(torch.uint8)
    obj = IBOT(ViTEncoder(TINY), small())
    state = train(obj, images, None, OptimConfig(epochs=3, batch_size=16, lr=1e-3), phase="pretrain")
    assert int(obj.steps_done) == 6  # the engine called after_step: the teacher moved
    assert all(math.isfinite(r["loss"]) for r in state.history)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="mask_prob"):
        small(mask_prob=1.5).validate()
    with pytest.raises(ConfigError, match="mask_ratio"):
        small(mask_ratio_min=0.6, mask_ratio_max=0.5).validate()
    with pytest.raises(ConfigError, match="both 0"):
        small(lambda_cls=0.0, lambda_patch=0.0).validate()
    with pytest.raises(ConfigError, match="ibot.local_mode"):
        small(local_mode="zoom").validate()


def test_registered_but_not_in_the_default_job():
    from mnist_ssl.objectives.registry import RunConfig, build_objective, default_methods, get_method

    spec = get_method("ibot")
    assert spec.section == "ibot" and spec.config is IBOTConfig and spec.figure == "views"
    assert "ibot" not in default_methods() and "dino" in default_methods()
    cfg = RunConfig(method="ibot")
    cfg.model, cfg.ibot = TINY, small()
    obj = build_objective(cfg.validate(), ViTEncoder(cfg.model))
    assert isinstance(obj, IBOT) and obj.loss_label == "iBOT Loss"
    assert spec.preset["pretrain"]["epochs"] == get_method("dino").preset["pretrain"]["epochs"]
