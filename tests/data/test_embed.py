"""`embed`: every image of a data set through a frozen encoder, to a .npz with labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mnist_ssl
from mnist_ssl.config import ModelConfig
from mnist_ssl.embed import embed
from mnist_ssl.engine.checkpoint import save_checkpoint
from mnist_ssl.errors import DataError
from mnist_ssl.models.vit import ViTEncoder

from .builders import write_image_folder, write_npz


def _checkpoint(tmp_path, **model):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, depth=1, heads=2, **model)
    return save_checkpoint(tmp_path / "pretrained", torch.nn.ModuleDict({"encoder": ViTEncoder(cfg)}),
                           kind="objective", model=cfg, extra={"method": "mae"})


def test_embed_npz_rgb(tmp_path):
    arrays = write_npz(tmp_path / "d.npz", rgb=True)
    ckpt = _checkpoint(tmp_path, in_chans=3)
    summary = embed(ckpt, str(tmp_path / "d.npz"), tmp_path / "f.npz")
    assert summary["splits"] == {"train": 6, "val": 4, "test": 5}
    with np.load(tmp_path / "f.npz") as z:
        assert z["x"].shape == (15, 32) and z["x"].dtype == np.float32
        assert z["split"].tolist() == ["train"] * 6 + ["val"] * 4 + ["test"] * 5
        assert z["y"].tolist()[:6] == [0, 1, 2, 0, 1, 2] and z["classes"].tolist() == ["0", "1", "2"]
        test_images = torch.from_numpy(arrays["test_images"]).permute(0, 3, 1, 2)
        expected = mnist_ssl.features(mnist_ssl.load_encoder(ckpt), test_images)
        np.testing.assert_allclose(z["x"][10:], expected.numpy(), atol=1e-6)


def test_embed_unlabelled_folder_and_shape_mismatch(tmp_path):
    write_image_folder(tmp_path / "d", classes=("a",), per_class=3, size=32, mode="L")
    ckpt = _checkpoint(tmp_path, image_size=32)
    for p in (tmp_path / "d" / "a").iterdir():  # move the images up: no class folders left
        p.rename(tmp_path / "d" / p.name)
    embed(ckpt, str(tmp_path / "d"), tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as z:
        assert z["y"].tolist() == [-1] * 3 and z["classes"].tolist() == []
    with pytest.raises(DataError, match=r"shape \(1, 28, 28\) \(C, H, W\) but the encoder .* takes \(1, 32, 32\)"):
        embed(ckpt, "embedded", tmp_path / "g.npz")
    assert not (tmp_path / "g.npz").exists()
