import json
import pickle

import pytest
import torch

from mnist_ssl.config import ModelConfig
from mnist_ssl.engine.checkpoint import load_classifier, load_encoder, read_checkpoint, save_checkpoint
from mnist_ssl.errors import CheckpointError
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder


def make_classifier(tmp_path, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, depth=1, heads=2, num_classes=3, **kw)
    clf = ViTClassifier(ViTEncoder(cfg), 3)
    torch.nn.init.normal_(clf.head.weight)
    path = save_checkpoint(tmp_path / "finetuned", clf, kind="classifier", model=cfg, extra={"classes": [0, 1, 2]})
    return clf, path


def test_round_trip_gives_identical_logits(tmp_path):
    clf, path = make_classifier(tmp_path)
    loaded, meta = load_classifier(path)
    x = torch.rand(5, 1, 28, 28)
    clf.eval()
    assert torch.equal(loaded(x), clf(x))
    assert meta["classes"] == [0, 1, 2]
    assert (tmp_path / "finetuned.json").exists()
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


def test_encoder_of_a_classifier(tmp_path):
    clf, path = make_classifier(tmp_path)
    enc, _ = load_encoder(path)
    clf.eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(enc.eval()(x), clf.encoder(x))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_classifier(tmp_path / "nope.safetensors")


def test_a_file_of_another_kind_is_named_as_such(tmp_path):
    # A user pointing --checkpoint at the wrong file hears about that file, not about a
    # made-up 'notes.safetensors' being missing.
    other = tmp_path / "notes.md"
    other.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.md: not a \.safetensors file"):
        load_classifier(other)


def test_truncated_checkpoint(tmp_path):
    _, path = make_classifier(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupted or replaced"):
        load_classifier(path)


def test_foreign_file_without_sidecar(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not an mnist-ssl checkpoint"):
        read_checkpoint(p)


class Boom:
    def __reduce__(self):
        return (open, (str(Boom.target), "w"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, suffix):
    Boom.target = tmp_path / "payload-ran"
    p = tmp_path / f"evil{suffix}"
    p.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        load_classifier(p)
    assert not Boom.target.exists()


def test_config_disagreeing_with_weights(tmp_path):
    _, path = make_classifier(tmp_path)
    meta_path = tmp_path / "finetuned.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["depth"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit its config: missing"):
        load_classifier(path)


def test_pretrained_checkpoint_is_not_a_classifier(tmp_path):
    cfg = ModelConfig(dim=32, depth=1, heads=2)
    save_checkpoint(tmp_path / "pretrained", ViTEncoder(cfg), kind="objective", model=cfg)
    with pytest.raises(CheckpointError, match="not a fine-tuned classifier"):
        load_classifier(tmp_path / "pretrained.safetensors")


def test_nan_weights_are_never_saved(tmp_path):
    cfg = ModelConfig(dim=32, depth=1, heads=2)
    enc = ViTEncoder(cfg)
    with torch.no_grad():
        enc.cls_token.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(tmp_path / "bad", enc, kind="objective", model=cfg)
    assert not list(tmp_path.iterdir())
