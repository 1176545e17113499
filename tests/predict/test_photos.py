"""The preparation on photo-like images of MNIST digits: the 28 x 28 image the model sees is the digit."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_ssl.data import load_embedded
from mnist_ssl.imageprep import NoDigit, prepare_file
from tests.predict.photos import condition, shift_correlation, write_junk, write_photo

SMALL = dict(frame=(200, 150), canvas=90)
# name -> a renderer condition at test size: lighting gradients, noise levels, ink and paper
# colours, offsets, frame sizes and JPEG qualities.
CONDITIONS = {
    "scan_clean_grey_png": condition("scan_clean", frame=(200, 150), canvas=100),
    "linear_light_jpeg85": condition("phone_gradient", **SMALL),
    "strong_linear_light": condition("phone_gradient", **SMALL, light=("linear", 0.7)),
    "vignette_noise005_jpeg80": condition("vignette_noisy", **SMALL),
    "soft_shadow": condition("soft_shadow", **SMALL),
    "heavy_noise_jpeg50": condition("phone_gradient", **SMALL, noise=0.08, save=("JPEG", 50)),
    "blue_ink_cream_paper": condition("blue_ink_cream", **SMALL),
    "red_ink_grey_paper_png": condition("red_ink_grey_paper", **SMALL),
    "chalk_on_dark_board": condition("chalk_on_board", **SMALL),
    "small_digit_off_centre": condition("small_offcentre", frame=(320, 240), canvas=50),
    "tiny_frame": condition("scan_clean", frame=(40, 40), canvas=36, blur=0.0),
}


@pytest.fixture(scope="module")
def digits():
    """One digit of five classes (the first of each in the embedded data), and all 5,000 flattened for 1-NN."""
    split = load_embedded()
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    pick = [int(np.flatnonzero(labels == c)[0]) for c in (0, 2, 4, 7, 8)]
    return images, labels, pick


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_a_photo_of_a_digit_becomes_that_digit(tmp_path, digits, name):
    """Each photo's 28 x 28 preparation matches the original digit (correlation, allowing a one-pixel
    offset), and its nearest neighbour among the 5,000 MNIST digits has the digit's class."""
    images, labels, pick = digits
    flat = images.reshape(len(images), -1).astype(np.float32) / 255
    for i in pick:
        x = prepare_file(write_photo(tmp_path / f"d{i}", images[i], CONDITIONS[name], seed=i))
        assert shift_correlation(images[i] / 255, x) > 0.75, (name, i)
        nearest = int(((flat - x.ravel()) ** 2).sum(1).argmin())
        assert labels[nearest] == labels[i], (name, i, labels[nearest])


def test_photos_are_framed_like_mnist(tmp_path, digits):
    """20-pixel box, centre of mass at (14, 14), light digit on black, ink saturated like MNIST's."""
    images, _, pick = digits
    ys, xs = np.mgrid[0:28, 0:28]
    for i in pick:
        x = prepare_file(write_photo(tmp_path / f"d{i}", images[i], CONDITIONS["linear_light_jpeg85"], seed=i))
        rows, cols = np.nonzero(x > 0.05)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21
        cy, cx = (ys * x).sum() / x.sum(), (xs * x).sum() / x.sum()
        assert abs(cy - 14) <= 1.0 and abs(cx - 14) <= 1.0
        assert x[0].sum() == 0 and x[:, 0].sum() == 0 and x.max() == pytest.approx(1.0)


def test_a_large_frame_is_reduced_and_still_read(tmp_path, digits):
    images, labels, pick = digits
    big = condition("large_frame", frame=(2400, 1800), canvas=900)
    i = pick[3]
    x = prepare_file(write_photo(tmp_path / "big", images[i], big, seed=1))
    assert shift_correlation(images[i] / 255, x) > 0.75


@pytest.mark.parametrize("name", ["blank_white", "blank_lit_jpeg", "blank_shadow_jpeg", "paper_texture",
                                  "noise_uniform", "noise_gaussian"])
def test_blank_pages_and_noise_have_no_digit(tmp_path, name):
    for seed in range(3):
        with pytest.raises(NoDigit, match="no digit-like stroke"):
            prepare_file(write_junk(tmp_path / f"{name}{seed}", name, seed=seed))


def test_the_threshold_rule_keeps_99_percent_of_correct_answers():
    """scripts/render_photos.py's rule for the default --min-confidence (docs/predict.md)."""
    from tests.predict.photos import renderer

    probabilities = [0.99] * 97 + [0.72, 0.68, 0.55]
    assert renderer.choose_min_confidence(probabilities) == 0.65  # keeps 99 of 100; 0.7 only 98
    assert renderer.choose_min_confidence([0.4] * 5 + [0.99] * 95) == 0.5  # none keeps 99%: the lowest
