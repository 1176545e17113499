"""What a run writes for the new evaluations: the frozen probes at random initialisation beside the
pretrained ones, and the semi-supervised stage's own result beside the unchanged plain one."""

import json

import pytest

from mnist_ssl.experiment.run import run_experiment
from mnist_ssl.objectives.registry import RunConfig


def tiny(method: str, **semi) -> RunConfig:
    cfg = RunConfig(method=method, seed=0)
    cfg.model.dim, cfg.model.depth, cfg.model.heads = 32, 1, 2
    cfg.data.train_per_class, cfg.data.test_per_class = 10, 10
    cfg.pretrain.epochs, cfg.finetune.epochs = 1, 2
    cfg.eval.tta_views = 0
    for k, v in semi.items():
        setattr(cfg.semi, k, v)
    return cfg


@pytest.mark.parametrize("method", ["dino", "supervised"])
def test_frozen_metrics_hold_random_init_and_the_field_variants(method, tmp_path):
    m = run_experiment(tiny(method), tmp_path, quiet=True)
    for key in ("linear_probe", "linear_probe_cv", "knn", "knn_weighted"):
        assert 0 <= m[key]["accuracy"] <= 1 and 0 <= m["random_init"][key]["accuracy"] <= 1
    assert m["knn_weighted"]["k"] == 20 and m["linear_probe_cv"]["C"] in m["linear_probe_cv"]["Cs"]
    if method == "supervised":  # its frozen encoder is its random initialisation
        assert m["random_init"]["knn"] == m["knn"]
    assert "semi" not in m
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["random_init"]["linear_probe"] == m["random_init"]["linear_probe"]


def test_semi_stage_adds_its_rows_and_leaves_the_plain_numbers(tmp_path):
    plain = run_experiment(tiny("supervised"), tmp_path / "plain", quiet=True)
    with_semi = run_experiment(tiny("supervised", enabled=True, epochs=1, batch_size=16), tmp_path / "semi",
                               quiet=True)
    assert with_semi["accuracy"] == plain["accuracy"] and with_semi["confusion"] == plain["confusion"]
    semi = with_semi["semi"]
    assert semi["kind"] == "distill" and 0 <= semi["accuracy"] <= 1 and semi["unlabelled_images"] == 30
    phases = [json.loads(line)["phase"] for line in (tmp_path / "semi" / "log.jsonl").read_text().splitlines()]
    assert phases.count("semi") == 1 and phases[-1] == "semi"
    fixmatch = run_experiment(tiny("supervised", enabled=True, kind="fixmatch", epochs=1, batch_size=16),
                              tmp_path / "fixmatch", quiet=True)
    assert fixmatch["semi"]["kind"] == "fixmatch" and fixmatch["accuracy"] == plain["accuracy"]
