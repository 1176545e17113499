import pytest
import torch

from mnist_ssl.config import ModelConfig
from mnist_ssl.errors import ConfigError
from mnist_ssl.models.patch_embed import sincos_2d
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder


@pytest.mark.parametrize("patch", [2, 4, 7, 14])
def test_shapes_and_patchify_round_trip(patch):
    enc = ViTEncoder(ModelConfig(patch_size=patch, dim=32, depth=1, heads=2))
    x = torch.rand(3, 1, 28, 28)
    p = enc.patchify(x)
    n = (28 // patch) ** 2
    assert p.shape == (3, n, patch * patch)
    assert torch.equal(enc.unpatchify(p), x)
    assert enc.encode(x).shape == (3, n + 1, 32)
    assert enc(x).shape == (3, 32)


def test_patchify_order_matches_conv_patch_embedding():
    """Token i of the conv embedding is a linear map of patchify(x)[:, i]: same order, same pixels."""
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2))
    x = torch.rand(2, 1, 28, 28)
    w = enc.patch_embed.proj.weight.reshape(32, -1)
    expected = enc.patchify(x) @ w.T + enc.patch_embed.proj.bias
    torch.testing.assert_close(enc.patch_embed(enc.as_clip(x)), expected, atol=1e-5, rtol=1e-5)
    # the encoder standardises pixels before embedding them
    xs = (x - enc.cfg.pixel_mean) / enc.cfg.pixel_std
    torch.testing.assert_close(enc.tokens(x), enc.patch_embed(enc.as_clip(xs)) + enc.pos_embed(), atol=1e-5, rtol=1e-5)


def test_keep_idx_selects_tokens():
    torch.manual_seed(0)
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2)).eval()
    enc.blocks = torch.nn.ModuleList()  # no mixing between tokens: outputs are per-token
    x = torch.rand(2, 1, 28, 28)
    keep = torch.tensor([[0, 5, 7], [48, 1, 2]])
    out = enc.encode(x, keep_idx=keep)
    assert out.shape == (2, 4, 32)
    # no blocks: the output is LayerNorm(tokens), so gathered tokens must match.
    full = enc.encode(x)
    torch.testing.assert_close(out[0, 1:], full[0, 1 + keep[0]])
    torch.testing.assert_close(out[1, 1:], full[1, 1 + keep[1]])


def test_sincos_position_embedding_is_distinct_per_patch():
    pe = sincos_2d(64, 7)
    assert pe.shape == (49, 64)
    assert torch.cdist(pe, pe).add(torch.eye(49) * 10).min() > 0.1


def test_learned_position_embedding_is_a_parameter():
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, pos_embed="learned"))
    names = [n for n, _ in enc.named_parameters()]
    assert "pos_embed.spatial" in names


@pytest.mark.parametrize("kwargs,msg", [
    ({"patch_size": 5}, "patch_size=5 does not divide the image size 28"),
    ({"dim": 64, "heads": 3}, "heads=3 does not divide model.dim=64"),
    ({"dropout": 1.0}, "dropout"),
    ({"frames": 0}, "frames=0 must be >= 1"),
    ({"frames": 3, "tubelet": 2}, "tubelet=2 does not divide model.frames=3"),
    ({"pos_embed": "rope"}, "pos_embed='rope'"),
])
def test_impossible_configs_are_refused(kwargs, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
        ViTEncoder(ModelConfig(**kwargs))


def test_classifier_head_on_cls():
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2))
    clf = ViTClassifier(enc, 3)
    x = torch.rand(4, 1, 28, 28)
    assert clf(x).shape == (4, 3)
    torch.testing.assert_close(clf(x), clf.head(enc(x)))


def test_one_frame_clip_equals_image():
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2)).eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(enc.encode(x), enc.encode(x.unsqueeze(2)))
