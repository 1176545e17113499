"""Clips: construction from images (data/clips.py) and the encoder's clip path (T frames, tubelets)."""

import pytest
import torch

from mnist_ssl.config import ModelConfig
from mnist_ssl.data.clips import make_clips
from mnist_ssl.errors import ConfigError
from mnist_ssl.models.vit import ViTEncoder


def digits(n: int = 4) -> torch.Tensor:
    """Bars at different places, in [0, 1], so that a move is visible."""
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        x[i, 0, 6 + 3 * i: 14 + 3 * i, 8:20] = 1.0
    return x


# ----- make_clips -------------------------------------------------------------
@pytest.mark.parametrize("frames", [1, 3, 4])
def test_replicated_clip_is_t_copies(frames):
    x = torch.rand(3, 1, 28, 28)
    clip = make_clips(x, frames, "replicate")
    assert clip.shape == (3, 1, frames, 28, 28)
    for t in range(frames):
        assert torch.equal(clip[:, :, t], x)


def test_replicated_clip_is_what_the_encoder_makes_of_an_image():
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, frames=3))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(make_clips(x, 3, "replicate"), enc.as_clip(x))


def test_motion_clip_moves_keeps_range_and_first_frame():
    x = digits()
    clip = make_clips(x, 4, "motion", torch.Generator().manual_seed(0))
    assert clip.shape == (4, 1, 4, 28, 28)
    assert clip.min() >= 0 and clip.max() <= 1
    assert torch.equal(clip[:, :, 0], x)  # frame 0 is the image itself
    for t in range(1, 4):  # every later frame has moved, for every image
        diff = (clip[:, :, t] - clip[:, :, t - 1]).abs().flatten(1).sum(1)
        assert (diff > 1.0).all(), diff
    # small moves: the digit stays mostly where it was (ink mass roughly kept)
    mass = clip.sum(dim=(1, 3, 4))
    assert ((mass[:, 1:] / mass[:, :1]) - 1).abs().max() < 0.25


def test_motion_clip_is_reproducible_under_a_seed():
    x = digits()
    a = make_clips(x, 3, "motion", torch.Generator().manual_seed(7))
    b = make_clips(x, 3, "motion", torch.Generator().manual_seed(7))
    c = make_clips(x, 3, "motion", torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = make_clips(x, 3, "motion")
    torch.manual_seed(3)
    assert torch.equal(d, make_clips(x, 3, "motion"))


def test_motion_with_one_frame_is_the_image():
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(make_clips(x, 1, "motion")[:, :, 0], x)


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="clip mode 'shuffle'"):
        make_clips(torch.rand(1, 1, 28, 28), 3, "shuffle")
    with pytest.raises(ValueError, match="expects images"):
        make_clips(torch.rand(1, 1, 3, 28, 28), 3, "replicate")


# ----- the encoder's clip path -------------------------------------------------
@pytest.mark.parametrize("frames,tubelet", [(1, 1), (3, 1), (4, 1), (4, 2)])
def test_clip_shapes_and_patchify_round_trip(frames, tubelet):
    cfg = ModelConfig(dim=32, depth=1, heads=2, frames=frames, tubelet=tubelet)
    enc = ViTEncoder(cfg)
    x = torch.rand(2, 1, frames, 28, 28)
    n = (frames // tubelet) * 49
    assert enc.num_patches == n and enc.patch_dim == tubelet * 16
    p = enc.patchify(x)
    assert p.shape == (2, n, tubelet * 16)
    back = enc.unpatchify(p)
    assert torch.equal(back, x[:, :, 0] if frames == 1 else x)
    assert enc.tokens(x).shape == (2, n, 32)
    assert enc.encode(x).shape == (2, n + 1, 32)
    assert enc(x).shape == (2, 32)
    assert enc(x[:, :, 0]).shape == (2, 32)  # an image is replicated into the clip


@pytest.mark.parametrize("frames,tubelet", [(3, 1), (4, 2)])
def test_patch_embedding_is_a_linear_map_of_patchify(frames, tubelet):
    """Token order (time, row, col) of the Conv3d (and of its conv2d fast path) matches patchify."""
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, frames=frames, tubelet=tubelet))
    x = torch.rand(2, 1, frames, 28, 28)
    w = enc.patch_embed.proj.weight  # (D, C, t, p, p)
    w = w.permute(0, 2, 3, 4, 1).reshape(32, -1)  # patchify flattens (t, p, p, C)
    expected = enc.patchify(x) @ w.T + enc.patch_embed.proj.bias
    torch.testing.assert_close(enc.patch_embed(x), expected, atol=1e-5, rtol=1e-5)
    conv3d = enc.patch_embed.proj(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(enc.patch_embed(x), conv3d, atol=1e-5, rtol=1e-5)


def test_tubelet_two_does_not_divide_three_frames():
    with pytest.raises(ConfigError, match="tubelet=2 does not divide model.frames=3"):
        ModelConfig(frames=3, tubelet=2).validate()


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_image_model_and_one_frame_clip_model_give_the_same_tokens(pos_embed):
    torch.manual_seed(0)
    image_model = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, pos_embed=pos_embed)).eval()
    clip_model = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, pos_embed=pos_embed, frames=1))
    clip_model.load_state_dict(image_model.state_dict())
    clip_model.eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(image_model.tokens(x), clip_model.tokens(x.unsqueeze(2)))
    torch.testing.assert_close(image_model.encode(x), clip_model.encode(x.unsqueeze(2)))


def test_image_weights_load_into_a_clip_model_and_differ_by_the_time_embedding():
    """With fixed sin-cos tables the same weights serve 1 and 3 frames; the 3-frame tokens are the
    image tokens + a time term."""
    image_model = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, pos_embed="sincos"))
    clip_model = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2, frames=3, pos_embed="sincos"))
    clip_model.load_state_dict(image_model.state_dict())  # strict: nothing is frame-specific
    x = torch.rand(2, 1, 28, 28)
    tokens = clip_model.tokens(x).reshape(2, 3, 49, 32)
    time_term = clip_model.pos_embed.temporal  # (3, D)
    for t in range(3):
        torch.testing.assert_close(tokens[:, t] - time_term[t], image_model.tokens(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(time_term[0], time_term[1])
