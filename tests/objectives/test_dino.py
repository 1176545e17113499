"""DINO: the loss by hand on a tiny case, the teacher as an EMA without gradient, the centring,
the crops, shapes and determinism."""

import math

import pytest
import torch

from mnist_ssl.config import ModelConfig, OptimConfig
from mnist_ssl.engine.optim import make_optimizer
from mnist_ssl.errors import ConfigError
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.dino import (DINO, DINOConfig, DINOHead, dino_loss, random_resized_crop,
                                       window_indices)

TINY = ModelConfig(dim=32, depth=1, heads=2, patch_size=7, dropout=0.0)
SMALL_HEAD = dict(out_dim=16, hidden_dim=32, bottleneck_dim=8)


def small(**kw) -> DINOConfig:
    return DINOConfig(**{**SMALL_HEAD, **kw})


# ----- the loss ---------------------------------------------------------------------
def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_loss_matches_a_hand_computation():
    # One image, K = 2 prototypes, two global crops (teacher) and one local crop (student only).
    t = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    s = [torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 0.3]])]
    center = torch.tensor([[0.5, 0.5]])
    ts, tt = 0.5, 0.25
    # teacher targets: softmax((t - c) / tt); student: log_softmax(s / ts)
    q = [_softmax([(a - 0.5) / tt for a in row[0].tolist()]) for row in t]
    logp = [[math.log(p) for p in _softmax([a / ts for a in row[0].tolist()])] for row in s]

    def ce(qi, li):
        return -sum(a * b for a, b in zip(qi, li))

    # pairs (teacher crop, student crop) with different indices: (0,1), (0,2), (1,0), (1,2)
    expected = (ce(q[0], logp[1]) + ce(q[0], logp[2]) + ce(q[1], logp[0]) + ce(q[1], logp[2])) / 4
    assert dino_loss(s, t, center, ts, tt).item() == pytest.approx(expected, rel=1e-6)


def test_loss_averages_over_the_batch_and_ignores_same_crop_pairs():
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(5, 7, generator=g) for _ in range(2)]
    s = [torch.randn(5, 7, generator=g) for _ in range(2)]
    c = torch.zeros(1, 7)
    per_image = [dino_loss([x[i:i + 1] for x in s], [x[i:i + 1] for x in t], c, 0.1, 0.05) for i in range(5)]
    assert dino_loss(s, t, c, 0.1, 0.05).item() == pytest.approx(torch.stack(per_image).mean().item(), rel=1e-5)
    # with one teacher crop, the student's crop 0 (the same crop) takes no part in the loss
    one = dino_loss([s[0], s[1]], [t[0]], c, 0.1, 0.05)
    assert dino_loss([s[0] * 3 + 1, s[1]], [t[0]], c, 0.1, 0.05).item() == pytest.approx(one.item(), rel=1e-6)
    assert dino_loss([s[0], s[1] * 3], [t[0]], c, 0.1, 0.05).item() != pytest.approx(one.item(), rel=1e-3)
    with pytest.raises(ValueError):
        dino_loss([s[0]], [t[0]], c, 0.1, 0.05)


def test_loss_gives_no_gradient_to_the_teacher_scores():
    t = [torch.randn(3, 4, requires_grad=True) for _ in range(2)]
    s = [torch.randn(3, 4, requires_grad=True) for _ in range(3)]
    dino_loss(s, t, torch.zeros(1, 4), 0.1, 0.04).backward()
    assert all(x.grad is None for x in t) and all(x.grad is not None for x in s)


# ----- head, crops ----------------------------------------------------------------------
def test_head_shapes_and_unit_norm_last_layer():
    head = DINOHead(32, small())
    out = head(torch.randn(6, 32))
    assert out.shape == (6, 16)
    # bottleneck l2-normalised and rows of the last layer of unit norm: every score is a cosine
    assert out.abs().max().item() <= 1.0 + 1e-5
    # the last layer's scale is not learnable: scaling its weight changes nothing
    x = torch.randn(2, 32)
    before = head(x)
    with torch.no_grad():
        head.last_layer.weight.mul_(7.0)
    torch.testing.assert_close(head(x), before)


