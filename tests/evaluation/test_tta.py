"""Test-time augmentation: the averaged probabilities against a hand computation, seeding, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnist_ssl.config import AugmentConfig
from mnist_ssl.objectives.registry import RunConfig
from mnist_ssl.data.augment import Augmenter
from mnist_ssl.errors import ConfigError
from mnist_ssl.evaluation.tta import tta_probabilities


class PixelClassifier(torch.nn.Module):
    """Logits = a fixed linear map of the pixels: depends on where the ink is, so augmentation matters."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(28 * 28, 3)
        torch.nn.init.normal_(self.linear.weight, std=0.5, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.linear(x.flatten(1))


@pytest.fixture
def images():
    return torch.randint(0, 256, (6, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_no_copies_is_the_plain_softmax(images):
    model = PixelClassifier()
    got = tta_probabilities(model, images, AugmentConfig(), views=0, seed=0)
    torch.testing.assert_close(got, model(images.float() / 255).softmax(-1))


def test_probabilities_are_the_mean_over_the_image_and_its_seeded_copies(images):
    model = PixelClassifier()
    x = images.float() / 255
    augment = Augmenter(AugmentConfig(), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = (model(x).softmax(-1) + model(augment(x)).softmax(-1) + model(augment(x)).softmax(-1)) / 3
    got = tta_probabilities(model, images, AugmentConfig(), views=2, seed=7)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(-1), torch.ones(len(images)))
    torch.testing.assert_close(tta_probabilities(model, images, AugmentConfig(), views=2, seed=7), got)
    assert not torch.allclose(tta_probabilities(model, images, AugmentConfig(), views=2, seed=8), got)


def test_copies_use_the_augmentation_settings_even_when_fine_tuning_ran_without_it(images):
    model = PixelClassifier()
    off = dataclasses.replace(AugmentConfig(), enabled=False)
    plain = tta_probabilities(model, images, off, views=0, seed=0)
    assert not torch.allclose(tta_probabilities(model, images, off, views=2, seed=0), plain)
    torch.testing.assert_close(tta_probabilities(model, images, off, views=2, seed=0),
                               tta_probabilities(model, images, AugmentConfig(), views=2, seed=0))


def test_bad_view_counts_are_refused():
    with pytest.raises(ValueError, match="views=-1"):
        tta_probabilities(PixelClassifier(), torch.zeros(1, 1, 28, 28, dtype=torch.uint8), AugmentConfig(), -1, 0)
    cfg = RunConfig()
    cfg.eval.tta_views = -2
    with pytest.raises(ConfigError, match="eval.tta_views=-2 must be >= 0"):
        cfg.validate()


def test_the_run_skips_tta_when_fine_tuning_had_no_augmentation(images):
    from mnist_ssl.experiment import stages

    cfg = RunConfig()
    targets = torch.zeros(len(images), dtype=torch.long)
    measured = stages.tta(cfg, PixelClassifier(), images, targets)
    assert measured is not None and measured["views"] == cfg.eval.tta_views
    cfg.finetune_augment.enabled = False
    assert stages.tta(cfg, PixelClassifier(), images, targets) is None
