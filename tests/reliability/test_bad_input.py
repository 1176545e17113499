"""Every bad input: exit 2, one line on stderr naming the input and the problem, nothing written.

Cases already in tests/test_cli.py (unknown method, class outside 0-9 or
repeated, more per class than the embedded data has, mask ratio, temperature,
epochs, batch size, learning rate, patch size, heads, frames, missing
checkpoint for ``evaluate``, existing output folder) are not repeated here.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_ssl.config import ModelConfig
from mnist_ssl.data.idx import write_idx
from mnist_ssl.engine.checkpoint import save_checkpoint
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder

from .helpers import TINY, one_line_error, run_cli

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_folder(root: Path, classes=(0, 1, 2), per_class: int = 5) -> Path:
    """A valid IDX folder (raw files): ``per_class`` images of each class in each split."""
    root.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.asarray(classes, dtype=np.uint8), per_class)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    for split in ("train", "test"):
        write_idx(root / IDX_NAMES[split][0], images)
        write_idx(root / IDX_NAMES[split][1], labels)
    return root


def _truncate(root: Path) -> tuple[Path, str]:
    p = root / IDX_NAMES["train"][0]
    p.write_bytes(p.read_bytes()[:-100])
    return p, "truncated IDX file"


def _wrong_magic(root: Path) -> tuple[Path, str]:
    p = root / IDX_NAMES["train"][0]
    p.write_bytes(b"\x12\x34\x08\x03" + p.read_bytes()[4:])
    return p, "not an IDX file: magic number 0x12340803"


def _wrong_dims(root: Path) -> tuple[Path, str]:
    p = root / IDX_NAMES["train"][0]
    write_idx(p, np.zeros((15, 27, 27), dtype=np.uint8))
    return p, "images are 27x27, expected 28x28"


def _labels_not_1d(root: Path) -> tuple[Path, str]:
    p = root / IDX_NAMES["train"][1]
    write_idx(p, np.zeros((15, 2), dtype=np.uint8))
    return p, "expected uint8 labels (N,)"


def _not_gzip(root: Path) -> tuple[Path, str]:
    p = root / IDX_NAMES["train"][0]
    gz = p.with_name(p.name + ".gz")
    p.rename(gz)  # raw bytes under a .gz name
    return gz, "named .gz but is not gzip-compressed"


def _corrupt_gzip(root: Path) -> tuple[Path, str]:
    p = root / IDX_NAMES["train"][0]
    gz = p.with_name(p.name + ".gz")
    gz.write_bytes(gzip.compress(p.read_bytes())[:200])
    p.unlink()
    return gz, "corrupt or truncated gzip data"


def _counts_differ(root: Path) -> tuple[Path, str]:
    p = root / IDX_NAMES["train"][1]
    write_idx(p, np.tile(np.asarray([0, 1, 2], dtype=np.uint8), 5)[:-1])
    return p, "holds 15 images but"


def _label_outside(root: Path) -> tuple[Path, str]:
    p = root / IDX_NAMES["train"][1]
    labels = np.tile(np.asarray([0, 1, 2], dtype=np.uint8), 5)
    labels[3] = 11
    write_idx(p, labels)
    return p, "label 11 at position 3 is outside 0-9"


def _empty_folder(root: Path) -> tuple[Path, str]:
    for f in root.iterdir():
        f.unlink()
    return root, "no train-images-idx3-ubyte[.gz] in"


def _missing_folder(root: Path) -> tuple[Path, str]:
    missing = root / "nope"
    return missing, "does not exist"


def _file_not_folder(root: Path) -> tuple[Path, str]:
    return root / IDX_NAMES["train"][0], "is not a folder"


def _missing_test_files(root: Path) -> tuple[Path, str]:
    (root / IDX_NAMES["test"][1]).unlink()
    return root, "no t10k-labels-idx1-ubyte[.gz] in"


@pytest.mark.parametrize("breaker", [
    _truncate, _wrong_magic, _wrong_dims, _labels_not_1d, _not_gzip, _corrupt_gzip, _counts_differ,
    _label_outside, _empty_folder, _missing_folder, _file_not_folder, _missing_test_files,
], ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("command", ["reproduce", "pretrain"])
def test_bad_idx_data_is_refused_and_nothing_is_created(breaker, command, tmp_path, capsys):
    root = idx_folder(tmp_path / "data")
    bad, problem = breaker(root)
    out = tmp_path / "out" / "deeper"
    args = [command, "--data", root if breaker is not _missing_folder and breaker is not _file_not_folder
            else bad, "--out", out, "--train-per-class", "5", "--test-per-class", "5", *TINY]
    if command == "reproduce":
        args += ["--methods", "mae", "--no-baselines"]
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, str(bad), problem)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,problem", [
    pytest.param(["--classes", "0,1,7"], "class 7 has no images in", id="class-absent"),
    pytest.param(["--train-per-class", "6"], "data.train_per_class=6 but class 0 has only 5 images in",
                 id="train-per-class"),
    pytest.param(["--test-per-class", "9"], "data.test_per_class=9 but class 0 has only 5 images in",
                 id="test-per-class"),
])
def test_classes_and_counts_the_data_cannot_give(args, problem, tmp_path, capsys):
    root = idx_folder(tmp_path / "data")
    out = tmp_path / "out"
    base = ["--train-per-class", "5", "--test-per-class", "5"]
    code, _, err = run_cli(["reproduce", "--data", root, "--out", out, "--methods", "mae", *TINY[:6],
                            *base, *args, "--quiet"], capsys)
    one_line_error(code, err, str(root), problem)
    assert not out.exists()


def test_more_test_images_than_the_embedded_data_has(tmp_path, capsys):
    code, _, err = run_cli(["reproduce", "--out", tmp_path / "out", "--test-per-class", "501", "--quiet"], capsys)
    one_line_error(code, err, "data.test_per_class=501", "embedded MNIST sample")
    assert not (tmp_path / "out").exists()


def test_bad_data_with_overwrite_leaves_the_folder_as_it_was(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("precious")
    code, _, err = run_cli(["reproduce", "--data", tmp_path / "nope", "--out", out, "--overwrite", *TINY],
                           capsys)
    one_line_error(code, err, str(tmp_path / "nope"), "does not exist")
    assert [p.name for p in out.iterdir()] == ["metrics.json"]
    assert (out / "metrics.json").read_text() == "precious"


# ----- names and values -------------------------------------------------------
@pytest.mark.parametrize("args,needles", [
    pytest.param(["--dataset", "kmnist"], ["--dataset", "invalid choice: 'kmnist'"], id="dataset-flag"),
    pytest.param(["--set", "data.dataset=kmnist"],
                 ["data.dataset='kmnist' is not one of mnist, fashion-mnist"], id="dataset-set"),
    pytest.param(["--methods", ""], ["--methods", "no method"], id="methods-empty"),
    pytest.param(["--classes", "0,1,-3"], ["class -3 is not a digit 0-9"], id="class-negative"),
    pytest.param(["--classes", "4"], ["data.classes needs at least two classes"], id="one-class"),
    pytest.param(["--set", "videomae.mask_ratio=1.5"],
                 ["videomae.mask_ratio=1.5 must be strictly between 0 and 1"], id="videomae-mask-ratio"),
    pytest.param(["--set", "mae.mask_ratio=-0.25"], ["mae.mask_ratio=-0.25"], id="mae-mask-ratio"),
    pytest.param(["--set", "infonce.temperature=-1"], ["infonce.temperature=-1"], id="temperature"),
    pytest.param(["--set", "pretrain.epochs=-2"], ["pretrain.epochs=-2 must be > 0"], id="epochs"),
    pytest.param(["--set", "finetune.batch_size=0"], ["finetune.batch_size=0 must be > 0"], id="batch-size"),
    pytest.param(["--set", "pretrain.lr=-0.1"], ["pretrain.lr=-0.1 must be > 0"], id="lr"),
    pytest.param(["--set", "pretrain.lr=fast"],
                 ["pretrain.lr must be a number, got 'fast'"], id="lr-not-number"),
    pytest.param(["--set", "pretrain.epochs=1.5"],
                 ["pretrain.epochs must be an integer"], id="epochs-not-integer"),
    pytest.param(["--set", "model.tubelet=2"],
                 ["model.tubelet=2 does not divide model.frames=1"], id="tubelet"),
    pytest.param(["--set", "model.dim=30", "--set", "model.heads=4"],
                 ["model.heads=4 does not divide model.dim=30"], id="heads"),
    pytest.param(["--set", "model.patch_size=0"], ["model.patch_size=0 must be > 0"], id="patch-size-0"),
    pytest.param(["--set", "pretrain.grad_clip=-1"], ["pretrain.grad_clip=-1"], id="grad-clip"),
    pytest.param(["--set", "pretrain.lr"], ["expected key=value"], id="set-without-equals"),
    pytest.param(["--threads", "-1"], ["threads=-1 must be >= 0"], id="threads"),
    pytest.param(["--seeds", "0"], ["--seeds 0", ">= 1"], id="seeds"),
    pytest.param(["--first-seed", "-1"], ["--first-seed -1", ">= 0"], id="first-seed"),
    pytest.param(["--config", "/nonexistent/preset.json"],
                 ["/nonexistent/preset.json does not exist"], id="config-missing"),
    pytest.param(["--epochs", "two"], ["--epochs", "invalid int value: 'two'"], id="epochs-flag-not-int"),
])
def test_bad_values_are_refused_before_anything_is_written(args, needles, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["reproduce", "--out", out, *args, "--quiet"], capsys)
    one_line_error(code, err, *needles)
    assert not out.exists()


def test_config_file_that_is_not_json(tmp_path, capsys):
    preset = tmp_path / "preset.json"
    preset.write_text("{not json")
    code, _, err = run_cli(["reproduce", "--out", tmp_path / "out", "--config", preset], capsys)
    one_line_error(code, err, str(preset), "is not valid JSON")
    assert not (tmp_path / "out").exists()


def test_pretrain_with_unknown_method(tmp_path, capsys):
    code, _, err = run_cli(["pretrain", "--method", "bogus", "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, "unknown method 'bogus'")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_asked_for_without_cuda(tmp_path, capsys):
    code, _, err = run_cli(["reproduce", "--out", tmp_path / "out", "--device", "cuda", *TINY], capsys)
    one_line_error(code, err, "--device cuda", "no CUDA device")
    assert not (tmp_path / "out").exists()


# ----- output folders ---------------------------------------------------------
def test_output_folder_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli(["reproduce", "--out", blocker / "out", *TINY], capsys)
    one_line_error(code, err, str(blocker / "out"), "cannot be written")
    assert blocker.read_text() == "x"


def test_output_folder_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli(["reproduce", "--out", blocker, *TINY], capsys)
    one_line_error(code, err, str(blocker), "exists and is not a folder")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root can write into a read-only folder")
def test_output_folder_without_write_permission(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run_cli(["reproduce", "--out", ro, *TINY], capsys)
        one_line_error(code, err, str(ro), "cannot be written")
    finally:
        ro.chmod(0o700)


# ----- checkpoints --------------------------------------------------------------
@pytest.fixture()
def classifier_ckpt(tmp_path) -> Path:
    cfg = ModelConfig(dim=32, depth=1, heads=2, num_classes=3)
    torch.manual_seed(0)
    model = ViTClassifier(ViTEncoder(cfg), 3)
    return save_checkpoint(tmp_path / "ckpt" / "finetuned", model, kind="classifier", model=cfg,
                           extra={"classes": [0, 1, 2], "method": "mae"})


def _ckpt_missing(p: Path) -> tuple[Path, str]:
    return p.with_name("absent.safetensors"), "does not exist"


def _ckpt_truncated(p: Path) -> tuple[Path, str]:
    p.write_bytes(p.read_bytes()[:1000])
    return p, "truncated, corrupted or replaced"


def _ckpt_foreign_no_sidecar(p: Path) -> tuple[Path, str]:
    from safetensors.torch import save_file

    foreign = p.with_name("model.safetensors")
    save_file({"weight": torch.zeros(2, 2)}, str(foreign))  # someone else's safetensors file
    return foreign, "not an mnist-ssl checkpoint"


def _ckpt_foreign_sidecar(p: Path) -> tuple[Path, str]:
    p.with_suffix(".json").write_text(json.dumps({"architectures": ["BertModel"]}))
    return p, f"{p.with_suffix('.json')} is not an mnist-ssl checkpoint"


def _ckpt_sidecar_not_json(p: Path) -> tuple[Path, str]:
    p.with_suffix(".json").write_text("{")
    return p, f"{p.with_suffix('.json')} is not valid JSON"


def _ckpt_config_disagrees(p: Path) -> tuple[Path, str]:
    meta = json.loads(p.with_suffix(".json").read_text())
    meta["model"]["dim"] = 64
    meta["model"]["heads"] = 4
    p.with_suffix(".json").write_text(json.dumps(meta))
    return p, "does not fit its config: wrong shape"


def _ckpt_config_invalid(p: Path) -> tuple[Path, str]:
    meta = json.loads(p.with_suffix(".json").read_text())
    meta["model"]["heads"] = 3
    p.with_suffix(".json").write_text(json.dumps(meta))
    return p, "its config is invalid"


@pytest.mark.parametrize("breaker", [
    _ckpt_missing, _ckpt_truncated, _ckpt_foreign_no_sidecar, _ckpt_foreign_sidecar, _ckpt_sidecar_not_json,
    _ckpt_config_disagrees, _ckpt_config_invalid,
], ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_bad_checkpoints_are_refused(breaker, command, classifier_ckpt, tmp_path, capsys):
    bad, problem = breaker(classifier_ckpt)  # the problem names the sidecar where the sidecar is bad
    out = tmp_path / "ft"
    args = [command, "--checkpoint", bad]
    if command == "finetune":
        args += ["--out", out, "--epochs", "1", "--train-per-class", "5", "--quiet"]
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, str(bad.with_suffix("")), problem)
    assert not out.exists()


def test_pretrained_checkpoint_given_to_evaluate(tmp_path, capsys):
    cfg = ModelConfig(dim=32, depth=1, heads=2)
    path = save_checkpoint(tmp_path / "pretrained", ViTEncoder(cfg), kind="objective", model=cfg)
    code, _, err = run_cli(["evaluate", "--checkpoint", path], capsys)
    one_line_error(code, err, str(path), "not a fine-tuned classifier")


def test_evaluate_classes_the_checkpoint_cannot_predict(classifier_ckpt, capsys):
    code, _, err = run_cli(["evaluate", "--checkpoint", classifier_ckpt, "--classes", "0,5"], capsys)
    one_line_error(code, err, "--classes", "cannot predict [5]")


# ----- prediction inputs --------------------------------------------------------
def _has_predict() -> bool:
    from mnist_ssl.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return "predict" in sub.choices


@pytest.mark.skipif(not _has_predict(), reason="mnist-ssl predict is not in the CLI yet")
def test_prediction_input_that_is_not_an_image(classifier_ckpt, tmp_path, capsys):
    fake = tmp_path / "digit.png"
    fake.write_text("this is not a PNG")
    code, out, err = run_cli(["predict", "--checkpoint", classifier_ckpt, fake], capsys)
    one_line_error(code, err, str(fake), "not an image")
    code, out, err = run_cli(["predict", "--checkpoint", classifier_ckpt, tmp_path / "absent.png"], capsys)
    one_line_error(code, err, str(tmp_path / "absent.png"), "no such file")
