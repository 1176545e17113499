"""``mnist-ssl label-efficiency``: the protocol's pieces and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mnist_ssl.cli import build_parser, main
from mnist_ssl.commands.common import build_config
from mnist_ssl.experiment.label_efficiency import finetune_epochs, labelled_subset, load_pool
from mnist_ssl.report.label_efficiency import margins, summarise

TINY = ["--classes", "0,1,2", "--test-per-class", "10", "--epochs", "1", "--finetune-steps", "4",
        "--finetune-min-epochs", "1",
        "--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2", "--quiet"]


def test_labelled_subsets_are_balanced_nested_and_seeded():
    labels = np.repeat(np.arange(3), 50)
    a5, a10 = labelled_subset(labels, 5, seed=0), labelled_subset(labels, 10, seed=0)
    assert np.bincount(labels[a5]).tolist() == [5, 5, 5]
    for c in range(3):  # nested: the 5 of each class are the first 5 of its 10
        assert a5[labels[a5] == c].tolist() == a10[labels[a10] == c][:5].tolist()
    assert not np.array_equal(a5, labelled_subset(labels, 5, seed=1))
    assert np.array_equal(a5, labelled_subset(labels, 5, seed=0))
    assert sorted(labelled_subset(labels, None, 3).tolist()) == list(range(150))


def test_finetune_budget_in_steps_and_at_least_min_epochs():
    assert finetune_epochs(10, 32, 300) == (10, 300)  # k=1, ten classes: one step per epoch
    assert finetune_epochs(1000, 32, 320) == (32, 10)  # 32 steps per epoch
    assert finetune_epochs(1000, 8, 1000) == (8, 8)  # k=100, ten classes: 125 steps per epoch
    assert finetune_epochs(1000, 8, 1000, min_epochs=30) == (8, 30)  # the epochs win
    assert finetune_epochs(100, 8, 1000, min_epochs=30) == (8, 77)  # the steps win
    # A set longer than 125 batches gets a larger batch, so that "all" stays affordable.
    assert finetune_epochs(60000, 8, 300) == (480, 2)
    assert finetune_epochs(60000, 8, 300, min_epochs=30) == (480, 30)
    assert finetune_epochs(4000, 8, 1000, min_epochs=30) == (32, 30)


def test_the_embedded_pool_never_holds_a_test_image():
    args = build_parser().parse_args(["label-efficiency", "--classes", "0,1,2", "--test-per-class", "20"])
    pool = load_pool(build_config(args, "mae"), torch.device("cpu"))
    assert len(pool.test_images) == 60 and len(pool.images) == 3 * 500 - 60
    flat = lambda t: {bytes(row) for row in t.reshape(len(t), -1).numpy()}  # noqa: E731
    assert not flat(pool.images) & flat(pool.test_images)
    assert np.bincount(pool.labels).tolist() == [480, 480, 480]


def test_margins_against_the_no_pretraining_vit():
    rows = [{"method": m, "k": 10, "seed": s, "finetune_accuracy": a, "probe_accuracy": 0.5}
            for m, accs in (("supervised", (0.6, 0.7)), ("mae", (0.8, 0.9))) for s, a in enumerate(accs)]
    summ = summarise(rows)
    assert summ["mae"]["10"]["finetune"]["mean"] == pytest.approx(0.85)
    assert summ["mae"]["10"]["finetune"]["n"] == 2
    assert margins(summ, 10) == {"mae": pytest.approx(0.2)}


def test_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "le"
    args = ["label-efficiency", "--out", str(out), "--methods", "mae,supervised", "--labels", "1,3",
            "--seeds", "2,1", *TINY]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| mae |" in printed and "| supervised |" in printed
    for name in ("results.json", "table.md", "accuracy_vs_labels.png", "probe_vs_labels.png",
                 "pretrained/mae.safetensors", "pretrained/mae.json", "pretrained/mae.log.jsonl"):
        assert (out / name).exists(), name
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "mnist-ssl/label-efficiency/v1"
    assert res["test_images"] == 30 and res["pool_images"] == 1500 - 30
    keys = sorted((r["method"], r["k"], r["seed"]) for r in res["rows"])
    assert keys == sorted([(m, k, s) for m in ("mae", "supervised") for k, n in ((1, 2), (3, 1))
                           for s in range(n)])
    for r in res["rows"]:
        assert 0 <= r["finetune_accuracy"] <= 1 and 0 <= r["probe_accuracy"] <= 1
        assert r["n_labelled"] == 3 * r["k"]
    # The raw-pixel baselines on the same labelled images: every (baseline, k, seed), in the table too.
    base = sorted((r["method"], r["k"], r["seed"]) for r in res["baselines"])
    assert base == sorted([(b, k, s) for b in ("svm", "knn", "logreg") for k, n in ((1, 2), (3, 1))
                           for s in range(n)])
    assert all(0 <= r["accuracy"] <= 1 and r["n_labelled"] == 3 * r["k"] for r in res["baselines"])
    assert res["baseline_summary"]["knn"]["1"]["n"] == 2
    assert "| RBF SVM, raw pixels |" in printed and "| 1-NN, raw pixels |" in printed
    assert res["finetune_min_epochs"] == 1
    # --resume keeps finished rows and the pretrained encoder: nothing is trained again.
    before = (out / "pretrained" / "mae.safetensors").stat().st_mtime_ns
    assert main(args + ["--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == res["rows"]
    assert (out / "pretrained" / "mae.safetensors").stat().st_mtime_ns == before
    # Rows made before the frozen kNN was measured get it on --resume, the number a fresh row has.
    assert all(0 <= r["knn_accuracy"] <= 1 for r in res["rows"])
    assert "| mae, frozen kNN |" in printed
    old = json.loads((out / "results.json").read_text())
    for r in old["rows"]:
        del r["knn_accuracy"]
    (out / "results.json").write_text(json.dumps(old))
    assert main(args + ["--resume"]) == 0
    filled = json.loads((out / "results.json").read_text())
    assert filled["rows"] == res["rows"]
    # each command's seconds: the resumes' own, and the commands' before them kept
    assert filled["wall_time_s"]["earlier_commands_total"] >= res["wall_time_s"]["total"] > 0
    # a resume without baselines keeps the ones the earlier command computed (their seconds too)
    assert main(args + ["--resume", "--no-baselines"]) == 0
    assert json.loads((out / "results.json").read_text())["baselines"] == filled["baselines"]
    # A --resume that would mix settings is one line, and changes nothing.
    kept = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert main(args + ["--resume", "--finetune-steps", "7"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "was made with finetune_steps=" in err and "gives 7" in err, err
    assert main(args + ["--resume", "--finetune-min-epochs", "30"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "was made with finetune_min_epochs=1" in err, err
    assert (out / "results.json").read_bytes() == kept
    older = json.loads(kept)
    del older["finetune_min_epochs"]  # a results.json from before the field: another budget rule
    (out / "results.json").write_text(json.dumps(older))
    assert main(args + ["--resume"]) == 2
    assert "finetune_min_epochs" in capsys.readouterr().err
    (out / "results.json").write_bytes(kept)
    assert main(args + ["--resume", "--set", "mae.mask_ratio=0.6"]) == 2  # a ratio no preset uses
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "mae.safetensors was pretrained with mae.mask_ratio=" in err and "this command gives 0.6" in err, err
    assert (out / "results.json").read_bytes() == kept
    assert (out / "pretrained" / "mae.safetensors").stat().st_mtime_ns == before
    (out / "pretrained" / "mae.json").write_text("{not json")
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "mae.json is not valid JSON" in err, err
    assert (out / "results.json").read_bytes() == kept


def test_resume_into_a_fresh_folder_runs_the_whole_job(tmp_path, capsys):
    # --resume with nothing to resume is a plain run (it once ended in a traceback after the
    # rows were written, because the rows it had just written looked like an earlier command's).
    out = tmp_path / "fresh"
    assert main(["label-efficiency", "--out", str(out), "--methods", "supervised", "--labels", "1",
                 "--seeds", "1", "--no-baselines", "--resume", *TINY]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["k"], r["seed"]) for r in res["rows"]] == [("supervised", 1, 0)]
    assert "summary" in res and (out / "table.md").exists()
    assert "| supervised |" in capsys.readouterr().out


def test_all_labels_means_the_whole_pool():
    args = build_parser().parse_args(["label-efficiency", "--labels", "1,all"])
    from mnist_ssl.commands.common import parse_count

    assert [parse_count(k, "--labels") for k in args.labels.split(",")] == [1, None]
    labels = np.repeat(np.arange(3), 7)
    assert len(labelled_subset(labels, None, 0)) == 21


def test_bad_seed_counts_are_one_line_errors(tmp_path, capsys):
    base = ["label-efficiency", "--out", str(tmp_path / "x"), "--labels", "1,5", *TINY]
    assert main(base + ["--seeds", "2,x"]) == 2
    assert main(base + ["--seeds", "1,2,3"]) == 2
    assert "seed counts" in capsys.readouterr().err
    assert main(base + ["--seeds", "1", "--set", "data.pretrain_on=pool"]) == 2
    assert "data.pretrain_on does not apply to label-efficiency" in capsys.readouterr().err
    assert not (tmp_path / "x" / "results.json").exists()
    assert main(base + ["--seeds", "1", "--finetune-min-epochs", "0"]) == 2
    assert "--finetune-min-epochs 0: must be >= 1" in capsys.readouterr().err


def test_default_seed_counts_follow_the_budgets(tmp_path, capsys):
    # `--labels 10` alone must run (it used to meet the five-entry default 3,3,3,1,1 and stop):
    # small budgets get 3 seeds, larger ones 1, which gives 3,3,3,1,1 for the default budgets.
    out = tmp_path / "one"
    assert main(["label-efficiency", "--out", str(out), "--methods", "supervised", "--labels", "1",
                 "--no-baselines", *TINY]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["k"], r["seed"]) for r in rows] == [(1, 0), (1, 1), (1, 2)]
    out = tmp_path / "big"
    assert main(["label-efficiency", "--out", str(out), "--methods", "supervised", "--labels", "11",
                 "--no-baselines", *TINY]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["k"], r["seed"]) for r in rows] == [(11, 0)]


def test_a_budgets_seeds_fine_tune_batched_as_they_would_one_at_a_time(tmp_path, capsys):
    """The default trains a budget's seeds as one batched model; ``run.batch_models=false`` one at a
    time. The probes are the same numbers; the fine-tuned accuracies are within a test image of
    30 (only the batched kernels' rounding differs); the semi-supervised stage runs after either."""
    rows = {}
    for batch in ("true", "false"):
        out = tmp_path / batch
        assert main(["label-efficiency", "--out", str(out), "--methods", "mae,supervised", "--labels", "2",
                     "--seeds", "2", "--no-baselines", "--set", f"run.batch_models={batch}",
                     "--set", "semi.enabled=true", "--set", "semi.epochs=1", *TINY]) == 0
        rows[batch] = {(r["method"], r["seed"]): r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert sorted(rows["true"]) == sorted(rows["false"]) == [(m, s) for m in ("mae", "supervised") for s in (0, 1)]
    for key, b in rows["true"].items():
        u = rows["false"][key]
        assert b["batched_finetune"] == {"seeds": [0, 1]} and "batched_finetune" not in u
        assert b["probe_accuracy"] == u["probe_accuracy"]
        assert abs(b["finetune_accuracy"] - u["finetune_accuracy"]) <= 1 / 30 + 1e-6, key
        assert 0 <= b["semi_accuracy"] <= 1 and b["semi_kind"] == "distill"
        # The stage's curve is kept in the row (no log.jsonl is written for label-efficiency rows).
        assert [e["epoch"] for e in b["semi_epochs"]] == [1] and b["semi_epochs"][0]["loss"] > 0
