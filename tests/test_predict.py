"""``mnist-ssl predict``: image files of any size -> MNIST form -> class and probability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnist_ssl.cli import main
from mnist_ssl.config import ModelConfig
from mnist_ssl.data import load_embedded
from mnist_ssl.engine.checkpoint import save_checkpoint
from mnist_ssl.errors import DataError
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.predict import load_images, read_image, to_mnist


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny classifier of digits 3, 5, 7 (untrained: predict only needs its shape and classes)."""
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, depth=1, heads=2, num_classes=3)
    model = ViTClassifier(ViTEncoder(ModelConfig(dim=32, depth=1, heads=2)), 3)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # not uniform: a clear top class
    path = tmp_path_factory.mktemp("ckpt") / "finetuned"
    return save_checkpoint(path, model, kind="classifier", model=cfg, extra={"classes": [3, 5, 7], "method": "mae"})


def _stroke(size=(300, 200), dark_on_light=True, mode="L") -> Image.Image:
    """A thick '7'-like stroke, off-centre, on a plain background."""
    bg, fg = (255, 0) if dark_on_light else (0, 255)
    im = Image.new("L", size, bg)
    d = ImageDraw.Draw(im)
    d.line([(40, 30), (160, 30), (90, 170)], fill=fg, width=14)
    return im.convert(mode)


def test_dark_digit_on_light_paper_becomes_mnist_like():
    x = to_mnist(np.asarray(_stroke(), dtype=np.float32) / 255)
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0, abs=0.05)
    assert np.median(x) == 0.0 and x[0].sum() == 0  # a light digit on black: inverted
    rows, cols = np.nonzero(x > 0.1)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21  # the 20-pixel box
    ys, xs = np.mgrid[0:28, 0:28]
    cy, cx = (ys * x).sum() / x.sum(), (xs * x).sum() / x.sum()
    assert abs(cy - 14) <= 1.0 and abs(cx - 14) <= 1.0  # centred by centre of mass, as MNIST


def test_light_on_dark_is_not_inverted_and_size_does_not_matter():
    a = to_mnist(np.asarray(_stroke(dark_on_light=False), dtype=np.float32) / 255)
    b = to_mnist(np.asarray(_stroke(), dtype=np.float32) / 255)
    big = to_mnist(np.asarray(_stroke().resize((900, 600)), dtype=np.float32) / 255)
    assert np.abs(a - b).mean() < 1e-3
    assert np.abs(big - b).mean() < 0.03


def test_mnist_digits_come_back_almost_unchanged(tmp_path):
    """An MNIST digit already is a 20x20 box centred by mass: the preparation must (nearly) keep it,
    also from a dark-on-light, 4x larger PNG."""
    images = load_embedded().images[:20, 0].numpy()
    errs = []
    for i, img in enumerate(images):
        path = tmp_path / f"d{i}.png"
        Image.fromarray(255 - img).resize((112, 112), Image.Resampling.BICUBIC).save(path)
        errs.append(np.abs(to_mnist(read_image(path)) - img / 255.0).mean())
    assert np.median(errs) < 0.06, errs


def test_transparent_png_and_jpeg(tmp_path):
    rgba = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(60, 10), (60, 110)], fill=(20, 20, 20, 255), width=12)
    rgba.save(tmp_path / "one.png")
    _stroke(mode="RGB").save(tmp_path / "seven.jpg", quality=90)
    x = load_images([tmp_path / "one.png", tmp_path / "seven.jpg"])
    assert x.shape == (2, 1, 28, 28)
    one = x[0, 0].numpy()
    assert one[0].sum() == 0 and one.max() > 0.9  # a light bar on black
    assert (one > 0.5).sum(axis=0).max() >= 15  # still a vertical bar


def test_cli_prints_class_and_probability_per_file(tmp_path, capsys, checkpoint):
    _stroke().save(tmp_path / "a.png")
    _stroke((64, 64)).save(tmp_path / "b.jpg")
    assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, ["a.png", "b.jpg"]):
        path, _, rest = line.partition(": ")
        assert path.endswith(name)
        label, pct = rest.split(" (")
        assert int(label) in (3, 5, 7) and 0 < float(pct.rstrip("%)")) <= 100


def test_cli_json(tmp_path, capsys, checkpoint):
    _stroke().save(tmp_path / "a.png")
    assert main(["predict", "--json", "--checkpoint", str(checkpoint), str(tmp_path / "a.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and out[0]["class"] in (3, 5, 7)
    probs = out[0]["probabilities"]
    assert set(probs) == {"3", "5", "7"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert out[0]["probability"] == pytest.approx(max(probs.values()), abs=1e-5)


@pytest.mark.parametrize("content", [b"not an image at all", b""])
def test_not_an_image_is_one_line_and_exit_2(tmp_path, capsys, checkpoint, content):
    bad = tmp_path / "notes.png"
    bad.write_bytes(content)
    assert main(["predict", "--checkpoint", str(checkpoint), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.png" in err and "Traceback" not in err


def test_missing_and_blank_files_are_refused(tmp_path, capsys, checkpoint):
    assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "nope.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    Image.new("L", (50, 50), 255).save(tmp_path / "white.png")
    assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "white.png")]) == 2
    assert "blank" in capsys.readouterr().err
    with pytest.raises(DataError):
        to_mnist(np.zeros((10, 10), dtype=np.float32))


def test_a_pretrained_checkpoint_is_refused(tmp_path, capsys):
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2))
    path = save_checkpoint(tmp_path / "pretrained", torch.nn.ModuleDict({"encoder": enc}), kind="objective",
                           model=enc.cfg)
    _stroke().save(tmp_path / "a.png")
    assert main(["predict", "--checkpoint", str(path), str(tmp_path / "a.png")]) == 2
    assert "not a fine-tuned classifier" in capsys.readouterr().err
