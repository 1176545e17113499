"""The CPU dropout of models.layers: same contract as nn.Dropout (rate, scale, eval, gradient)."""

import pytest
import torch

from mnist_ssl.models.layers import Dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drops_at_the_rate_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(400_003)
    y = Dropout(p).train()(x)
    kept = (y > 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-3)


def test_identity_in_eval_and_at_zero():
    x = torch.randn(3, 5, 7)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_same_seed_same_mask_and_gradient_through_kept_values():
    x = torch.randn(2, 9, 16, requires_grad=True)
    torch.manual_seed(1)
    y1 = Dropout(0.2).train()(x)
    torch.manual_seed(1)
    y2 = Dropout(0.2).train()(x)
    assert torch.equal(y1, y2)
    y1.sum().backward()
    assert torch.equal(x.grad != 0, y1 != 0)


def test_whole_drop():
    assert torch.equal(Dropout(1.0).train()(torch.ones(10)), torch.zeros(10))


def test_eager_mask_is_the_compiled_graphs_custom_op_mask():
    # Eager mode calls the mask function directly (the custom op's dispatch costs time);
    # both must draw the same mask from the same RNG state.
    from mnist_ssl.models.layers import _keep_mask_op

    x = torch.randn(4, 50, 64)
    torch.manual_seed(3)
    y = Dropout(0.1).train()(x)
    torch.manual_seed(3)
    assert torch.equal(y, x * _keep_mask_op(x, 0.1))
