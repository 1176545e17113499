"""The Python API: checkpoints in, features and predictions for a tensor out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mnist_ssl
from mnist_ssl.config import ModelConfig
from mnist_ssl.engine.checkpoint import save_checkpoint
from mnist_ssl.errors import CheckpointError
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder


@pytest.fixture
def checkpoints(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, depth=1, heads=2)
    encoder = ViTEncoder(cfg)
    pretrained = save_checkpoint(tmp_path / "pretrained", torch.nn.ModuleDict({"encoder": encoder}),
                                 kind="objective", model=cfg, extra={"method": "mae", "classes": [3, 5, 7]})
    classifier = ViTClassifier(encoder, 3)
    with torch.no_grad():
        classifier.head.weight.normal_()
    finetuned = save_checkpoint(tmp_path / "finetuned", classifier, kind="classifier",
                                model=ModelConfig(dim=32, depth=1, heads=2, num_classes=3),
                                extra={"method": "mae", "classes": [3, 5, 7]})
    return pretrained, finetuned, encoder.eval(), classifier.eval()


def test_features_and_predictions(checkpoints):
    pretrained, finetuned, encoder, classifier = checkpoints
    images = torch.rand(5, 1, 28, 28)
    enc = mnist_ssl.load_encoder(pretrained)
    assert not enc.training and enc.checkpoint["method"] == "mae"
    with torch.no_grad():
        torch.testing.assert_close(mnist_ssl.features(enc, images), encoder(images))
        logits = classifier(images)
    clf = mnist_ssl.load_classifier(finetuned)
    assert clf.classes == [3, 5, 7]
    probs = mnist_ssl.class_probabilities(clf, images)
    torch.testing.assert_close(probs, torch.softmax(logits, -1))
    assert mnist_ssl.classify(clf, images) == [[3, 5, 7][i] for i in logits.argmax(1).tolist()]


def test_uint8_and_numpy_images_are_pixels_0_255(checkpoints):
    pretrained, *_ = checkpoints
    enc = mnist_ssl.load_encoder(pretrained)
    u8 = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    expected = mnist_ssl.features(enc, u8.float() / 255)
    torch.testing.assert_close(mnist_ssl.features(enc, u8.numpy()), expected)
    with pytest.raises(TypeError, match="uint8"):
        mnist_ssl.features(enc, u8.to(torch.int32))
    with pytest.raises(ValueError, match=r"expected images \(B, 1, 28, 28\)"):
        mnist_ssl.features(enc, np.zeros((2, 3, 28, 28), np.float32))


def test_pretrained_checkpoint_is_not_a_classifier(checkpoints):
    pretrained, *_ = checkpoints
    with pytest.raises(CheckpointError, match="not a fine-tuned classifier"):
        mnist_ssl.load_classifier(pretrained)


def test_import_is_cheap_and_names_are_listed():
    import subprocess
    import sys

    code = "import sys, mnist_ssl; print('torch' in sys.modules); print(sorted(mnist_ssl.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "False"
    assert "load_encoder" in out


def test_no_api_name_is_also_a_submodule():
    """Importing a submodule sets it as an attribute of the package, hiding a function of that name."""
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(mnist_ssl.__path__)}
    assert not submodules & set(mnist_ssl.__all__)
