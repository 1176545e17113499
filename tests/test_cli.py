"""The command line as a user meets it: exit codes, one-line errors, files written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_ssl.cli import main

TINY = ["--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2",
        "--train-per-class", "10", "--test-per-class", "10", "--epochs", "1", "--quiet"]


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    code = main(["reproduce", "--methods", "mae,supervised", "--out", str(out), *TINY])
    assert code == 0
    return out


def test_reproduce_writes_the_run_folder(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["schema"] == "mnist-ssl/metrics/v1"
    methods = {r["method"] for r in m["runs"]}
    assert methods == {"mae", "supervised"}
    for r in m["runs"]:
        assert {"method", "seed", "accuracy", "n_test", "checkpoint"} <= set(r)
        assert r["n_test"] == 30
        assert (tiny_run / r["checkpoint"]).exists()
    run = tiny_run / "runs" / "mae" / "seed0"
    for name in ("config.json", "log.jsonl", "pretrained.safetensors", "pretrained.json",
                 "finetuned.safetensors", "finetuned.json", "metrics.json", "loss_curve.png",
                 "confusion.png", "reconstruction.png"):
        assert (run / name).exists(), name
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log] == ["pretrain", "finetune"]
    assert {r["method"] for r in m["baselines"]} == {"svm", "knn", "logreg"}
    # What decides the last digits on a CPU: the thread count and torch's vector-kernel level.
    assert m["machine"]["torch_threads"] == 1
    assert m["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_reproduce_prints_epochs_accuracy_and_confusion(tmp_path, capsys):
    code, out, _ = run_cli("reproduce", "--methods", "mae", "--out", tmp_path / "r", "--no-baselines",
                           "--no-report", *[a for a in TINY if a != "--quiet"], capsys=capsys)
    assert code == 0
    assert "Epoch 1/1, Loss: " in out
    assert "Epoch 1/1, Train Loss: " in out
    assert "Test Accuracy: " in out and "Confusion Matrix:\n[[" in out


def test_evaluate_json(tiny_run, capsys):
    ckpt = tiny_run / "runs" / "mae" / "seed0" / "finetuned.safetensors"
    code, out, _ = run_cli("evaluate", "--checkpoint", ckpt, "--json", capsys=capsys)
    assert code == 0
    r = json.loads(out)
    assert r["n"] == 300 and r["classes"] == [0, 1, 2]
    assert sum(map(sum, r["confusion"])) == 300


def test_evaluate_with_tta_gives_the_runs_own_tta_accuracy(tiny_run, capsys):
    run = tiny_run / "runs" / "mae" / "seed0"
    code, out, _ = run_cli("evaluate", "--checkpoint", run / "finetuned.safetensors", "--tta", "8", "--json",
                           "--test-per-class", "10", capsys=capsys)  # the run's test sample
    assert code == 0
    assert json.loads(out)["tta"] == json.loads((run / "metrics.json").read_text())["tta"]


def test_no_tta_for_a_classifier_fine_tuned_without_augmentation(tmp_path, capsys):
    # Augmented copies are views such a classifier never saw: the document's 15 + 15 MAE lost
    # 7 points with them (96.00 -> 88.67), so the run records no TTA and evaluate refuses it.
    out = tmp_path / "r"
    code = main(["reproduce", "--methods", "supervised", "--out", str(out), "--no-baselines", "--no-report",
                 "--set", "finetune_augment.enabled=false", *TINY])
    assert code == 0
    run = out / "runs" / "supervised" / "seed0"
    assert json.loads((run / "metrics.json").read_text())["tta"] is None
    capsys.readouterr()
    code, out_text, err = run_cli("evaluate", "--checkpoint", run / "finetuned.safetensors", "--tta", "8",
                                  capsys=capsys)
    assert code == 2 and out_text == ""
    assert err.count("\n") == 1 and "fine-tuned without augmentation" in err


def test_evaluate_all_test(tiny_run, capsys):
    ckpt = tiny_run / "runs" / "mae" / "seed0" / "finetuned.safetensors"
    code, out, _ = run_cli("evaluate", "--checkpoint", ckpt, "--all-test", "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out)["n"] > 300


def test_finetune_from_pretrained(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "runs" / "mae" / "seed0" / "pretrained.safetensors"
    code, out, _ = run_cli("finetune", "--checkpoint", ckpt, "--out", tmp_path / "ft", "--epochs", "1",
                           "--train-per-class", "10", "--quiet", capsys=capsys)
    assert code == 0
    assert (tmp_path / "ft" / "finetuned.safetensors").exists()


def test_pretrain_only(tmp_path, capsys):
    code, out, _ = run_cli("pretrain", "--method", "mae", "--out", tmp_path / "p", *TINY, capsys=capsys)
    assert code == 0
    assert (tmp_path / "p" / "pretrained.safetensors").exists()
    assert not (tmp_path / "p" / "finetuned.safetensors").exists()


@pytest.mark.parametrize("args,message", [
    (["reproduce", "--methods", "bogus"], "unknown method 'bogus'"),
    (["reproduce", "--classes", "0,1,12"], "class 12 is not a digit 0-9"),
    (["reproduce", "--classes", "1,1,2"], "repeats a class"),
    (["reproduce", "--classes", "a,b"], "'a' is not a digit"),
    (["reproduce", "--train-per-class", "600"], "train_per_class=600"),
    (["reproduce", "--train-per-class", "0"], "must be >= 1"),
    (["reproduce", "--set", "mae.mask_ratio=1.0"], "mae.mask_ratio=1.0 must be strictly between 0 and 1"),
    (["reproduce", "--set", "mae.mask_ratio=0"], "strictly between 0 and 1"),
    (["reproduce", "--set", "infonce.temperature=0"], "temperature=0"),
    (["reproduce", "--epochs", "0"], "epochs=0 must be > 0"),
    (["reproduce", "--set", "pretrain.batch_size=-4"], "batch_size=-4 must be > 0"),
    (["reproduce", "--set", "finetune.lr=0"], "finetune.lr=0"),
    (["reproduce", "--set", "model.patch_size=5"], "patch_size=5 does not divide"),
    (["reproduce", "--set", "model.heads=3"], "heads=3 does not divide"),
    (["reproduce", "--set", "model.frames=0"], "frames=0"),
    (["reproduce", "--set", "nonsense.key=1"], "unknown config key"),
    (["reproduce", "--data", "/nonexistent/folder"], "/nonexistent/folder"),
    (["evaluate", "--checkpoint", "/nonexistent/x.safetensors"], "does not exist"),
    (["evaluate", "--checkpoint", "/nonexistent/x.safetensors", "--tta", "-1"], "--tta -1: must be >= 0"),
    (["reproduce", "--set", "eval.tta_views=-1"], "eval.tta_views=-1 must be >= 0"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    out_dir = tmp_path / "out"
    extra = ["--out", str(out_dir), "--quiet"] if args[0] == "reproduce" else []
    code, out, err = run_cli(*args, *extra, capsys=capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.rglob("*.safetensors"))


def test_existing_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("precious")
    code, _, err = run_cli("reproduce", "--out", tmp_path / "r", *TINY, capsys=capsys)
    assert code == 2 and "already exists" in err
    assert (tmp_path / "r" / "keep.txt").read_text() == "precious"


def test_module_entry_point_and_help():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    r = subprocess.run([sys.executable, "-m", "mnist_ssl", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0
    for cmd in ("reproduce", "pretrain", "finetune", "evaluate", "download", "report"):
        assert cmd in r.stdout
        r2 = subprocess.run([sys.executable, "-m", "mnist_ssl", cmd, "--help"], capture_output=True,
                            text=True, env=env)
        assert r2.returncode == 0 and "usage:" in r2.stdout


def test_finetune_accepts_a_pretraining_run_folder(tiny_run, tmp_path, capsys):
    folder = tiny_run / "runs" / "mae" / "seed0"
    code, _, err = run_cli("finetune", "--checkpoint", folder, "--out", tmp_path / "ft", "--epochs", "1",
                           "--train-per-class", "10", "--quiet", capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "ft" / "finetuned.safetensors").exists()


def test_finetune_takes_new_dropout_and_refuses_architecture_changes(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "runs" / "mae" / "seed0" / "pretrained.safetensors"
    common = ["--epochs", "1", "--train-per-class", "10", "--quiet"]
    code, _, err = run_cli("finetune", "--checkpoint", ckpt, "--out", tmp_path / "ft", *common,
                           "--set", "model.dropout=0", capsys=capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert saved["model"]["dropout"] == 0.0  # applied, not silently replaced by the checkpoint's 0.1
    code, _, err = run_cli("finetune", "--checkpoint", ckpt, "--out", tmp_path / "ft2", *common,
                           "--set", "model.depth=3", capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "model.depth=3" in lines[0] and "depth=1" in lines[0], err
    assert not (tmp_path / "ft2").exists()


def test_set_dropout_changes_every_dropout_of_a_built_encoder():
    from mnist_ssl.config import ModelConfig
    from mnist_ssl.models.layers import Attention, Dropout
    from mnist_ssl.models.vit import ViTEncoder

    encoder = ViTEncoder(ModelConfig(dim=32, depth=2, heads=2, dropout=0.1))
    encoder.set_dropout(0.0, 0.2)
    assert {m.p for m in encoder.modules() if isinstance(m, Dropout)} == {0.0}
    assert {m.attn_dropout for m in encoder.modules() if isinstance(m, Attention)} == {0.2}
    assert (encoder.cfg.dropout, encoder.cfg.attn_dropout) == (0.0, 0.2)
    x = torch.rand(2, 1, 28, 28)
    encoder.train()
    encoder.set_dropout(0.0, 0.0)
    assert torch.equal(encoder(x), encoder(x))  # no dropout left: training mode is deterministic


@pytest.mark.parametrize("preset", sorted((Path(__file__).parents[1] / "configs").glob("*.json")),
                         ids=lambda p: p.name)
def test_every_shipped_config_preset_loads_for_every_method(preset):
    # The README and docs/results.md send users to these files; each must stay valid.
    import argparse

    from mnist_ssl.commands.common import build_config
    from mnist_ssl.config import load_config_file
    from mnist_ssl.objectives.registry import method_names

    wanted = load_config_file(str(preset))
    for method in method_names():
        cfg = build_config(argparse.Namespace(config=str(preset)), method=method).to_dict()
        assert cfg["method"] == method
        for section, values in wanted.items():
            for key, value in values.items():
                assert cfg[section][key] == value, (preset.name, method, section, key)
