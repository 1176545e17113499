"""scripts/merge_label_efficiency.py: one table from label-efficiency runs of the same protocol."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "merge_label_efficiency.py"


def _run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)


def _result(methods, accuracy=0.8, baselines=True, **protocol):
    rows = [{"method": m, "k": 10, "seed": s, "n_labelled": 100, "finetune_accuracy": accuracy + 0.01 * s,
             "probe_accuracy": 0.5, "finetune_epochs": 77, "time_s": 10.0 + s} for m in methods for s in (3, 4)]
    base = [{"method": "svm", "k": 10, "seed": s, "accuracy": 0.7} for s in (3, 4)] if baselines else []
    return {"schema": "mnist-ssl/label-efficiency/v1", "command": f"mnist-ssl label-efficiency --methods {methods}",
            "data": {"source": "embedded"}, "source": "embedded", "classes": list(range(10)), "pool_images": 4000,
            "test_images": 1000, "labels_per_class": [10], "seeds": [2], "first_seed": 3, "finetune_steps": 1000,
            "finetune_min_epochs": 30, "threads": 1, "rows": rows, "baselines": base,
            "pretrain": {m: {"epochs": 5, "seed": 3} for m in methods if m != "supervised"},
            "wall_time_s": {"total": 100.0}, **protocol}


def test_merges_paired_runs_into_one_table(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result(["infonce", "supervised"])))
    b.write_text(json.dumps(_result(["mae"], accuracy=0.9, baselines=False)))
    c = tmp_path / "c.json"  # another budget of the same protocol: its rows join the table
    more = _result(["mae"], accuracy=0.5, baselines=False, labels_per_class=[1], seeds=[2])
    for row in more["rows"]:
        row["k"] = 1
    c.write_text(json.dumps(more))
    assert _run(tmp_path / "three.json", a, b, c).returncode == 0
    three = json.loads((tmp_path / "three.json").read_text())
    assert three["labels_per_class"] == [1, 10] and three["seeds"] == [2, 2] and len(three["rows"]) == 8
    out = tmp_path / "merged.json"
    done = _run(out, a, b, "--table", tmp_path / "merged.md", "--figures", tmp_path / "plots")
    assert done.returncode == 0, done.stderr
    merged = json.loads(out.read_text())
    assert sorted({r["method"] for r in merged["rows"]}) == ["infonce", "mae", "supervised"]
    assert len(merged["rows"]) == 6 and len(merged["baselines"]) == 2
    assert abs(merged["summary"]["mae"]["10"]["finetune"]["mean"] - 0.935) < 1e-9
    assert abs(merged["margins_at_10"]["mae"] - 0.1) < 1e-9
    assert [m["file"] for m in merged["merged_from"]] == [str(a), str(b)]
    assert merged["labels_per_class"] == [10] and merged["seeds"] == [2]
    assert (tmp_path / "plots" / "accuracy_vs_labels.png").stat().st_size > 0
    assert (tmp_path / "plots" / "probe_vs_labels.png").stat().st_size > 0
    table = (tmp_path / "merged.md").read_text()
    assert "| mae | 93.5 ± 0.7 (50.0) n=2 |" in table and "RBF SVM, raw pixels" in table


def test_refuses_rows_that_are_not_paired_or_that_disagree(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_result(["mae"])))
    b.write_text(json.dumps(_result(["infonce"], first_seed=5)))
    c.write_text(json.dumps(_result(["mae"], accuracy=0.6)))
    for other, words in ((b, "first_seed"), (c, "different rows")):
        done = _run(tmp_path / "out.json", a, other)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out.json").exists()
    # the same row twice (a rerun) with another time is the same row
    again = _result(["mae"])
    again["rows"][0]["time_s"] = 99.0
    b.write_text(json.dumps(again))
    assert _run(tmp_path / "out.json", a, b).returncode == 0
    # a row that a --resume completed with a measurement (its frozen kNN) is the same row, completed
    completed = _result(["mae"])
    for row in completed["rows"]:
        row["knn_accuracy"] = 0.9
    b.write_text(json.dumps(completed))
    assert _run(tmp_path / "out.json", a, b).returncode == 0
    assert all(r["knn_accuracy"] == 0.9 for r in json.loads((tmp_path / "out.json").read_text())["rows"])
