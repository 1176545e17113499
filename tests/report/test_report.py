"""report.md / report.html from a fake run folder, the metrics schema, and the plots."""

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from mnist_ssl.errors import DataError
from mnist_ssl.evaluation.metrics import classification_metrics
from mnist_ssl.report import plots
from mnist_ssl.report.report import build_report, collect, read_log
from mnist_ssl.report.schema import METRICS_SCHEMA, SCHEMA_ID, validate_metrics

CLASSES = [0, 1, 2]
N_TEST = 30  # 10 per class


def _result(method, seed, n_wrong):
    """Classification metrics with ``n_wrong`` class-0 images predicted as 1."""
    target = np.repeat(np.arange(3), N_TEST // 3)
    pred = target.copy()
    pred[:n_wrong] = 1
    return {"method": method, "seed": seed, **classification_metrics(pred, target, CLASSES)}


def _predictions(path, n_wrong):
    """predictions.npz agreeing with ``_result(..., n_wrong)``: the first class-0 images called 1."""
    y = np.repeat(np.arange(3), N_TEST // 3)
    pred = y.copy()
    pred[:n_wrong] = 1
    probs = np.eye(3, dtype=np.float32)[pred] * 0.8 + 0.2 / 3
    wrong = np.arange(n_wrong)
    images = np.random.default_rng(n_wrong).integers(0, 256, size=(n_wrong, 28, 28), dtype=np.uint8)
    np.savez(path, probs=probs, y=y, error_index=wrong, error_images=images)


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(path, np.random.default_rng(0).random((8, 8)), cmap="gray")


def make_run_folder(root, methods=("mae", "infonce", "supervised"), seeds=(0, 1), baselines=True):
    """A tiny but complete run folder, in the layout of docs/design.md."""
    rng = np.random.default_rng(0)
    runs = []
    for mi, method in enumerate(methods):
        for seed in seeds:
            d = root / "runs" / method / f"seed{seed}"
            d.mkdir(parents=True)
            e = _result(method, seed, n_wrong=(mi + seed) % 3)
            e.update(
                linear_probe={"accuracy": 0.9 + 0.01 * seed},
                knn={"accuracy": 0.92, "k": 5},
                tta={"accuracy": (N_TEST - max(0, (mi + seed) % 3 - 1)) / N_TEST, "views": 8},  # one error fewer
                checkpoint=f"runs/{method}/seed{seed}/finetuned.safetensors",
                wall_time_s={"pretrain": 1.0, "finetune": 2.0, "eval": 0.5, "total": 3.5},
            )
            runs.append(e)
            (d / "metrics.json").write_text(json.dumps(e))
            phases = ["finetune"] if method == "supervised" else ["pretrain", "finetune"]
            with open(d / "log.jsonl", "w") as f:
                for phase in phases:
                    for ep in range(3):
                        f.write(json.dumps({"phase": phase, "epoch": ep, "epochs": 3, "loss": 1.0 / (ep + 1 + seed),
                                            "terms": {"mae": 0.5 / (ep + 1)}, "lr": 1e-3, "time_s": 0.1}) + "\n")
            np.savez(d / "features.npz", x=rng.normal(size=(N_TEST, 8)), y=np.repeat(np.arange(3), N_TEST // 3))
            _predictions(d / "predictions.npz", n_wrong=(mi + seed) % 3)
            if method in ("mae", "mae-infonce", "videomae"):
                _png(d / "reconstruction.png")
            if method in ("infonce", "mae-infonce"):
                _png(d / "views.png")
    base = []
    if baselines:
        (root / "baselines").mkdir()
        for seed in seeds:
            entries = []
            for bi, m in enumerate(("svm", "knn", "logreg")):
                e = _result(m, seed, n_wrong=bi)
                e["wall_time_s"] = 0.01
                entries.append(e)
            (root / "baselines" / f"seed{seed}.json").write_text(json.dumps(entries))
            base += entries
    metrics = {
        "schema": SCHEMA_ID,
        "command": ["mnist-ssl", "reproduce", "--out", str(root)],
        "created": "2025-01-01T00:00:00+00:00",
        "versions": {"mnist-ssl": "0.1.0", "torch": "2.13.0", "numpy": "2.4.6"},
        "machine": {"platform": "Linux", "cpu_count": 2, "threads": 1},
        "config": {"method": "mae", "threads": 1, "data": {"classes": CLASSES}},
        "runs": runs,
        "baselines": base,
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    return metrics


FIGURES = ["confusion_grid.png", "loss_pretrain.png", "loss_finetune.png", "reconstruction_mae.png",
           "views_infonce.png", "feature_maps.png", "misclassified.png"]


def test_report_from_a_fake_run_folder(tmp_path):
    make_run_folder(tmp_path)
    md_path, html_path = build_report(tmp_path)
    md = Path(md_path).read_text()
    page = Path(html_path).read_text()

    for method in ("mae", "infonce", "supervised", "svm", "knn", "logreg"):
        assert re.search(rf"^\| {method} \| ", md, re.M), method
    # mae: seed 0 all right, seed 1 one wrong -> 100 and 96.67; document figure 99.00.
    assert "| mae | 98.33 ± 2.36 | 96.67 |" in md and "| 99.00 |" in md
    # Paired comparisons: every method against supervised and against svm (each pair once).
    for method, ref in [("mae", "supervised"), ("infonce", "supervised"), ("svm", "supervised"),
                        ("knn", "supervised"), ("mae", "svm"), ("infonce", "svm"), ("logreg", "svm")]:
        assert f"| {method} | {ref} | 2 |" in md, (method, ref)
    assert "| supervised | svm |" not in md
    # mae 30/30, 29/30 against supervised 28/30, 30/30: differences +6.67 and -3.33 points.
    assert "| mae | supervised | 2 | +1.67 | 7.07 | 1 / 0 / 1 |" in md
    # With TTA (one error fewer): mae 30/30 twice, supervised 29/30 and 30/30.
    assert "| mae | 98.33 ± 2.36 | 96.67 | 100.00 ± 0.00 |" in md
    assert "| supervised | 96.67 ± 4.71 | 93.33 | 98.33 ± 2.36 |" in md
    assert "| mae (TTA) | supervised (TTA) | 2 | +1.67 | 2.36 | 1 / 1 / 0 |" in md
    assert re.search(r"^\| svm \| [^|]+\| [^|]+\| – \|", md, re.M)  # no TTA for the baselines
    assert "Confusion Matrix:\n[[10  0  0]\n [ 0 10  0]\n [ 0  0 10]]" in md
    assert "mnist-ssl reproduce --out" in md and "torch" in md and "2025-01-01" in md
    assert "every file was readable" in md
    # mae wrong 0 + 1, infonce 1 + 2, supervised 2 + 0 times over the two seeds of 30 images.
    assert ("mae: 1 of 60 test images wrong over 2 seeds; infonce: 3 of 60 test images wrong over 2 seeds; "
            "supervised: 2 of 60 test images wrong over 2 seeds.") in md

    for name in FIGURES:
        assert (tmp_path / "figures" / name).is_file(), name
        assert f"figures/{name}" in md
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    assert not list(tmp_path.glob(".tmp-*")) and not list((tmp_path / "figures").glob(".tmp-*"))
    # Temporary files are created 0600; the finished report must be readable by others.
    for path in [md_path, html_path] + [tmp_path / "figures" / n for n in FIGURES]:
        assert Path(path).stat().st_mode & 0o044 == 0o044, path


def test_report_of_only_mae_without_baselines_or_optional_files(tmp_path):
    make_run_folder(tmp_path, methods=("mae",), seeds=(0,), baselines=False)
    for name in ("log.jsonl", "features.npz", "reconstruction.png", "predictions.npz"):
        (tmp_path / "runs" / "mae" / "seed0" / name).unlink()
    md_path, html_path = build_report(tmp_path)
    md = Path(md_path).read_text()
    assert re.search(r"^\| mae \| 100\.00 ± 0\.00 \|", md, re.M)
    assert "Paired comparison" not in md
    assert "1 run of 1 method, 0 baseline results." in md
    assert (tmp_path / "figures" / "confusion_grid.png").is_file()
    assert Path(html_path).read_text().count("data:image/png;base64,") == 1


def test_corrupt_optional_files_are_skipped_and_listed(tmp_path):
    make_run_folder(tmp_path, methods=("mae", "supervised"), seeds=(0,))
    d = tmp_path / "runs" / "mae" / "seed0"
    (d / "features.npz").write_bytes(b"not a zip")
    with open(d / "log.jsonl", "a") as f:
        f.write('{"phase": "finetune", "epo')  # a run killed mid-write
    (tmp_path / "baselines" / "seed0.json").write_text("[{")
    # supervised seed 0 got 1 of 30 wrong; a predictions file with 2 wrong does not belong to it.
    _predictions(tmp_path / "runs" / "supervised" / "seed0" / "predictions.npz", n_wrong=2)
    md = Path(build_report(tmp_path)[0]).read_text()
    assert "runs/mae/seed0/features.npz: skipped" in md
    assert "runs/supervised/seed0/predictions.npz: skipped (ValueError: 28 of 30 right, but the run's " \
           "metrics say 29 of 30)" in md
    assert "mae: 0 of 30 test images wrong over 1 seed." in md and "supervised: " not in md
    assert "| runs/mae/seed0/log.jsonl: line 7 is not a log record; skipped |" in md
    assert "baselines/seed0.json: unreadable" in md
    assert re.search(r"^\| svm \| ", md, re.M)  # still known from metrics.json


def test_predictions_whose_error_index_disagrees_are_skipped(tmp_path):
    # error_index must name exactly the images the stored probabilities get wrong; an index past
    # the end (a file from another sample) is a listed skip, never a traceback or a wrong label.
    make_run_folder(tmp_path, methods=("mae",), seeds=(1,), baselines=False)  # one image wrong
    path = tmp_path / "runs" / "mae" / "seed1" / "predictions.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(path, **{**arrays, "error_index": np.array([N_TEST + 5])})
    md = Path(build_report(tmp_path)[0]).read_text()
    assert "runs/mae/seed1/predictions.npz: skipped (ValueError: error_index does not list" in md
    assert not (tmp_path / "figures" / "misclassified.png").exists()


def test_per_run_file_disagreeing_with_metrics_json_is_flagged(tmp_path):
    make_run_folder(tmp_path, methods=("mae",), seeds=(0,), baselines=False)
    path = tmp_path / "runs" / "mae" / "seed0" / "metrics.json"
    e = json.loads(path.read_text())
    e.update(_result("mae", 0, n_wrong=2))
    path.write_text(json.dumps(e))
    folder = collect(tmp_path)
    assert folder.runs["mae"][0]["accuracy"] == 1.0
    assert any("differs from metrics.json" in n for n in folder.notes)


def test_runs_missing_from_metrics_json_are_included_and_listed(tmp_path):
    make_run_folder(tmp_path, methods=("mae",), seeds=(0, 1), baselines=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["runs"] = metrics["runs"][:1]  # the job was killed before recording seed 1
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    folder = collect(tmp_path)
    assert sorted(folder.runs["mae"]) == [0, 1]
    assert folder.notes == ["runs/mae/seed1/metrics.json: run not in metrics.json; included"]


def test_missing_or_corrupt_metrics_json_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_report(tmp_path / "nowhere")
    with pytest.raises(DataError, match="metrics.json is missing"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text('{"schema": "mnist-ssl/metrics/v1", "runs": [')
    with pytest.raises(DataError, match="corrupt"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text("[]")
    with pytest.raises(DataError, match="expected a JSON object"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text('{"schema": "other/v9"}')
    with pytest.raises(DataError, match="schema"):
        build_report(tmp_path)


def test_fake_metrics_validate_and_broken_ones_do_not(tmp_path):
    metrics = make_run_folder(tmp_path)
    assert validate_metrics(metrics) == []

    broken = copy.deepcopy(metrics)
    del broken["versions"]
    broken["runs"][0]["accuracy"] = 98.0  # percent instead of a fraction
    broken["runs"][1]["confusion"][0][0] += 1  # no longer sums to n_test
    broken["runs"][2]["ci95"] = [0.99, 0.5]
    broken["runs"].append(copy.deepcopy(broken["runs"][3]))  # duplicate (method, seed)
    broken["baselines"][0]["wall_time_s"] = {"total": 1}
    problems = validate_metrics(broken)
    text = "\n".join(problems)
    assert "missing key(s): versions" in text
    assert "runs[0].accuracy" in text
    assert "runs[1].confusion: sums to 31, n_test is 30" in text
    assert "runs[2].ci95" in text
    assert "appears twice" in text
    assert "baselines[0].wall_time_s" in text
    assert validate_metrics([]) == ["metrics.json: expected a JSON object, got list"]


def test_schema_agrees_with_jsonschema_when_installed(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    metrics = make_run_folder(tmp_path)
    jsonschema.validate(metrics, METRICS_SCHEMA)
    metrics["runs"][0]["accuracy"] = 98.0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(metrics, METRICS_SCHEMA)


def test_read_log_groups_by_phase_in_epoch_order(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"phase": "pretrain", "epoch": 1, "loss": 0.5}, {"phase": "pretrain", "epoch": 0, "loss": 1.0},
        {"phase": "finetune", "epoch": 0, "loss": 0.7}]) + "\n\n")
    logs = read_log(p)
    assert [r["loss"] for r in logs["pretrain"]] == [1.0, 0.5] and len(logs["finetune"]) == 1


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_plot_writes_a_png_atomically(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.random((3, 28, 28))
    masked = imgs.copy()
    masked[:, :14, :14] = np.nan
    clips = rng.random((2, 3, 1, 28, 28))
    logs = {"pretrain": [{"loss": 1.0, "terms": {"mae": 0.8, "nce": 0.2}}, {"loss": 0.5, "terms": {"mae": 0.4, "nce": 0.1}}],
            "finetune": [0.7, 0.3, 0.1]}
    conf = [[10, 0, 0], [1, 9, 0], [0, 2, 8]]
    calls = {
        "curves.png": lambda p: plots.plot_loss_curves(logs, p, "mae seed 0"),
        "bands.png": lambda p: plots.plot_loss_bands({"mae": [[1, 0.5, 0.2], [1.1, 0.6]], "infonce": [[3, 2, 1]]}, p, "pretrain", band="std"),
        "conf.png": lambda p: plots.plot_confusion(conf, CLASSES, p, "mae"),
        "grid.png": lambda p: plots.plot_confusion_grid({"mae": conf, "svm": conf}, CLASSES, p),
        "recon.png": lambda p: plots.plot_reconstruction(imgs, masked, imgs[:, None], p),
        "clip.png": lambda p: plots.plot_clip_reconstruction(clips, clips, clips[:, :, 0], p),
        "views.png": lambda p: plots.plot_views(imgs, imgs, imgs, p),
        "feat.png": lambda p: plots.plot_feature_maps({"mae": (rng.normal(size=(30, 5)), np.repeat([0, 1, 2], 10))}, p, CLASSES),
        "labels.png": lambda p: plots.plot_accuracy_vs_labels({"mae": {1: (0.8, 0.05), 10: (0.95, 0.02), 100: (0.99, 0.01)}}, p),
    }
    for name, call in calls.items():
        path = tmp_path / "sub" / name
        assert call(path) == str(path)
        assert _is_png(path), name
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted(calls)  # no temp files left
    with pytest.raises(ValueError):
        plots.plot_reconstruction(imgs, imgs[:2], imgs, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_pca_2d_finds_the_main_axis():
    x = np.zeros((4, 3))
    x[:, 1] = [-2, -1, 1, 2]
    coords, ratio = plots.pca_2d(x)
    np.testing.assert_allclose(np.abs(coords[:, 0]), [2, 1, 1, 2])
    assert ratio[0] == pytest.approx(1.0)


def test_the_documented_example_validates():

    doc = (Path(__file__).parents[2] / "docs" / "metrics_schema.md").read_text()
    example = re.search(r"```json\n(.*?)```", doc, re.S).group(1)
    assert validate_metrics(json.loads(example)) == []
