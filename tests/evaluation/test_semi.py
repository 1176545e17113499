"""The semi-supervised stage on tiny synthetic problems: distillation makes the student agree with
the teacher; FixMatch spreads a few labels over the unlabelled images; the teacher never trains."""

import pytest
import torch
from torch import nn

from mnist_ssl.errors import ConfigError
from mnist_ssl.evaluation.semi import (STRONG_AUGMENT, SemiConfig, copy_student, run_semi, semi_objective,
                                       soft_label_loss)


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 1, 8, 8) images of two classes: the bright stripe is in the top half (0) or the
    bottom half (1), at a random row, with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    rows = torch.randint(0, 4, (n,), generator=g) + 4 * y
    x[torch.arange(n), 0, rows] = 1.0
    return (x * 255).to(torch.uint8), y


def _linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))


def _predict(model: nn.Module, x_u8: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x_u8.float() / 255).argmax(-1)


def _teacher() -> nn.Module:
    """A fixed, correct classifier: top-half brightness minus bottom-half brightness."""
    t = _linear(0)
    with torch.no_grad():
        w = torch.zeros(2, 1, 8, 8)
        w[0, 0, :4], w[1, 0, 4:] = 1.0, 1.0
        t[1].weight.copy_(w.view(2, 64) * 2)
        t[1].bias.zero_()
    return t


def test_soft_label_loss_is_cross_entropy_to_the_tempered_teacher():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    T = 2.0
    target = torch.softmax(t / T, -1)
    expected = -(target * torch.log_softmax(s / T, -1)).sum()
    assert soft_label_loss(s, t, T).item() == pytest.approx(expected.item())
    # minimal (the teacher's entropy) where the student equals the teacher
    assert soft_label_loss(t, t, T) < soft_label_loss(s, t, T)


def test_distillation_makes_the_student_agree_with_the_teacher():
    teacher = _teacher()
    unlabelled, _ = _images(512, seed=1)
    test, test_y = _images(200, seed=2)
    assert (_predict(teacher, test) == test_y).float().mean() > 0.97
    student = _linear(1)  # a fresh student, no labels at all
    assert (_predict(student, test) == _predict(teacher, test)).float().mean() < 0.9
    cfg = SemiConfig(enabled=True, kind="distill", epochs=5, batch_size=32, lr=0.05, labelled_weight=0.0)
    before = [p.clone() for p in teacher.parameters()]
    state = run_semi(teacher, student, unlabelled, None, None, cfg, weak_view=None)
    agree = (_predict(student, test) == _predict(teacher, test)).float().mean().item()
    assert agree > 0.95
    assert [r["phase"] for r in state.history] == ["semi"] * 5 and "distill" in state.history[0]["terms"]
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the teacher never trained
    assert not student.training


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 1, 8, 8): two fixed random mean images plus Gaussian noise (two clusters with a gap)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (n,), generator=g)
    x = (means[y] + 0.35 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)
    return (x * 255).to(torch.uint8), y


def test_fixmatch_spreads_four_labels_over_the_unlabelled_images():
    torch.manual_seed(0)
    labelled, labelled_y = _blobs(4, seed=10)
    unlabelled, _ = _blobs(512, seed=4)
    test, test_y = _blobs(400, seed=5)
    # a weak start: a few steps on the 4 labels only
    student = _linear(2)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(student(labelled.float() / 255), labelled_y).backward()
        opt.step()
    before = (_predict(student, test) == test_y).float().mean().item()
    assert before < 0.9
    strong = lambda x: (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    cfg = SemiConfig(enabled=True, kind="fixmatch", epochs=5, batch_size=32, lr=0.02, threshold=0.95)
    state = run_semi(copy_student(student), student, unlabelled, labelled, labelled_y, cfg,
                     weak_view=None, strong_view=strong)
    assert (_predict(student, test) == test_y).float().mean().item() > 0.97
    terms = [r["terms"] for r in state.history]
    assert {"unlabelled", "labelled", "mask_rate"} <= set(terms[-1])
    # fewer images pass the threshold at first than at the end, as the student grows confident
    assert terms[0]["mask_rate"] < 0.7 < terms[-1]["mask_rate"]


def test_fixmatch_threshold_one_keeps_no_pseudo_label():
    student = _linear(3)
    unlabelled, _ = _images(16, seed=6)
    cfg = SemiConfig(kind="fixmatch", threshold=1.0, labelled_weight=0.0)
    obj = semi_objective(copy_student(student), student, None, None, cfg, weak_view=None, strong_view=lambda x: x)
    out = obj([unlabelled.float() / 255])
    assert out.terms["mask_rate"].item() == 0.0 and out.loss.item() == 0.0


def test_only_the_student_is_trained_and_saved():
    teacher = _teacher()
    student = copy_student(teacher)
    labelled, y = _images(8, seed=7)
    obj = semi_objective(teacher, student, labelled, y, SemiConfig(), weak_view=None)
    assert set(obj.state_dict()) == {"student." + k for k in student.state_dict()}
    assert {id(p) for p in obj.parameters()} == {id(p) for p in student.parameters()}
    out = obj([labelled.float() / 255])
    assert {"distill", "labelled"} == set(out.terms)
    with pytest.raises(ValueError, match="own module"):
        semi_objective(teacher, teacher, None, None, SemiConfig(), weak_view=None)
    with pytest.raises(ValueError, match="strong view"):
        semi_objective(teacher, student, None, None, SemiConfig(kind="fixmatch"), weak_view=None)


def test_run_is_deterministic_under_a_seed():
    unlabelled, _ = _images(64, seed=8)
    labelled, y = _images(6, seed=9)
    cfg = SemiConfig(epochs=2, batch_size=16, lr=0.01)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        student = _linear(4)
        run_semi(_teacher(), student, unlabelled, labelled, y, cfg, weak_view=None)
        results.append(torch.cat([p.flatten() for p in student.parameters()]))
    assert torch.equal(results[0], results[1])


def test_bad_settings_are_refused():
    for kw, word in [({"kind": "mixmatch"}, "kind"), ({"threshold": 1.5}, "threshold"),
                     ({"temperature": 0.0}, "temperature"), ({"epochs": 0}, "epochs"),
                     ({"unlabelled_weight": 0.0, "labelled_weight": 0.0}, "both 0"),
                     ({"student_init": "random"}, "student_init")]:
        with pytest.raises(ConfigError, match=word):
            SemiConfig(**kw).validate()
    assert STRONG_AUGMENT["enabled"] and STRONG_AUGMENT["erase"] > 0