def test_full_crop_is_the_identity_and_every_crop_stays_inside():
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(random_resized_crop(x, (1.0, 1.0), (1.0, 1.0)), x)
    ones = torch.ones(64, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    for scale in [(0.15, 0.4), (0.4, 1.0), (0.05, 0.06)]:
        out = random_resized_crop(ones, scale, generator=g)
        assert out.shape == ones.shape
        # a crop that reached outside the image would sample the zero padding
        assert out.min().item() > 1 - 1e-5


def test_crop_zooms_in_by_the_area_fraction():
    # A crop of a quarter of the area with ratio 1 is half the image on a side: a 4 x 4 square
    # becomes about 8 x 8 (mass 16 -> 64) when the crop contains it, less when it cuts it.
    x = torch.zeros(1, 1, 28, 28)
    x[..., 12:16, 12:16] = 1.0
    g = torch.Generator().manual_seed(3)
    out = random_resized_crop(x.expand(64, -1, -1, -1), (0.25, 0.25), (1.0, 1.0), generator=g)
    mass = out.sum(dim=(1, 2, 3))
    assert mass.max().item() == pytest.approx(64.0, abs=4.0)
    assert (mass <= 68.0).all() and (mass > 60).sum() >= 10


def test_window_indices_are_square_blocks_of_the_grid():
    idx = window_indices(50, 7, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert idx.shape == (50, 16)
    rows, cols = idx // 7, idx % 7
    for r, c in zip(rows, cols):
        assert r.max() - r.min() == 3 and c.max() - c.min() == 3 and r.max() < 7 and c.max() < 7
        assert len(set(idx.tolist()[0])) == 16


# ----- the objective ------------------------------------------------------------------
def make(**kw) -> DINO:
    torch.manual_seed(0)
    return DINO(ViTEncoder(TINY), small(**kw))


def views_for(obj: DINO, n: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(n, 1, 28, 28, generator=g) for _ in range(obj.views)]


@pytest.mark.parametrize("mode", ["resize", "window"])
def test_forward_shapes_and_terms(mode):
    obj = make(local_mode=mode, local_window=2)
    assert obj.views == 6
    out = obj(views_for(obj))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert set(out.terms) == {"dino", "teacher_entropy", "teacher_batch_entropy"}
    globals_, locals_ = obj.make_crops(views_for(obj))
    assert len(globals_) == 2 and len(locals_) == 4
    student = obj.forward_student(globals_, locals_)
    assert len(student) == 6 and all(s.shape == (6, 16) for s in student)
    assert all(t.shape == (6, 16) for t in obj.forward_teacher(globals_))


def test_teacher_gets_no_gradient_and_no_optimiser_slot():
    obj = make()
    obj(views_for(obj)).loss.backward()
    teacher = list(obj.teacher_encoder.parameters()) + list(obj.teacher_head.parameters())
    assert teacher and all(not p.requires_grad and p.grad is None for p in teacher)
    student = list(obj.encoder.parameters()) + list(obj.head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student)
    opt = make_optimizer(obj, OptimConfig(), torch.device("cpu"))
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    assert not in_opt & {id(p) for p in teacher}
    assert {id(p) for p in student} <= in_opt


def test_teacher_starts_as_the_student_and_follows_it_as_an_ema():
    obj = make(momentum=0.9)
    for ps, pt in zip(obj.encoder.parameters(), obj.teacher_encoder.parameters()):
        torch.testing.assert_close(ps, pt)
    before = [p.clone() for p in obj.teacher_encoder.parameters()]
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.5)
    obj(views_for(obj)).loss.backward()
    opt.step()
    student = [p.clone() for p in obj.encoder.parameters()]
    m = obj.momentum_at(1, 10)
    assert m == pytest.approx(0.9)  # the first step's momentum is cfg.momentum
    obj.after_step(1, 10)
    for t0, s, t in zip(before, student, obj.teacher_encoder.parameters()):
        torch.testing.assert_close(t, m * t0 + (1 - m) * s)
    assert int(obj.steps_done) == 1 and int(obj.total_steps) == 10
    # the head's teacher too
    for ps, pt in zip(obj.head.parameters(), obj.teacher_head.parameters()):
        assert pt.requires_grad is False and ps.shape == pt.shape


def test_momentum_follows_a_cosine_to_one():
    obj = make(momentum=0.99)
    values = [obj.momentum_at(k, 100) for k in range(1, 101)]
    assert values[0] == pytest.approx(0.99) and values[-1] == pytest.approx(1.0)
    assert values[49] == pytest.approx(1 - 0.01 * (math.cos(math.pi * 49 / 99) + 1) / 2)
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_the_last_step_hands_the_teacher_to_the_shared_encoder():
    obj = make(final_encoder="teacher")
    with torch.no_grad():
        for p in obj.encoder.parameters():
            p.add_(1.0)
    obj.after_step(5, 5)
    for ps, pt in zip(obj.encoder.parameters(), obj.teacher_encoder.parameters()):
        torch.testing.assert_close(ps, pt)
    keep_student = make(final_encoder="student")
    with torch.no_grad():
        for p in keep_student.encoder.parameters():
            p.add_(1.0)
    keep_student.after_step(5, 5)
    p_s, p_t = next(keep_student.encoder.parameters()), next(keep_student.teacher_encoder.parameters())
    assert not torch.allclose(p_s, p_t)


def test_centre_is_an_ema_of_the_teacher_batch_mean():
    obj = make(center_momentum=0.8)
    views = views_for(obj)
    torch.manual_seed(5)
    globals_, _ = obj.make_crops(views)
    expected_batch = torch.cat(obj.forward_teacher(globals_)).mean(0, keepdim=True)
    torch.manual_seed(5)  # the same crops again inside forward
    obj.train()
    obj(views)
    torch.testing.assert_close(obj.center, 0.2 * expected_batch)
    obj.update_center([torch.ones(3, 16)])
    torch.testing.assert_close(obj.center, 0.8 * 0.2 * expected_batch + 0.2)
    frozen = obj.center.clone()
    obj.eval()
    obj(views)  # evaluation passes leave the centre alone
    torch.testing.assert_close(obj.center, frozen)


def test_teacher_temperature_warms_up_linearly():
    obj = make(warmup_teacher_temp=0.04, teacher_temp=0.08, teacher_temp_warmup=0.5)
    assert obj.teacher_temperature() == pytest.approx(0.04)
    obj.after_step(25, 100)
    assert obj.teacher_temperature() == pytest.approx(0.06)
    obj.after_step(60, 100)
    assert obj.teacher_temperature() == pytest.approx(0.08)


def test_teacher_encoder_stays_in_eval_mode():
    obj = make()
    obj.train()
    assert obj.encoder.training and obj.head.training
    assert not obj.teacher_encoder.training  # no dropout in the targets
    obj.eval()
    assert not obj.teacher_head.training and not obj.encoder.training


def test_forward_is_deterministic_under_a_seed():
    a, b = make(), make()
    views = views_for(a)
    torch.manual_seed(9)
    la = a(views).loss
    torch.manual_seed(9)
    lb = b(views).loss
    assert la.item() == lb.item()


def test_state_dict_holds_teacher_centre_and_schedule_and_only_the_student_as_encoder():
    keys = make().state_dict().keys()
    assert {"center", "steps_done", "total_steps"} <= set(keys)
    assert any(k.startswith("teacher_encoder.") for k in keys)
    # load_encoder takes the "encoder." tensors: those are the shared encoder's, nothing else
    from mnist_ssl.models.vit import ViTEncoder as Enc

    enc_keys = {k[len("encoder."):] for k in keys if k.startswith("encoder.")}
    assert enc_keys == set(Enc(TINY).state_dict())


def test_learns_through_the_engine_without_collapse():
    from mnist_ssl.engine.loop import train

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = ((torch.rand(32, 1, 4, 4, generator=g) > 0.5).repeat_interleave(7, -1)
              .repeat_interleave(7, -2) * 255).to(torch.uint8)
    obj = DINO(ViTEncoder(TINY), small(local_crops=2))

    class EMA:  # what the engine's after_step hook does, as a callback
        def on_step(self, state):
            state.module.after_step(state.step, state.epochs * state.steps_per_epoch)

        def on_epoch_end(self, state, record):
            pass

    state = train(obj, images, None, OptimConfig(epochs=3, batch_size=16, lr=1e-3), phase="pretrain",
                  callbacks=[EMA()])
    assert int(obj.steps_done) == 6 and int(obj.total_steps) == 6
    assert all(math.isfinite(r["loss"]) for r in state.history)
    # not collapsed to one prototype for every image
    assert state.history[-1]["terms"]["teacher_batch_entropy"] > 0.1


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="local_mode"):
        DINOConfig(local_mode="zoom").validate()
    with pytest.raises(ConfigError, match="global_scale"):
        DINOConfig(global_scale_min=0.0).validate()
    with pytest.raises(ConfigError, match=">= 2"):
        DINOConfig(global_crops=1, local_crops=0).validate()
    with pytest.raises(ConfigError, match="frames"):
        DINO(ViTEncoder(ModelConfig(frames=3, dim=32, depth=1, heads=2, patch_size=7)), small())
    with pytest.raises(ConfigError, match="local_window"):
        DINO(ViTEncoder(TINY), small(local_mode="window", local_window=5))


