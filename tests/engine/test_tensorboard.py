"""`--log tensorboard`: every scalar of the JSONL log is in the event file, read back by TensorBoard."""

from __future__ import annotations

import builtins
import json

import pytest
import torch

from mnist_ssl.config import ModelConfig, OptimConfig
from mnist_ssl.engine.callbacks import JSONLLogger, TensorBoardLogger, record_scalars, tensorboard_writer
from mnist_ssl.engine.loop import train
from mnist_ssl.errors import ConfigError
from mnist_ssl.models.vit import ViTEncoder

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'mnist-ssl[tensorboard]')")


def _read_events(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_file_holds_every_logged_scalar(tmp_path):
    from mnist_ssl.objectives.registry import build_objective
    from mnist_ssl.objectives.registry import RunConfig

    torch.manual_seed(0)
    cfg = RunConfig(method="mae-infonce")  # two loss terms besides the total
    cfg.model = ModelConfig(dim=16, depth=1, heads=2)
    objective = build_objective(cfg, ViTEncoder(cfg.model))
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    tb = TensorBoardLogger(tmp_path / "tb")
    train(objective, images, None, OptimConfig(epochs=3, batch_size=4), phase="pretrain",
          callbacks=[JSONLLogger(tmp_path / "log.jsonl"), tb])
    tb.log_metrics({"eval/accuracy": 0.75, "eval/knn": None})
    tb.close()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    events = _read_events(tmp_path / "tb")
    expected: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for name, value in record_scalars(r).items():
            expected.setdefault(name, []).append((r["epoch"], value))
    assert set(expected) >= {"pretrain/loss", "pretrain/lr", "pretrain/time_s"} and len(expected) >= 5
    assert set(events) == set(expected) | {"eval/accuracy"}
    for name, points in expected.items():
        assert [s for s, _ in events[name]] == [s for s, _ in points]
        assert [v for _, v in events[name]] == pytest.approx([v for _, v in points], rel=1e-6)  # float32 events
    assert events["eval/accuracy"] == [(0, 0.75)]


def test_missing_package_is_one_clear_error(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match=r"--log tensorboard needs the tensorboard package: pip install"):
        tensorboard_writer(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_log_tensorboard_on_a_run_holds_every_jsonl_scalar_and_the_evaluations(tmp_path, capsys):
    from mnist_ssl.cli import main

    out = tmp_path / "out"
    code = main(["reproduce", "--methods", "mae", "--no-baselines", "--no-report", "--epochs", "2",
                 "--set", "pretrain.warmup_epochs=0", "--set", "finetune.warmup_epochs=0",
                 "--set", "model.dim=16", "--set", "model.depth=1", "--set", "model.heads=2",
                 "--train-per-class", "8", "--test-per-class", "4", "--threads", "1", "--quiet",
                 "--log", "tensorboard", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    run = out / "runs" / "mae" / "seed0"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    events = _read_events(run / "tensorboard")
    for r in records:
        for name, value in record_scalars(r).items():
            assert (r["epoch"], pytest.approx(value, rel=1e-6)) in events[name], name
    assert {r["phase"] for r in records} == {"pretrain", "finetune"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert events["eval/accuracy"] == [(0, pytest.approx(metrics["accuracy"], rel=1e-6))]
    assert "eval/linear_probe" in events and "eval/knn" in events
