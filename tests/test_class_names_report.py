"""An image folder's class names (its subfolders) reach the report: tables, confusion matrices,
feature maps, the misclassified figure, and label-efficiency's table; the metrics schema takes
them. MNIST's digits stay numbers."""

from __future__ import annotations

import json
import re

import pytest

from mnist_ssl.cli import main
from mnist_ssl.report import plots
from mnist_ssl.report.label_efficiency import format_table
from mnist_ssl.report.report import build_report, collect
from mnist_ssl.report.schema import METRICS_SCHEMA, validate_metrics, validate_run_metrics
from tests.data.builders import write_image_folder

NAMES = ["cat", "dog", "fox"]
TINY = ["--set", "model.dim=16", "--set", "model.depth=1", "--set", "model.heads=2",
        "--set", "finetune.batch_size=8", "--set", "finetune.warmup_epochs=0", "--set", "eval.tta_views=0",
        "--epochs", "1", "--threads", "1", "--quiet", "--classes", "all",
        "--train-per-class", "4", "--test-per-class", "4"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One reproduce job (supervised, one seed, one epoch) on a cat/dog/fox image folder."""
    root = tmp_path_factory.mktemp("names")
    write_image_folder(root / "pets", classes=NAMES, per_class=8, size=28, mode="RGB")
    out = root / "out"
    code = main(["reproduce", "--data", str(root / "pets"), "--methods", "supervised", "--seeds", "1",
                 "--out", str(out), *TINY])
    assert code in (0, None)
    return out


@pytest.mark.slow  # the one reproduce job the module shares
def test_report_names_the_folder_classes(job, monkeypatch):
    seen: dict = {}

    def spy(name):
        draw = getattr(plots, name)

        def wrapper(*args, **kw):
            seen[name] = (args, kw)
            return draw(*args, **kw)
        return wrapper

    for name in ("plot_confusion_grid", "plot_feature_maps", "plot_misclassified"):
        monkeypatch.setattr(plots, name, spy(name))
    md_path, html_path = build_report(job)
    md, page = open(md_path, encoding="utf-8").read(), open(html_path, encoding="utf-8").read()

    assert "Classes: cat, dog, fox." in md
    assert "| method | cat | dog | fox |" in md  # recall per class, a column per class
    assert "| supervised |" in md.split("### Recall % per class")[1].split("##")[0]
    assert "| svm |" in md.split("### Recall % per class")[1].split("##")[0]  # the baselines too
    assert "in the order cat, dog, fox" in md
    assert "<th>cat</th><th>dog</th><th>fox</th>" in page

    confusions, classes = seen["plot_confusion_grid"][0][:2]
    assert list(classes) == NAMES and set(confusions) == {"supervised", "svm", "knn", "logreg"}
    assert list(seen["plot_feature_maps"][0][2]) == NAMES
    errors = seen["plot_misclassified"][0][0]["supervised"][1]
    assert errors, "one epoch on random pixels gets some test images wrong"
    assert all(re.fullmatch(r"s0: (cat|dog|fox)→(cat|dog|fox)", label) for _, label in errors)


@pytest.mark.slow  # the one reproduce job the module shares
def test_metrics_files_keep_the_names_and_stay_valid(job):
    metrics = json.loads((job / "metrics.json").read_text())
    assert validate_metrics(metrics) == []
    assert metrics["config"]["supervised"]["data"]["class_names"] == NAMES
    run = json.loads((job / "runs" / "supervised" / "seed0" / "metrics.json").read_text())
    assert validate_run_metrics(run) == []
    assert run["class_names"] == NAMES
    assert all(entry["class_names"] == NAMES for entry in metrics["runs"] + metrics["baselines"])
    assert collect(job).class_labels == NAMES


@pytest.mark.slow  # the one reproduce job the module shares
def test_schema_takes_class_names_of_the_right_length(job):
    run = json.loads((job / "runs" / "supervised" / "seed0" / "metrics.json").read_text())
    assert validate_run_metrics({**run, "class_names": NAMES}) == []
    assert validate_run_metrics({**run, "class_names": NAMES[:2]}) == ["run.class_names: 2 names but 3 classes"]
    assert validate_run_metrics({**run, "class_names": [1, 2, 3]}) == [
        "run.class_names: expected a list of at least two strings"]
    assert METRICS_SCHEMA["properties"]["runs"]["items"]["properties"]["class_names"]["items"] == {"type": "string"}
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate({**json.loads((job / "metrics.json").read_text()),
                         "runs": [{**run, "class_names": NAMES}]}, METRICS_SCHEMA)


@pytest.mark.slow  # the one reproduce job the module shares
def test_report_takes_the_names_an_entry_carries(job, tmp_path):
    """A run entry's own ``class_names`` come before the config's."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(job, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["runs"][0]["class_names"] = ["Cat", "Dog", "Fox"]
    (copy / "metrics.json").write_text(json.dumps(metrics))
    assert collect(copy).class_labels == ["Cat", "Dog", "Fox"]


@pytest.mark.slow  # the one reproduce job the module shares
def test_digits_stay_numbers_in_the_report(job, tmp_path):
    import shutil

    copy = tmp_path / "digits"
    shutil.copytree(job, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["config"]["supervised"]["data"]["class_names"] = None  # as MNIST's config has it
    for entry in metrics["runs"] + metrics["baselines"]:
        entry.pop("class_names")  # and as MNIST's entries have it: no names
    (copy / "metrics.json").write_text(json.dumps(metrics))
    folder = collect(copy)
    assert folder.class_labels == ["0", "1", "2"] and not folder.named_classes
    md = open(build_report(copy)[0], encoding="utf-8").read()
    assert "| method | 0 | 1 | 2 |" in md and "Classes:" not in md and "in the order" not in md


def test_label_efficiency_table_names_the_classes():
    result = {"rows": [{"method": "supervised", "k": 2, "seed": 0, "finetune_accuracy": 0.5, "probe_accuracy": 0.4}],
              "labels_per_class": [2], "pool_images": 24, "test_images": 12, "classes": [0, 2],
              "data": {"class_names": NAMES, "classes": [0, 2]}}
    assert format_table(result).splitlines()[0].endswith("24 pool images, 12 test images; classes cat, fox.")
    result["data"]["class_names"] = None
    assert format_table(result).splitlines()[0].endswith("24 pool images, 12 test images.")
