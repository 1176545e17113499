"""NT-Xent against a slow reference, its invariances and minimum; the InfoNCE objective."""

import math

import pytest
import torch

from mnist_ssl.config import ModelConfig
from mnist_ssl.objectives.registry import RunConfig
from mnist_ssl.losses import nt_xent
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.infonce import GlobalBatchNorm1d, InfoNCE, ProjectionHead
from mnist_ssl.objectives.registry import build_objective, get_method


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """One anchor at a time, in plain Python over the 2N views: -log(exp(pos) / sum_{k != i} exp(s_ik))."""
    views = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n = z1.shape[0]
    total = 0.0
    for i, anchor in enumerate(views):
        positive = (i + n) % (2 * n)
        denominator = 0.0
        for k, other in enumerate(views):
            if k != i:
                denominator += math.exp(float(anchor @ other) / temperature)
        total += -(float(anchor @ views[positive]) / temperature - math.log(denominator))
    return total / (2 * n)


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("d", [2, 8, 33])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_nt_xent_matches_reference(n, d, temperature):
    g = torch.Generator().manual_seed(n * 1000 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    got = nt_xent(z1, z2, temperature).item()
    assert got == pytest.approx(reference_nt_xent(z1, z2, temperature), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("n,d", [(3, 4), (8, 16), (32, 64)])
def test_nt_xent_symmetric_and_scale_invariant(n, d):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    loss = nt_xent(z1, z2, 0.2)
    assert nt_xent(z2, z1, 0.2).item() == pytest.approx(loss.item(), rel=1e-6)
    scale1 = torch.rand(n, 1, generator=g) * 10 + 0.1  # a different positive scale per row
    scale2 = torch.rand(n, 1, generator=g) * 10 + 0.1
    assert nt_xent(z1 * scale1, z2 * scale2, 0.2).item() == pytest.approx(loss.item(), rel=1e-5)
    # Reordering the images (both views alike) changes nothing either.
    perm = torch.randperm(n, generator=g)
    assert nt_xent(z1[perm], z2[perm], 0.2).item() == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_identical_orthogonal_views_give_the_analytic_value(n, temperature):
    # Positive similarity 1, the 2N - 2 negatives 0: loss = log(1 + (2N - 2) exp(-1 / T)).
    z = torch.eye(n, 16, dtype=torch.float64)[:, torch.randperm(16)] * 3.0
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / temperature))
    assert nt_xent(z, z.clone(), temperature).item() == pytest.approx(expected, rel=1e-9)
    # Any other pairing of the views is worse.
    assert nt_xent(z, z.roll(1, dims=0), temperature).item() > expected + 1e-3


@pytest.mark.parametrize("n", [2, 3, 5])
def test_identical_simplex_views_give_the_global_minimum(n):
    # The global minimum: both views equal, the N images at the vertices of a regular
    # simplex (pairwise cosine -1/(N-1)): loss = log(1 + (2N - 2) exp(-(1 + 1/(N-1)) / T)).
    T = 0.5
    simplex = torch.eye(n) - 1.0 / n  # centred basis vectors: pairwise cosine -1/(n-1)
    minimum = math.log(1 + (2 * n - 2) * math.exp(-(1 + 1 / (n - 1)) / T))
    assert nt_xent(simplex, simplex.clone(), T).item() == pytest.approx(minimum, rel=1e-5)
    g = torch.Generator().manual_seed(n)
    for _ in range(200):  # no random configuration goes below it
        z1, z2 = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
        assert nt_xent(z1, z2, T).item() >= minimum - 1e-6
    # and neither do perturbations of the minimum itself
    for _ in range(50):
        noisy = simplex + 0.05 * torch.randn(n, n, generator=g)
        assert nt_xent(noisy, simplex, T).item() >= minimum - 1e-6


def test_nt_xent_gradient_is_finite_at_low_temperature():
    z1 = torch.randn(8, 4, requires_grad=True)
    loss = nt_xent(z1, z1.detach() + 1e-3, 0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all()


def test_nt_xent_refuses_mismatched_batches():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 8), torch.randn(5, 8), 0.1)


# ----- the objective ------------------------------------------------------------
TINY = ModelConfig(dim=32, depth=1, heads=2, patch_size=7, dropout=0.0)


def test_projection_head_sizes():
    assert ProjectionHead(32, 0, 99)(torch.randn(3, 32)).shape == (3, 32)  # hidden 0: identity
    assert ProjectionHead(32, 64, 16)(torch.randn(3, 32)).shape == (3, 16)


