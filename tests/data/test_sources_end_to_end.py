"""`reproduce` and `label-efficiency` end to end on each kind of source, built tiny in tmp folders.

Among them an RGB 28 x 28 .npz and a 32 x 32 RGB image folder: the encoder's
``in_chans`` and ``image_size`` follow the data, and the checkpoints keep the
folder's class names.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mnist_ssl.cli import main

from .builders import write_image_folder, write_npz

pytestmark = pytest.mark.slow

TINY = ["--set", "model.dim=16", "--set", "model.depth=1", "--set", "model.heads=2",
        "--set", "pretrain.batch_size=8", "--set", "finetune.batch_size=8",
        "--set", "pretrain.warmup_epochs=0", "--set", "finetune.warmup_epochs=0",
        "--epochs", "1", "--threads", "1", "--quiet", "--classes", "all"]


def _folder_rgb32(tmp_path):
    write_image_folder(tmp_path / "pets", classes=("cat", "dog", "fox"), per_class=12, size=32, mode="RGB")
    return tmp_path / "pets", (3, 32), ["cat", "dog", "fox"], ["--train-per-class", "4", "--test-per-class", "4"]


def _folder_split_grey(tmp_path):
    write_image_folder(tmp_path / "d" / "train", classes=("a", "b"), per_class=8, size=28, mode="L")
    write_image_folder(tmp_path / "d" / "test", classes=("a", "b"), per_class=4, size=28, mode="L", seed=1)
    return tmp_path / "d", (1, 28), ["a", "b"], ["--train-per-class", "all", "--test-per-class", "all"]


def _npz_rgb28(tmp_path):
    write_npz(tmp_path / "blood.npz", n=(24, 6, 12), rgb=True, classes=3)
    return tmp_path / "blood.npz", (3, 28), ["0", "1", "2"], ["--train-per-class", "all", "--test-per-class", "all"]


SOURCES = {"imagefolder-rgb32": _folder_rgb32, "imagefolder-split-grey": _folder_split_grey,
           "npz-rgb28": _npz_rgb28}


def _run(args, capsys):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize("make", SOURCES.values(), ids=SOURCES.keys())
def test_reproduce_on_each_source(tmp_path, capsys, make):
    data, (chans, size), classes, budget = make(tmp_path)
    out = tmp_path / "out"
    _run(["reproduce", "--data", data, "--methods", "mae,supervised", "--out", out, *budget, *TINY], capsys)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["method"] for r in metrics["runs"]} == {"mae", "supervised"}
    sidecar = json.loads((out / "runs" / "mae" / "seed0" / "finetuned.json").read_text())
    assert (sidecar["model"]["in_chans"], sidecar["model"]["image_size"]) == (chans, size)
    assert sidecar["class_names"] == classes and sidecar["classes"] == list(range(len(classes)))
    import mnist_ssl

    assert mnist_ssl.load_classifier(out / "runs" / "mae" / "seed0" / "finetuned.safetensors").class_names == classes
    assert (out / "report.html").is_file()


@pytest.mark.parametrize("make", SOURCES.values(), ids=SOURCES.keys())
def test_label_efficiency_on_each_source(tmp_path, capsys, make):
    data, _, _, budget = make(tmp_path)
    out = tmp_path / "le"
    _run(["label-efficiency", "--data", data, "--methods", "mae,supervised", "--labels", "2", "--seeds", "1",
          "--finetune-steps", "2", "--finetune-min-epochs", "1", "--out", out, *budget, *TINY], capsys)
    assert any(out.iterdir())


def test_pretrain_data_unlabelled_folder(tmp_path, capsys):
    data, _, _, budget = _folder_rgb32(tmp_path)
    rng = np.random.default_rng(5)
    (tmp_path / "unlabelled").mkdir()
    for k in range(20):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "unlabelled" / f"{k}.png")
    out = tmp_path / "out"
    _run(["reproduce", "--data", data, "--pretrain-data", tmp_path / "unlabelled", "--methods", "mae",
          "--no-baselines", "--out", out, *budget, *TINY], capsys)
    log = [json.loads(line) for line in (out / "runs" / "mae" / "seed0" / "log.jsonl").read_text().splitlines()]
    assert any(r["phase"] == "pretrain" for r in log)
    meta = json.loads((out / "runs" / "mae" / "seed0" / "pretrained.json").read_text())
    assert meta["run_config"]["data"]["pretrain_source"] == str(tmp_path / "unlabelled")
    le = tmp_path / "le"
    _run(["label-efficiency", "--data", data, "--pretrain-data", tmp_path / "unlabelled", "--methods", "mae",
          "--labels", "2", "--seeds", "1", "--finetune-steps", "2", "--finetune-min-epochs", "1",
          "--no-baselines", "--out", le, *budget, *TINY], capsys)
    meta = json.loads(next(le.rglob("mae.json")).read_text())
    assert meta["pretrained_on"].startswith("20 images of ")
