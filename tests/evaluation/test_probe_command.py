"""`mnist-ssl probe`: the frozen evaluation of any checkpoint on any sample, the same protocol a run uses."""

import json

import numpy as np
import pytest
import torch

from mnist_ssl.cli import main
from mnist_ssl.config import ModelConfig
from mnist_ssl.evaluation.probe import extract_features, linear_probe_cv
from mnist_ssl.experiment.run import run_experiment
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.registry import RunConfig


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    cfg = RunConfig(method="mae", seed=3)
    cfg.model.dim, cfg.model.depth, cfg.model.heads = 32, 1, 2
    cfg.data.train_per_class, cfg.data.test_per_class = 10, 10
    cfg.pretrain.epochs, cfg.finetune.epochs = 2, 1
    cfg.eval.tta_views = 0
    out = tmp_path_factory.mktemp("probe") / "mae"
    return out, run_experiment(cfg, out, quiet=True)


def test_probe_gives_the_runs_own_frozen_numbers(mae_run, tmp_path, capsys):
    run, metrics = mae_run
    out = tmp_path / "p.json"
    code = main(["probe", "--checkpoint", str(run / "pretrained.safetensors"), "--train-per-class", "10",
                 "--test-per-class", "10", "--seed", "3", "--features", "cls,cls+mean", "--pixels",
                 "--out", str(out), "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r == json.loads(out.read_text())
    assert (r["n_train"], r["n_test"], r["classes"], r["method"]) == (30, 30, [0, 1, 2], "mae")
    cls = r["features"]["cls"]
    # The same sample, encoder and protocol as the run's frozen evaluation: the same numbers.
    for key in ("linear_probe_cv", "knn", "knn_weighted"):
        assert cls["pretrained"][key]["accuracy"] == metrics[key]["accuracy"]
        assert cls["random_init"][key]["accuracy"] == metrics["random_init"][key]["accuracy"]
    assert cls["pretrained"]["dim"] == 32 and r["features"]["cls+mean"]["pretrained"]["dim"] == 64
    assert r["pixels"]["knn"]["k"] == 1 and 0 <= r["pixels"]["linear_probe_cv"]["accuracy"] <= 1


def test_probe_prints_a_table(mae_run, capsys):
    run, _ = mae_run
    assert main(["probe", "--checkpoint", str(run), "--train-per-class", "5", "--test-per-class", "5",
                 "--no-random-init", "--holdout", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "15 training and 15 test images" in text and "random_init" not in text
    assert "hold-out of the training rows" in text


@pytest.mark.parametrize("flags, message", [(["--holdout", "1.5"], "--holdout 1.5"),
                                            (["--features", "cls,max"], "--features"),
                                            (["--knn-k", "0"], "--knn-k 0")])
def test_bad_probe_flags_give_one_line_and_write_nothing(mae_run, tmp_path, capsys, flags, message):
    run, _ = mae_run
    out = tmp_path / "p.json"
    assert main(["probe", "--checkpoint", str(run), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_pooled_features_are_the_cls_and_mean_patch_tokens():
    torch.manual_seed(0)
    enc = ViTEncoder(ModelConfig(dim=16, depth=1, heads=2)).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        h = enc.encode(x)
    torch.testing.assert_close(extract_features(enc, x, pool="cls"), h[:, 0])
    torch.testing.assert_close(extract_features(enc, x, pool="mean"), h[:, 1:].mean(1))
    both = extract_features(enc, x, pool="cls+mean")
    torch.testing.assert_close(both, torch.cat([h[:, 0], h[:, 1:].mean(1)], 1))
    with pytest.raises(ValueError, match="pool"):
        extract_features(enc, x, pool="max")


def test_last4_features_are_each_blocks_cls_and_mean_through_the_final_norm():
    torch.manual_seed(0)
    enc = ViTEncoder(ModelConfig(dim=16, depth=5, heads=2)).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        h = torch.cat([enc.cls_token.expand(4, -1, -1), enc.tokens(x)], 1)
        per_block = []
        for block in enc.blocks:
            h = block(h)
            n = enc.norm(h)
            per_block.append(torch.cat([n[:, 0], n[:, 1:].mean(1)], 1))
    feats = extract_features(enc, x, pool="last4")
    assert feats.shape == (4, 2 * 16 * 4)  # blocks 2-5 of 5
    torch.testing.assert_close(feats, torch.cat(per_block[1:], 1))
    # The last block's part is the cls+mean feature; a shallower encoder gives all its blocks.
    torch.testing.assert_close(feats[:, -32:], extract_features(enc, x, pool="cls+mean"))
    shallow = ViTEncoder(ModelConfig(dim=16, depth=2, heads=2)).eval()
    assert extract_features(shallow, x, pool="last4").shape == (4, 2 * 16 * 2)


def test_holdout_chooses_C_on_training_rows_only():
    rng = np.random.default_rng(0)
    xtr, ytr = rng.normal(size=(120, 5)), np.repeat(np.arange(3), 40)
    xtr[:, 0] += ytr * 1.5
    xte, yte = rng.normal(size=(30, 5)), rng.integers(0, 3, size=30)
    a = linear_probe_cv(xtr, ytr, xte, yte, holdout=0.25)
    b = linear_probe_cv(xtr, ytr, xte, rng.permutation(yte), holdout=0.25)
    assert a["C"] == b["C"] and a["cv_accuracy"] == b["cv_accuracy"] and a["folds"] == 1
    assert "0.25 hold-out" in a["C_chosen_by"]
    with pytest.raises(ValueError, match="holdout"):
        linear_probe_cv(xtr, ytr, xte, yte, holdout=1.0)