def test_global_batch_norm_is_batch_norm_in_one_process():
    torch.manual_seed(0)
    ours, ref = GlobalBatchNorm1d(6), torch.nn.BatchNorm1d(6)
    for _ in range(3):
        x = torch.randn(10, 6) * 3 + 1
        torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    x = torch.randn(4, 6)
    torch.testing.assert_close(ours(x), ref(x))


def _global_bn_worker(rank: int, port: int, result_dir: str) -> None:
    import json
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    x = (torch.randn(8, 5) * 2 + 1).requires_grad_()  # the global batch; rank r holds rows 4r..4r+3
    w = torch.randn(8, 5)
    ref = torch.nn.BatchNorm1d(5)
    y_ref = ref(x)
    (g_ref,) = torch.autograd.grad((y_ref * w).sum(), x)  # the loss summed over both slices
    mine = slice(4 * rank, 4 * rank + 4)
    bn = GlobalBatchNorm1d(5)
    x_mine = x[mine].detach().requires_grad_()
    y = bn(x_mine)
    (y * w[mine]).sum().backward()
    out = {"y_err": (y - y_ref[mine]).abs().max().item(),
           "grad_err": (x_mine.grad - g_ref[mine]).abs().max().item(),
           "var_err": (bn.running_var - ref.running_var).abs().max().item()}
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.barrier()  # no rank leaves while its peer still communicates
    # Leave without the interpreter's teardown, as a forked worker does: destroying gloo's threads
    # at a spawned rank's exit sometimes aborts (std::terminate, SIGABRT), failing the test
    # after the result is written.
    os._exit(0)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_global_batch_norm_uses_the_global_batch_across_processes(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # spawn, not fork: a forked copy of a threaded test process can wait forever on a copied lock.
    mp.start_processes(_global_bn_worker, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    for rank in range(2):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["y_err"] < 1e-5 and r["grad_err"] < 1e-5 and r["var_err"] < 1e-5, r


def test_default_config_builds_through_the_registry():
    spec = get_method("infonce")
    assert spec.figure == "views"
    assert spec.preset["pretrain_augment"]["enabled"] is True
    cfg = RunConfig(method="infonce").validate()
    objective = build_objective(cfg, ViTEncoder(cfg.model))
    assert objective.views == 2 and objective.loss_label == "InfoNCE Loss"
    x = torch.rand(4, 1, 28, 28)
    out = objective([x, x], None)
    assert out.loss.dim() == 0 and set(out.terms) == {"nce"}


def test_objective_loss_is_nt_xent_of_projected_cls():
    torch.manual_seed(0)
    encoder = ViTEncoder(TINY)
    objective = InfoNCE(encoder, RunConfig().infonce).eval()
    v1, v2 = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    out = objective([v1, v2])
    expected = nt_xent(objective.head(encoder(v1)), objective.head(encoder(v2)), objective.cfg.temperature)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_objective_learns_on_a_tiny_problem():
    from mnist_ssl.config import AugmentConfig
    from mnist_ssl.data.augment import Augmenter

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # 32 coarse random patterns: each 7 x 7 patch is either on or off.
    images = (torch.rand(32, 1, 4, 4, generator=g) > 0.5).float().repeat_interleave(7, -1).repeat_interleave(7, -2)
    augment = Augmenter(AugmentConfig(rotate=10, translate=0.05), generator=g)
    objective = InfoNCE(ViTEncoder(TINY), RunConfig().infonce)
    opt = torch.optim.AdamW(objective.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        out = objective([augment(images), augment(images)])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_figure_arrays_draw_the_views_grid(tmp_path):
    from mnist_ssl.data.augment import Augmenter
    from mnist_ssl.report.plots import draw_method_figure

    cfg = RunConfig(method="infonce")
    objective = InfoNCE(ViTEncoder(TINY), cfg.infonce, augment_for_figure=Augmenter(cfg.finetune_augment))
    arrays = objective.figure(torch.rand(4, 1, 28, 28))
    assert {k: v.shape for k, v in arrays.items()} == {k: (4, 28, 28) for k in ("original", "view1", "view2")}
    assert not (arrays["view1"] == arrays["view2"]).all(), "two different augmented views"
    draw_method_figure("views", arrays, str(tmp_path / "views.png"))
    assert (tmp_path / "views.png").stat().st_size > 0
