"""IDX reading/writing and IDX folder discovery."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_ssl.data import find_idx_files, load_idx_split, read_idx, write_idx
from mnist_ssl.errors import ConfigError, DataError

from . import balanced_labels, fake_images, write_split

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


# ----- round trips ----------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(3 * 28 * 28, dtype=np.int64).astype(np.uint8).reshape(3, 28, 28),
        np.array([0, 1, 9, 255], dtype=np.uint8),
        np.array([[-5, 7], [1 << 20, -(1 << 30)]], dtype=np.int32),
        np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
        np.array([-1.5, 2.25], dtype=np.float64),
        np.array([-128, 0, 127], dtype=np.int8),
        np.array([-300, 300], dtype=np.int16),
    ],
    ids=["u8-3d", "u8-1d", "i32", "f32", "f64", "i8", "i16"],
)
def test_round_trip(tmp_path, array, suffix):
    path = write_idx(tmp_path / f"x-idx{suffix}", array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_gz_suffix_decides_compression(tmp_path):
    labels = np.array([3, 1, 4], dtype=np.uint8)
    raw = write_idx(tmp_path / "l-idx1-ubyte", labels).read_bytes()
    gz = write_idx(tmp_path / "l-idx1-ubyte.gz", labels).read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x01" and raw[4:8] == (3).to_bytes(4, "big")
    assert gz[:2] == b"\x1f\x8b" and gzip.decompress(gz) == raw
    # mtime=0: writing the same array twice gives the same bytes.
    assert write_idx(tmp_path / "again.gz", labels).read_bytes() == gz


def test_write_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match="cannot write dtype"):
        write_idx(tmp_path / "x", np.array([1], dtype=np.int64))
    assert not list(tmp_path.iterdir())


# ----- corrupt files ---------------------------------------------------------
def _images(n: int = 10) -> np.ndarray:
    return fake_images(balanced_labels(1)[:n])


def _raw_idx(tmp_path: Path) -> bytes:
    return write_idx(tmp_path / "ref", _images()).read_bytes()


def _corrupt(tmp_path: Path, name: str, data: bytes, gz: bool) -> Path:
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_truncated(tmp_path, gz):
    data = _raw_idx(tmp_path)
    path = _corrupt(tmp_path, "train-images-idx3-ubyte", data[: 16 + 1000], gz)
    with pytest.raises(DataError) as e:
        read_idx(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "truncated IDX file: header declares 10x28x28 = 7840 bytes, found 1000" in msg


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_trailing_bytes(tmp_path, gz):
    path = _corrupt(tmp_path, "t10k-images-idx3-ubyte", _raw_idx(tmp_path) + b"junk", gz)
    expected = r"4 unexpected bytes after the data.*10x28x28 = 7840 bytes, found 7844"
    with pytest.raises(DataError, match=expected):
        read_idx(path)


def test_wrong_dims(tmp_path):
    data = bytearray(_raw_idx(tmp_path))
    data[8:12] = (27).to_bytes(4, "big")  # declares 10x27x28: the data is 280 bytes too long
    path = _corrupt(tmp_path, "x-idx3-ubyte", bytes(data), gz=False)
    with pytest.raises(DataError, match=r"x-idx3-ubyte: 280 unexpected bytes.*10x27x28"):
        read_idx(path)


@pytest.mark.parametrize(
    "magic", [b"\x00\x00\x07\x03", b"\x12\x34\x08\x03", b"\x00\x00\x08\x00", b"PK\x03\x04"]
)
def test_wrong_magic(tmp_path, magic):
    data = magic + _raw_idx(tmp_path)[4:]
    path = _corrupt(tmp_path, "train-labels-idx1-ubyte", data, gz=False)
    with pytest.raises(DataError) as e:
        read_idx(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not an IDX file: magic number 0x{magic.hex()}")
    assert "0x00000803" in msg and "0x00000801" in msg


def test_truncated_header(tmp_path):
    path = _corrupt(tmp_path, "h", b"\x00\x00\x08\x03\x00\x00", gz=False)
    with pytest.raises(DataError, match="h: truncated IDX header"):
        read_idx(path)
    short = _corrupt(tmp_path, "s", b"\x00\x00", gz=False)
    with pytest.raises(DataError, match="too short for an IDX header"):
        read_idx(short)


def test_gz_name_but_not_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(_raw_idx(tmp_path))
    with pytest.raises(DataError, match=f"{path}: named .gz but is not gzip-compressed"):
        read_idx(path)


def test_gzip_without_gz_name(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(_raw_idx(tmp_path)))
    with pytest.raises(DataError, match="gzip-compressed but not named .gz; rename it"):
        read_idx(path)


def test_cut_gzip_stream(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_raw_idx(tmp_path))[:100])
    with pytest.raises(DataError, match=f"{path}: corrupt or truncated gzip data"):
        read_idx(path)


@pytest.mark.parametrize("name", ["empty-idx1-ubyte", "empty-idx1-ubyte.gz"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(DataError, match=f"{path}: empty file"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope: no such file"):
        read_idx(tmp_path / "nope")


# ----- folders ---------------------------------------------------------------
def test_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = balanced_labels(3)
    write_split(raw, "t10k", labels, gz=True)
    images_path, labels_path = find_idx_files(tmp_path, "mnist", "test")
    assert images_path == raw / "t10k-images-idx3-ubyte.gz"
    assert labels_path == raw / "t10k-labels-idx1-ubyte.gz"
    split = load_idx_split(tmp_path, "mnist", "test")
    assert split.images.dtype == torch.uint8 and split.images.shape == (30, 1, 28, 28)
    assert split.labels.dtype == torch.int64 and split.labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(split.images[:, 0].numpy(), fake_images(labels))
    assert split.source == str(raw)


def test_fashion_layouts(tmp_path):
    # torchvision's FashionMNIST/raw, raw files
    write_split(tmp_path / "a" / "FashionMNIST" / "raw", "train", balanced_labels(2), gz=False)
    assert len(load_idx_split(tmp_path / "a", "fashion-mnist", "train")) == 20
    # Debian's layout: the files side by side in <root>/fashion-mnist
    write_split(tmp_path / "b" / "fashion-mnist", "t10k", balanced_labels(1), gz=True)
    assert len(load_idx_split(tmp_path / "b", "fashion-mnist", "test")) == 10
    assert len(load_idx_split(tmp_path / "b" / "fashion-mnist", "fashion-mnist", "test")) == 10


def test_raw_file_preferred_over_gz(tmp_path):
    write_split(tmp_path, "t10k", balanced_labels(1), gz=True)
    write_split(tmp_path, "t10k", balanced_labels(2), gz=False)
    images_path, _ = find_idx_files(tmp_path, "mnist", "test")
    assert images_path.name == "t10k-images-idx3-ubyte"
    assert len(load_idx_split(tmp_path, "mnist", "test")) == 20


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=f"data folder {tmp_path / 'absent'} does not exist"):
        load_idx_split(tmp_path / "absent", "mnist", "train")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_idx_split(tmp_path / "file", "mnist", "train")


def test_folder_without_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_idx_split(tmp_path, "mnist", "test")
    assert str(e.value) == (
        f"no t10k-images-idx3-ubyte[.gz] in {tmp_path}, {tmp_path}/MNIST/raw or {tmp_path}/mnist"
    )
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", fake_images(balanced_labels(1)))
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        load_idx_split(tmp_path, "mnist", "test")


def test_unknown_dataset_or_split(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'kmnist'"):
        find_idx_files(tmp_path, "kmnist", "train")
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        find_idx_files(tmp_path, "mnist", "val")


def test_count_mismatch(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", fake_images(balanced_labels(2)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", balanced_labels(2)[:19])
    with pytest.raises(DataError) as e:
        load_idx_split(tmp_path, "mnist", "train")
    assert str(e.value) == (
        f"{tmp_path}/train-images-idx3-ubyte.gz holds 20 images but "
        f"{tmp_path}/train-labels-idx1-ubyte.gz holds 19 labels"
    )


def test_images_not_28x28(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 32, 32), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: images are 32x32, expected 28x28"):
        load_idx_split(tmp_path, "mnist", "train")


def test_images_and_labels_swapped(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(4, dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((4, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected uint8 images \(N, 28, 28\)"):
        load_idx_split(tmp_path, "mnist", "train")


def test_labels_outside_0_9(tmp_path):
    labels = balanced_labels(1)
    labels[4] = 11
    write_idx(tmp_path / "t10k-images-idx3-ubyte", fake_images(labels))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: label 11 at position 4 is outside 0-9"):
        load_idx_split(tmp_path, "mnist", "test")


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist():
    split = load_idx_split(DEBIAN_FASHION, "fashion-mnist", "test")
    assert split.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(split.labels).tolist() == [1000] * 10
    # root=/usr/share/datasets finds the same folder
    assert find_idx_files(DEBIAN_FASHION.parent, "fashion-mnist", "test")[0].parent == DEBIAN_FASHION
