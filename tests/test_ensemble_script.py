"""scripts/ensemble_predictions.py: the mean of several runs' softmax on one seed's test sample."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensemble_predictions.py"


def _run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)


def _write(run_dir, method, seed, probs, y):
    d = run_dir / "runs" / method / f"seed{seed}"
    d.mkdir(parents=True)
    probs = np.asarray(probs, dtype=np.float32)
    wrong = np.flatnonzero(probs.argmax(1) != y)
    np.savez(d / "predictions.npz", probs=probs, y=np.asarray(y), error_index=wrong,
             error_images=np.zeros((len(wrong), 28, 28), np.uint8))


def test_ensemble_averages_probabilities_seed_by_seed(tmp_path):
    y = np.array([0, 1, 2, 0])
    # a is wrong on image 0 by a little, b is wrong on image 1 by a little: each 3/4, the mean 4/4.
    _write(tmp_path, "a", 0, [[0.45, 0.55, 0], [0, 0.9, 0.1], [0, 0, 1], [1, 0, 0]], y)
    _write(tmp_path, "b", 0, [[0.9, 0.1, 0], [0, 0.45, 0.55], [0, 0, 1], [1, 0, 0]], y)
    # Seed 1 exists for one method only: left out.
    _write(tmp_path, "a", 1, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], y)
    out = tmp_path / "ens.json"
    r = _run(tmp_path, "a,b", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "seed 0 (4 test images): a 75.00, b 75.00; ensemble 100.00" in r.stdout
    assert "mean over 1 seed(s): a 75.00, b 75.00; ensemble 100.00 ± 0.00" in r.stdout
    saved = json.loads(out.read_text())
    assert saved["seeds"] == [{"seed": 0, "n_test": 4, "accuracy": {"a": 0.75, "b": 0.75}, "ensemble": 1.0}]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    y = np.array([0, 1])
    _write(tmp_path, "a", 0, [[1, 0], [0, 1]], y)
    _write(tmp_path, "b", 0, [[1, 0], [0, 1]], np.array([1, 0]))  # another test sample
    cases = [
        ((tmp_path / "nowhere",), "not a run folder"),
        ((tmp_path, "a"), "at least two methods"),
        ((tmp_path, "a,c"), "runs/c: no seed*/predictions.npz"),
        ((tmp_path, "a,b"), "seed 0: b's test sample differs from a's"),
        ((tmp_path, "a,b", "--json", tmp_path / "no" / "x.json"), "does not exist"),
        ((tmp_path, "a,b", "--json", tmp_path), "is a folder"),
    ]
    (tmp_path / "runs" / "c").mkdir()
    for args, message in cases:
        r = _run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    (tmp_path / "runs" / "b" / "seed0" / "predictions.npz").write_bytes(b"junk")
    r = _run(tmp_path, "a,b")
    assert r.returncode == 2 and "not a readable predictions file" in r.stderr
