"""``label-efficiency --log tensorboard``: events for its own pretraining and for every row's training."""

from __future__ import annotations

import json

import pytest

from mnist_ssl.cli import main
from mnist_ssl.engine.callbacks import record_scalars

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'mnist-ssl[tensorboard]')")

TINY = ["--classes", "0,1,2", "--test-per-class", "10", "--epochs", "2", "--finetune-steps", "4",
        "--finetune-min-epochs", "2",
        "--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2", "--quiet"]


def _read_events(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_pretraining_and_every_row_write_their_events(tmp_path, capsys):
    out = tmp_path / "le"
    args = ["label-efficiency", "--out", str(out), "--methods", "mae,supervised", "--labels", "1",
            "--seeds", "1", "--first-seed", "2", "--no-baselines", "--log", "tensorboard", *TINY]
    assert main(args) == 0, capsys.readouterr().err
    board = out / "tensorboard"
    # The pool pretraining: every scalar of its JSONL log, epoch by epoch.
    records = [json.loads(line) for line in (out / "pretrained" / "mae.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    events = _read_events(board / "mae" / "pretrain")
    expected: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for name, value in record_scalars(r).items():
            expected.setdefault(name, []).append((r["epoch"], value))
    assert set(events) == set(expected) and "pretrain/loss" in events
    for name, points in expected.items():
        assert [s for s, _ in events[name]] == [s for s, _ in points], name
        assert [v for _, v in events[name]] == pytest.approx([v for _, v in points], rel=1e-6), name
    assert not (board / "supervised" / "pretrain").exists()  # nothing to pretrain
    # Each row: its fine-tuning epochs and its test figures, named by its seed.
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert sorted(p.relative_to(board).as_posix() for p in board.glob("*/k*/seed*")) == \
        ["mae/k1/seed2", "supervised/k1/seed2"]
    for method, row in rows.items():
        events = _read_events(board / method / "k1" / "seed2")
        assert [s for s, _ in events["finetune/loss"]] == list(range(1, row["finetune_epochs"] + 1)), method
        assert {"finetune/lr", "finetune/time_s"} <= set(events), method
        assert events["eval/accuracy"] == [(0, pytest.approx(row["finetune_accuracy"], rel=1e-6))], method
        assert events["eval/linear_probe"] == [(0, pytest.approx(row["probe_accuracy"], rel=1e-6))], method
        assert "eval/semi" not in events  # no semi-supervised stage asked
    # A second command into the folder redoes the rows: their events are replaced, not doubled.
    assert main(args + ["--overwrite"]) == 0, capsys.readouterr().err
    again = _read_events(board / "mae" / "k1" / "seed2")
    assert len(again["eval/accuracy"]) == 1 and len(again["finetune/loss"]) == rows["mae"]["finetune_epochs"]
    assert [s for s, _ in _read_events(board / "mae" / "pretrain")["pretrain/loss"]] == [1, 2]


def test_without_the_flag_no_events_are_written(tmp_path):
    out = tmp_path / "plain"
    assert main(["label-efficiency", "--out", str(out), "--methods", "supervised", "--labels", "1",
                 "--seeds", "1", "--no-baselines", *TINY]) == 0
    assert (out / "results.json").exists() and not (out / "tensorboard").exists()


def test_the_semi_supervised_stage_writes_its_epochs_and_result_beside_the_rows(tmp_path, capsys):
    out = tmp_path / "semi"
    assert main(["label-efficiency", "--out", str(out), "--methods", "supervised", "--labels", "1",
                 "--seeds", "1", "--no-baselines", "--log", "tensorboard", "--set", "semi.enabled=true",
                 "--set", "semi.epochs=2", "--set", "semi.batch_size=256", *TINY]) == 0, capsys.readouterr().err
    row = json.loads((out / "results.json").read_text())["rows"][0]
    events = _read_events(out / "tensorboard" / "supervised" / "k1" / "seed0")
    assert [s for s, _ in events["semi/loss"]] == [1, 2]
    assert events["eval/semi"] == [(0, pytest.approx(row["semi_accuracy"], rel=1e-6))]
    assert [s for s, _ in events["finetune/loss"]] == list(range(1, row["finetune_epochs"] + 1))
