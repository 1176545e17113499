"""Image folders, unlabelled folders and MedMNIST-style .npz: each told apart by what it holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_ssl.data import imagefolder
from mnist_ssl.data.sources import detect_source, load_pretrain_images, open_source
from mnist_ssl.errors import DataError

from .builders import write_image_folder, write_npz


def test_image_folder_rgb_32(tmp_path):
    arrays = write_image_folder(tmp_path / "pets")
    src = open_source(tmp_path / "pets")
    assert (src.kind, src.classes, src.shape, src.pooled) == ("imagefolder", ["cat", "dog"], (3, 32, 32), True)
    split = src.splits["all"]
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(split.images[4].permute(1, 2, 0).numpy(), arrays[4])


def test_image_folder_with_splits_greyscale_jpeg_and_bmp(tmp_path):
    write_image_folder(tmp_path / "d" / "train", classes=("a", "b"), size=20, mode="L", suffix=".bmp")
    write_image_folder(tmp_path / "d" / "test", classes=("a", "b"), per_class=2, size=20, mode="L", suffix=".jpg")
    src = open_source(tmp_path / "d")
    assert sorted(src.splits) == ["test", "train"] and src.shape == (1, 20, 20)
    assert len(src.splits["test"]) == 4 and src.splits["test"].labels.tolist() == [0, 0, 1, 1]


def test_grey_and_colour_mixed_gives_three_channels(tmp_path):
    write_image_folder(tmp_path / "d", classes=("a",), size=8, mode="L")
    write_image_folder(tmp_path / "d", classes=("b",), size=8, mode="RGB")
    split = open_source(tmp_path / "d").splits["all"]
    assert split.images.shape == (6, 3, 8, 8)
    assert torch.equal(split.images[0, 0], split.images[0, 2])  # the grey image repeated


def test_image_folder_errors(tmp_path):
    write_image_folder(tmp_path / "d", classes=("a",), size=8, mode="L")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "d" / "a" / "odd.png")
    with pytest.raises(DataError, match="images differ in size: .* is 8x8 but .*odd.png is 8x9"):
        open_source(tmp_path / "d")
    (tmp_path / "e" / "a").mkdir(parents=True)
    (tmp_path / "e" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not an image"):
        open_source(tmp_path / "e")
    write_image_folder(tmp_path / "f" / "train", classes=("a", "b"), size=8, mode="L")
    write_image_folder(tmp_path / "f" / "test", classes=("a", "c"), size=8, mode="L")
    with pytest.raises(DataError, match=r"class folders \['a', 'c'\] differ"):
        open_source(tmp_path / "f")


def test_pixel_limit_refuses_before_decoding(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "d", classes=("a",), per_class=1, size=16, mode="L")
    monkeypatch.setattr(imagefolder, "MAX_PIXELS", 100)
    with pytest.raises(DataError, match="16x16 pixels is more than the limit of 100"):
        imagefolder.read_image(next((tmp_path / "d" / "a").iterdir()), imagefolder.MAX_PIXELS)


def test_unlabelled_folder_serves_pretraining_only(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "u").mkdir()
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "u" / f"{k}.png")
    with pytest.raises(DataError, match="holds images but no class sub-folders: .*--pretrain-data"):
        open_source(tmp_path / "u")
    pool = load_pretrain_images(tmp_path / "u")
    assert pool.images.shape == (4, 1, 28, 28) and pool.labels.tolist() == [-1] * 4


def test_npz_medmnist_rgb(tmp_path):
    arrays = write_npz(tmp_path / "blood.npz", rgb=True)
    src = open_source(tmp_path / "blood.npz")
    assert (src.kind, src.classes, src.shape) == ("npz", ["0", "1", "2"], (3, 28, 28))
    assert sorted(src.splits) == ["test", "train", "val"]
    np.testing.assert_array_equal(src.splits["val"].images.permute(0, 2, 3, 1).numpy(), arrays["val_images"])
    assert src.splits["train"].labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert load_pretrain_images(tmp_path / "blood.npz").images.shape == (6, 3, 28, 28)


def test_npz_class_names_and_greyscale(tmp_path):
    arrays = write_npz(tmp_path / "k.npz", n=(4, 0, 2), size=32)
    np.savez(tmp_path / "k.npz", **arrays, classes=np.array(["o", "ki", "su"]))
    src = open_source(tmp_path / "k.npz")
    assert src.classes == ["o", "ki", "su"] and src.shape == (1, 32, 32)
    assert sorted(src.splits) == ["test", "train"] and len(src.splits["test"]) == 2  # the empty val left out


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="not MedMNIST's keys"):
        open_source(tmp_path / "other.npz")
    np.savez(tmp_path / "obj.npz", train_images=np.array([None, 1], dtype=object), train_labels=np.zeros(2))
    with pytest.raises(DataError, match="pickles"):
        open_source(tmp_path / "obj.npz")
    write_npz(tmp_path / "multi.npz", train_labels=np.zeros((6, 2), np.uint8))
    with pytest.raises(DataError, match="multi-label"):
        open_source(tmp_path / "multi.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        open_source(tmp_path / "bad.npz")


def test_detection_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        detect_source(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="is not a folder, nor a .npz array file"):
        detect_source(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no train-images-idx3-ubyte\[\.gz\] in .*, no class folders of images, no images"):
        detect_source(tmp_path / "empty")
    assert detect_source("embedded") == "embedded"
