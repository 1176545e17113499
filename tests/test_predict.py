"""``mnist-ssl predict``: image files of any size -> MNIST form -> one result per file."""

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
from mnist_ssl.imageprep import NoDigit, decode_image, prepare_file
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.predict import load_images, to_mnist
from tests.predict.photos import png_header


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


def _predict(capsys, checkpoint, *args):
    code = main(["predict", "--checkpoint", str(checkpoint), *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


# ----- preparation ------------------------------------------------------------------------
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
    assert np.abs(a - b).mean() < 0.01
    assert np.abs(big - b).mean() < 0.03


def test_mnist_digits_come_back_almost_unchanged(tmp_path):
    """An MNIST digit already is a 20x20 box centred by mass: the preparation must (nearly) keep it,
    also from a dark-on-light, 4x larger PNG."""
    images = load_embedded().images[:20, 0].numpy()
    errs = []
    for i, img in enumerate(images):
        path = tmp_path / f"d{i}.png"
        Image.fromarray(255 - img).resize((112, 112), Image.Resampling.BICUBIC).save(path)
        errs.append(np.abs(prepare_file(path) - img / 255.0).mean())
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


def test_exif_orientation_is_applied(tmp_path):
    """A phone stores a photo taken upside down as is, with EXIF orientation 3 (rotate 180)."""
    upright = _stroke(mode="RGB")
    stored = upright.rotate(180)
    exif = stored.getexif()
    exif[0x0112] = 3
    stored.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    upright.save(tmp_path / "upright.jpg", quality=95)
    assert np.abs(prepare_file(tmp_path / "turned.jpg") - prepare_file(tmp_path / "upright.jpg")).mean() < 0.02


def test_sixteen_bit_greyscale_png(tmp_path):
    a = (np.asarray(_stroke(), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert np.abs(prepare_file(tmp_path / "deep.png") - to_mnist(np.asarray(_stroke()) / 255.0)).mean() < 0.02


@pytest.mark.parametrize("mode,suffix", [("LA", "png"), ("P", "png"), ("1", "png"), ("CMYK", "jpg"), ("RGBA", "webp")])
def test_every_image_mode_gives_the_same_digit(tmp_path, mode, suffix):
    reference = to_mnist(np.asarray(_stroke(), dtype=np.float32) / 255)
    path = tmp_path / f"seven.{suffix}"
    _stroke(mode=mode).save(path)
    assert np.abs(prepare_file(path) - reference).mean() < 0.02


def test_a_blank_array_has_no_digit():
    with pytest.raises(NoDigit):
        to_mnist(np.zeros((10, 10), dtype=np.float32))
    with pytest.raises(NoDigit):
        to_mnist(np.full((50, 60, 3), 0.8, dtype=np.float32))


# ----- safe decoding ----------------------------------------------------------------------
@pytest.mark.parametrize("width,height", [(100_000, 100_000), (8000, 8000)])
def test_a_bomb_header_is_refused_before_decoding(tmp_path, width, height):
    """PIL refuses 100,000^2 as a bomb; 8,000^2 is between the limit and twice it (PIL's warning)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(width, height))
    with pytest.raises(DataError, match="bomb.png") as e:
        decode_image(path)
    assert "\n" not in str(e.value) and "max-pixels" in str(e.value)


def test_the_pixel_limit_is_checked_from_the_header(tmp_path):
    _stroke((300, 200)).save(tmp_path / "a.png")
    decode_image(tmp_path / "a.png", max_pixels=60_000)
    for limit in (59_999, 40_000, 10_000):  # just below, below twice, far below
        with pytest.raises(DataError, match="max-pixels"):
            decode_image(tmp_path / "a.png", max_pixels=limit)


def test_memory_is_bounded_by_the_working_size(tmp_path):
    """A 20-megapixel photo is reduced while decoding: numpy never holds it at full size
    (a float32 RGB copy would be 240 MB)."""
    import tracemalloc

    ys = np.linspace(150, 240, 4000, dtype=np.float32)[:, None]
    Image.fromarray(np.broadcast_to(ys, (4000, 5000)).astype(np.uint8)).save(tmp_path / "big.jpg", quality=80)
    tracemalloc.start()
    try:
        with pytest.raises(NoDigit):
            prepare_file(tmp_path / "big.jpg")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120e6, peak


@pytest.mark.parametrize("content", [b"not an image at all", b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_not_an_image_is_one_line_and_exit_2(tmp_path, capsys, checkpoint, content):
    bad = tmp_path / "notes.png"
    bad.write_bytes(content)
    code, out, err = _predict(capsys, checkpoint, bad)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "notes.png" in err and "Traceback" not in err


def test_truncated_files_are_errors(tmp_path, capsys, checkpoint):
    _stroke(mode="RGB").save(tmp_path / "full.jpg", quality=90)
    _stroke().save(tmp_path / "full.png")
    for name in ("full.jpg", "full.png"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
    code, out, err = _predict(capsys, checkpoint, tmp_path / "cut_full.jpg", tmp_path / "cut_full.png")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "cut_full.jpg" in lines[0] and "cut_full.png" in lines[1]
    assert "2 of 2 files" in lines[2] and "Traceback" not in err


# ----- the command ------------------------------------------------------------------------
def test_cli_prints_class_and_probability_per_file(tmp_path, capsys, checkpoint):
    _stroke().save(tmp_path / "a.png")
    _stroke().resize((60, 40)).save(tmp_path / "b.jpg")
    code, out, _ = _predict(capsys, checkpoint, "--min-confidence", "0", tmp_path / "a.png", tmp_path / "b.jpg")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, ["a.png", "b.jpg"]):
        path, _, rest = line.partition(": ")
        assert path.endswith(name)
        label, pct = rest.split(" (")
        assert int(label) in (3, 5, 7) and 0 < float(pct.rstrip("%)")) <= 100


def test_cli_json_lines(tmp_path, capsys, checkpoint):
    _stroke().save(tmp_path / "a.png")
    Image.new("L", (50, 50), 255).save(tmp_path / "white.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    code, out, err = _predict(capsys, checkpoint, "--json", "--min-confidence", "0",
                              tmp_path / "a.png", tmp_path / "white.png", tmp_path / "bad.png")
    assert code == 2
    a, white, bad = [json.loads(line) for line in out.strip().splitlines()]
    assert a["status"] == "ok" and a["class"] in (3, 5, 7) and a["file"].endswith("a.png")
    probs = a["probabilities"]
    assert set(probs) == {"3", "5", "7"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert a["probability"] == pytest.approx(max(probs.values()), abs=1e-5)
    assert white["status"] == "uncertain" and "class" not in white and "no digit" in white["reason"]
    assert bad["status"] == "error" and "bad.png" in bad["error"]
    assert "bad.png" in err and "Traceback" not in err


def test_a_mix_of_good_and_bad_files_goes_on_and_fails_at_the_end(tmp_path, capsys, checkpoint):
    """Every file gets its line in order; each bad one is one line on stderr naming it; exit 2 at the end."""
    _stroke().save(tmp_path / "1_good.png")
    (tmp_path / "2_text.png").write_text("hello")
    (tmp_path / "3_bomb.png").write_bytes(png_header(100_000, 100_000))
    Image.new("L", (80, 60), 200).save(tmp_path / "4_blank.png")
    _stroke(mode="RGB").save(tmp_path / "5_good.jpg")
    missing = tmp_path / "6_missing.png"
    code, out, err = _predict(capsys, checkpoint, "--min-confidence", "0",
                              *[tmp_path / n for n in ("1_good.png", "2_text.png", "3_bomb.png", "4_blank.png",
                                                      "5_good.jpg")], missing)
    assert code == 2
    lines = out.strip().splitlines()
    assert [line.split(": ")[0].rsplit("/", 1)[-1] for line in lines] == ["1_good.png", "4_blank.png", "5_good.jpg"]
    assert "uncertain" in lines[1] and lines[0].split(": ")[1][0] in "357" and lines[2].split(": ")[1][0] in "357"
    errors = err.strip().splitlines()
    assert len(errors) == 4 and "Traceback" not in err
    assert "2_text.png" in errors[0] and "3_bomb.png" in errors[1] and "6_missing.png" in errors[2]
    assert "no such file" in errors[2] and "3 of 6 files" in errors[3]


def test_a_folder_means_its_images(tmp_path, capsys, checkpoint):
    folder = tmp_path / "scans"
    folder.mkdir()
    _stroke().save(folder / "b.png")
    _stroke(mode="RGB").save(folder / "a.JPG")
    (folder / "notes.txt").write_text("not an image, not listed")
    (tmp_path / "empty").mkdir()
    code, out, err = _predict(capsys, checkpoint, "--min-confidence", "0", folder, tmp_path / "empty")
    assert code == 2
    assert [line.split(": ")[0].rsplit("/", 1)[-1] for line in out.strip().splitlines()] == ["a.JPG", "b.png"]
    errors = err.strip().splitlines()
    assert len(errors) == 2 and "empty: a folder with no image files" in errors[0] and "1 of 3 files" in errors[1]


def test_blank_page_is_uncertain_not_a_class(tmp_path, capsys, checkpoint):
    Image.new("L", (50, 50), 255).save(tmp_path / "white.png")
    code, out, err = _predict(capsys, checkpoint, "--min-confidence", "0", tmp_path / "white.png")
    assert code == 0 and err == ""
    assert out.strip() == f"{tmp_path / 'white.png'}: uncertain (no digit-like stroke found (blank page))"


def test_min_confidence(tmp_path, capsys, checkpoint):
    _stroke().save(tmp_path / "a.png")
    code, out, _ = _predict(capsys, checkpoint, "--min-confidence", "0.999999", tmp_path / "a.png")
    assert code == 0 and "uncertain (top class" in out and "below --min-confidence" in out
    code, out, _ = _predict(capsys, checkpoint, "--json", "--min-confidence", "0.999999", tmp_path / "a.png")
    result = json.loads(out)
    assert result["status"] == "uncertain" and result["class"] in (3, 5, 7)
    code, _, err = _predict(capsys, checkpoint, "--min-confidence", "1.5", tmp_path / "a.png")
    assert code == 2 and err.count("\n") == 1 and "--min-confidence" in err


def test_save_prepared_writes_what_the_model_saw(tmp_path, capsys, checkpoint):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    _stroke().save(tmp_path / "x" / "seven.png")
    _stroke((400, 300)).save(tmp_path / "y" / "seven.jpg")
    Image.new("L", (50, 50), 255).save(tmp_path / "white.png")
    out_dir = tmp_path / "prepared"
    code, out, _ = _predict(capsys, checkpoint, "--json", "--save-prepared", out_dir,
                            tmp_path / "x" / "seven.png", tmp_path / "y" / "seven.jpg", tmp_path / "white.png")
    assert code == 0
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert sorted(p.name for p in out_dir.iterdir()) == ["seven-2.png", "seven.png"]  # nothing for the blank page
    assert results[0]["prepared"].endswith("seven.png") and results[1]["prepared"].endswith("seven-2.png")
    saved = np.asarray(Image.open(out_dir / "seven.png"), dtype=np.float32) / 255
    assert saved.shape == (28, 28)
    assert np.abs(saved - prepare_file(tmp_path / "x" / "seven.png")).max() <= 0.5 / 255 + 1e-6


def test_a_pretrained_checkpoint_is_refused(tmp_path, capsys):
    enc = ViTEncoder(ModelConfig(dim=32, depth=1, heads=2))
    path = save_checkpoint(tmp_path / "pretrained", torch.nn.ModuleDict({"encoder": enc}), kind="objective",
                           model=enc.cfg)
    _stroke().save(tmp_path / "a.png")
    code, _, err = _predict(capsys, path, tmp_path / "a.png")
    assert code == 2 and "not a fine-tuned classifier" in err