@pytest.mark.parametrize("mode", ["resize", "window"])
def test_figure_shows_the_images_a_global_and_a_local_crop(mode):
    obj = make(local_mode=mode, local_window=2)
    images = torch.rand(3, 1, 28, 28)
    arrays = obj.figure(images)
    assert set(arrays) == {"original", "view1", "view2"}
    assert all(a.shape == (3, 28, 28) for a in arrays.values())
    if mode == "window":  # only the window's 2 x 2 patches of 7 x 7 pixels are shown
        assert ((arrays["view2"] != 0).reshape(3, -1).sum(1) <= 4 * 49).all()


def test_registered_with_its_section_preset_and_views_figure():
    from mnist_ssl.objectives.registry import RunConfig, build_objective, get_method

    spec = get_method("dino")
    assert spec.section == "dino" and spec.config is DINOConfig and spec.figure == "views"
    cfg = RunConfig(method="dino")
    cfg.model = TINY
    cfg.dino = small(local_crops=1)
    cfg.validate()
    obj = build_objective(cfg, ViTEncoder(cfg.model))
    assert isinstance(obj, DINO) and obj.views == 3 and obj.loss_label == "DINO Loss"
    assert spec.preset["pretrain_augment"]["enabled"] and spec.preset["pretrain"]["grad_clip"] == 3.0


def test_the_engine_calls_after_step_and_other_objectives_do_not_need_it():
    from mnist_ssl.engine.loop import train

    images = (torch.rand(10, 1, 28, 28) * 255).to(torch.uint8)
    obj = DINO(ViTEncoder(TINY), small(local_crops=1, final_encoder="teacher"))
    calls = []
    original = obj.after_step
    obj.after_step = lambda step, total: (calls.append((step, total)), original(step, total))
    train(obj, images, None, OptimConfig(epochs=2, batch_size=4), phase="pretrain")
    assert calls == [(k, 6) for k in range(1, 7)]  # 3 steps an epoch, 2 epochs
    # after the last step the shared encoder holds the teacher's weights
    for ps, pt in zip(obj.encoder.parameters(), obj.teacher_encoder.parameters()):
        torch.testing.assert_close(ps, pt)
