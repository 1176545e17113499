"""reproduce's closing table, and the run-folder names every stage writes."""

from __future__ import annotations

from mnist_ssl.report.summary import summary_table
from mnist_ssl.experiment.rundir import JobDir, RunDir


def _run(method: str, seed: int, acc: float, probe: float | None = None, tta: float | None = None) -> dict:
    r = {"method": method, "seed": seed, "accuracy": acc, "n_test": 300, "knn": {"accuracy": acc - 0.01},
         "tta": None if tta is None else {"accuracy": tta, "views": 8}}
    if probe is not None:
        r["linear_probe"] = {"accuracy": probe}
    return r


def test_summary_table_mean_std_over_seeds_document_column_and_baselines():
    metrics = {"runs": [_run("mae", 0, 0.97, 0.90, 0.98), _run("mae", 1, 0.99, 0.92, 0.99),
                        _run("supervised", 0, 0.95)],
               "baselines": [{"method": "svm", "seed": 0, "accuracy": 0.96},
                             {"method": "svm", "seed": 1, "accuracy": 0.98}],
               "wall_time_s": 12.5}
    lines = summary_table(metrics).splitlines()
    assert lines[0] == "| method | fine-tune % | with TTA % | linear probe % | kNN % | document % | seeds |"
    # mean ± sample std (ddof 1) in percent; the document's figure from the registry
    assert lines[2] == "| mae | 98.00 ± 1.41 | 98.50 ± 0.71 | 91.00 ± 1.41 | 97.00 ± 1.41 | 99.00 | 2 |"
    # one seed: no ±; nothing measured: "-"; no document figure for the baseline ViT
    assert lines[3] == "| supervised | 95.00 | - | - | 94.00 | - | 1 |"
    assert lines[4] == "| svm (raw pixels) | 97.00 ± 1.41 | - | - | - | - | 2 |"
    assert lines[5] == "(300 test images per seed; wall time 12.5 s)"


def test_summary_table_of_a_job_stopped_before_any_run():
    assert summary_table({"runs": [], "baselines": [], "wall_time_s": 0.1}).splitlines()[-1] == \
        "(0 test images per seed; wall time 0.1 s)"


def test_run_folder_names(tmp_path):
    job = JobDir(tmp_path)
    run = job.run("mae", 3)
    assert run.path == tmp_path / "runs" / "mae" / "seed3"
    names = {p.name for p in (run.config, run.log, run.metrics, run.pretrained_weights, run.pretrained_meta,
                              run.finetuned_weights, run.features, run.predictions, run.figure("views"))}
    assert names == {"config.json", "log.jsonl", "metrics.json", "pretrained.safetensors", "pretrained.json",
                     "finetuned.safetensors", "features.npz", "predictions.npz", "views.png"}
    assert job.baselines(3) == tmp_path / "baselines" / "seed3.json"
    assert job.relative_checkpoint(run, "/elsewhere/finetuned.safetensors") == "runs/mae/seed3/finetuned.safetensors"
    assert RunDir(tmp_path).pretrained.with_suffix(".safetensors") == tmp_path / "pretrained.safetensors"
