"""The same command and seed give bit-identical losses, weights and metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mnist_ssl.cli import main

from .helpers import JOB, RUNS, assert_same_job, job, run_result


def test_same_command_same_seed_is_bit_identical_on_cpu(reference, tmp_path):
    out = tmp_path / "again"
    assert main(["reproduce", "--out", str(out), *JOB]) == 0
    assert_same_job(reference, out)  # losses of every epoch, metrics, every .safetensors byte
    for method in RUNS:
        a = np.load(reference / "runs" / method / "seed0" / "features.npz")
        b = np.load(out / "runs" / method / "seed0" / "features.npz")
        assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"])


def test_another_seed_gives_other_numbers(reference, tmp_path):
    """The comparison above is not vacuous: seed 1 trains on other images, in another order."""
    out = tmp_path / "seed1"
    assert main(["reproduce", "--out", str(out), *job("mae"), "--epochs", "1", "--first-seed", "1"]) == 0
    a = json.loads((reference / "runs" / "mae" / "seed0" / "log.jsonl").read_text().splitlines()[0])
    b = json.loads((out / "runs" / "mae" / "seed1" / "log.jsonl").read_text().splitlines()[0])
    assert a["loss"] != b["loss"]


def test_deterministic_flag_is_recorded_and_changes_nothing_on_cpu(reference, tmp_path):
    out = tmp_path / "det"
    try:
        assert main(["reproduce", "--out", str(out), *job("mae"), "--deterministic"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    cfg = json.loads((out / "runs" / "mae" / "seed0" / "config.json").read_text())
    assert cfg["deterministic"] is True
    a, b = run_result(reference, "mae"), run_result(out, "mae")
    assert a["losses"] == b["losses"] and a["metrics"] == b["metrics"]
    assert a["weights"]["pretrained.safetensors"] == b["weights"]["pretrained.safetensors"]
    assert a["weights"]["finetuned.safetensors"] == b["weights"]["finetuned.safetensors"]


@pytest.mark.cuda
def test_deterministic_cuda_runs_are_bit_identical(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    try:
        for out in outs:
            assert main(["reproduce", "--out", str(out), *JOB, "--device", "cuda", "--deterministic"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    assert_same_job(*outs)
