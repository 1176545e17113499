"""Figures that draw input images show colour images in colour and grey images in grey.

Each figure is drawn from a pure red image (or clip) and the saved PNG is read
back: red pixels must be there (R high, G and B low). A grey input must give
only grey pixels (R = G = B), apart from masked patches, which have a colour
of their own.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_ssl.report import plots

N, SIZE = 2, 8


def _red_images(channel_last: bool = False) -> np.ndarray:
    """(N, 3, H, W), or (N, H, W, 3): pure red."""
    a = np.zeros((N, 3, SIZE, SIZE))
    a[:, 0] = 1.0
    return a.transpose(0, 2, 3, 1) if channel_last else a


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int).reshape(-1, 3)


def _red_pixels(path) -> int:
    """How many pixels of the PNG are red: R high, G and B low."""
    p = _pixels(path)
    return int(((p[:, 0] > 200) & (p[:, 1] < 60) & (p[:, 2] < 60)).sum())


def _coloured_pixels(path) -> int:
    """How many pixels of the PNG are not grey (channels differ), leaving out the masked-patch colour."""
    p = _pixels(path)
    mask = np.round(np.array(plots.MASK_COLOUR) * 255).astype(int)
    not_mask = np.abs(p - mask).max(axis=1) > 8
    return int(((p.max(axis=1) - p.min(axis=1) > 8) & not_mask).sum())


@pytest.mark.parametrize("channel_last", [False, True], ids=["CHW", "HWC"])
def test_reconstruction_and_views_draw_rgb_in_colour(tmp_path, channel_last):
    red = _red_images(channel_last)
    masked = red.copy()
    if channel_last:
        masked[:, :4, :4, :] = np.nan  # a hidden patch
    else:
        masked[:, :, :4, :4] = np.nan
    plots.plot_reconstruction(red, masked, red * 1.2, tmp_path / "reconstruction.png")  # overshoot: clipped
    plots.plot_views(red, red, red, tmp_path / "views.png")
    for name in ("reconstruction.png", "views.png"):
        assert _red_pixels(tmp_path / name) > 100, name


def test_method_figure_from_channel_last_arrays(tmp_path):
    """draw_method_figure's colour arrays are channel-last: (B, H, W, 3) images, (B, T, H, W, 3) clips."""
    red = _red_images(channel_last=True)
    plots.draw_method_figure("reconstruction", {"original": red, "masked": red, "reconstruction": red},
                             str(tmp_path / "image.png"))
    clip = np.repeat(red[:, None], 3, axis=1)  # (B, T=3, H, W, 3)
    plots.draw_method_figure("reconstruction", {"original": clip, "masked": clip, "reconstruction": clip},
                             str(tmp_path / "clip.png"))
    plots.draw_method_figure("views", {"original": red, "view1": red, "view2": red}, str(tmp_path / "views.png"))
    for name in ("image.png", "clip.png", "views.png"):
        assert _red_pixels(tmp_path / name) > 100, name


def test_a_three_frame_grey_clip_stays_a_clip(tmp_path):
    """(B, 3, H, W) is Video MAE's grey clip of three frames, not a colour image."""
    grey = np.random.default_rng(0).random((N, 3, SIZE, SIZE))
    plots.draw_method_figure("reconstruction", {"original": grey, "masked": grey, "reconstruction": grey},
                             str(tmp_path / "clip.png"))
    assert _coloured_pixels(tmp_path / "clip.png") == 0
    assert Image.open(tmp_path / "clip.png").size[1] > Image.open(tmp_path / "clip.png").size[0]  # 3 rows per example


def test_clip_reconstruction_draws_rgb_clips_in_colour(tmp_path):
    red = _red_images()
    clip = np.repeat(red[:, :, None], 2, axis=2)  # (N, 3, T=2, H, W), channel-first as the encoder gives it
    plots.plot_clip_reconstruction(clip, clip, clip, str(tmp_path / "clip.png"))
    assert _red_pixels(tmp_path / "clip.png") > 100


def test_misclassified_draws_rgb_in_colour(tmp_path):
    red = _red_images(channel_last=True)  # predictions.npz keeps colour images as (E, H, W, 3)
    plots.plot_misclassified({"mae": ("2 wrong", [(red[0], "s0: cat→dog"), (red[1], "s0: dog→fox")])},
                             str(tmp_path / "misclassified.png"))
    assert _red_pixels(tmp_path / "misclassified.png") > 100


def test_grey_images_stay_grey(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.random((N, SIZE, SIZE))
    masked = grey.copy()
    masked[:, :4, :4] = np.nan
    plots.plot_reconstruction(grey[:, None], masked, grey, str(tmp_path / "reconstruction.png"))
    plots.plot_misclassified({"mae": ("1 wrong", [(grey[0], "s0: 1→2")])}, str(tmp_path / "misclassified.png"))
    for name in ("reconstruction.png", "misclassified.png"):
        assert _coloured_pixels(tmp_path / name) == 0, name


@pytest.mark.slow  # one tiny reproduce job of two methods
def test_pretraining_figures_of_an_rgb_folder_are_in_colour(tmp_path):
    """MAE's reconstruction and InfoNCE's views, drawn by the run from the objectives' own figure
    arrays, keep an RGB image folder's colour (they handed over channel 0 before)."""
    import json

    from mnist_ssl.cli import main
    from tests.data.builders import write_image_folder

    write_image_folder(tmp_path / "pets", classes=("cat", "dog", "fox"), per_class=8, size=28, mode="RGB")
    out = tmp_path / "out"
    tiny = ["--set", "model.dim=16", "--set", "model.depth=1", "--set", "model.heads=2",
            "--set", "pretrain.batch_size=8", "--set", "finetune.batch_size=8", "--set", "eval.tta_views=0",
            "--set", "pretrain.warmup_epochs=0", "--set", "finetune.warmup_epochs=0", "--epochs", "1",
            "--threads", "1", "--quiet", "--classes", "all", "--train-per-class", "4", "--test-per-class", "4"]
    assert main(["reproduce", "--data", str(tmp_path / "pets"), "--methods", "mae,infonce", "--seeds", "1",
                 "--no-baselines", "--no-report", "--out", str(out), *tiny]) in (0, None)
    for method, figure in (("mae", "reconstruction.png"), ("infonce", "views.png")):
        run = out / "runs" / method / "seed0"
        assert _coloured_pixels(run / figure) > 500, method
        assert json.loads((run / "metrics.json").read_text())["class_names"] == ["cat", "dog", "fox"]
