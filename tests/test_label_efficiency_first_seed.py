"""``label-efficiency --first-seed K``: seeds K, K+1, ...; seed s's row is the same whatever K."""

from __future__ import annotations

import json

from mnist_ssl.cli import main

TINY = ["--classes", "0,1,2", "--test-per-class", "10", "--epochs", "1", "--finetune-steps", "4",
        "--finetune-min-epochs", "1",
        "--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2", "--quiet"]
JOB = ["--methods", "mae,supervised", "--labels", "1,2", *TINY]


def _rows(res: dict, key: str = "rows") -> dict[tuple, dict]:
    """(method, k, seed) -> the row without its wall time and the seeds it shared batched steps with."""
    return {(r["method"], r["k"], r["seed"]): {f: v for f, v in r.items() if f not in ("time_s", "batched_finetune")}
            for r in res[key]}


def test_seed_k_is_the_same_row_from_first_seed_k_or_as_the_kth_seed_of_a_job_from_0(tmp_path, capsys):
    from_0, from_1 = tmp_path / "from0", tmp_path / "from1"
    assert main(["label-efficiency", "--out", str(from_0), "--seeds", "2", *JOB]) == 0
    assert main(["label-efficiency", "--out", str(from_1), "--seeds", "1", "--first-seed", "1", *JOB]) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (from_0, from_1))
    assert (a["first_seed"], b["first_seed"]) == (0, 1)
    assert sorted(_rows(b)) == [(m, k, 1) for m in ("mae", "supervised") for k in (1, 2)]
    # The same labelled images, fine-tuning and from-scratch start: every figure of the row is equal,
    # for a pretrained method (one encoder per job, seeded by the config) and the from-scratch ViT.
    for key, row in _rows(b).items():
        assert row == _rows(a)[key], key
    # Batched with seed 0 or alone in the batched engine: seed 1's row does not depend on its company.
    assert {r["batched_finetune"]["seeds"] == [0, 1] for r in a["rows"]} == {True}
    assert {r["batched_finetune"]["seeds"] == [1] for r in b["rows"]} == {True}
    assert _rows(b, "baselines") == {k: r for k, r in _rows(a, "baselines").items() if k[2] == 1}
    assert (from_1 / "pretrained" / "mae.safetensors").read_bytes() == \
        (from_0 / "pretrained" / "mae.safetensors").read_bytes()
    # The table says which seeds it reports.
    table = (from_1 / "table.md").read_text()
    assert "k=1: 1, k=2: 1; every encoder pretrained with seed 0" in table, table
    assert "k=1: 0-1, k=2: 0-1" in (from_0 / "table.md").read_text()
    assert "k=1: 1, k=2: 1" in capsys.readouterr().out


def test_resume_keeps_its_first_seed_and_refuses_another(tmp_path, capsys):
    out = tmp_path / "le"
    job = lambda first: ["label-efficiency", "--out", str(out), "--seeds", "1", "--first-seed", first,  # noqa: E731
                         "--no-baselines", "--methods", "supervised", "--labels", "1", *TINY]
    args = job("3")
    assert main(args) == 0
    first = json.loads((out / "results.json").read_text())
    assert main(args + ["--resume"]) == 0  # the same first seed: nothing to redo
    kept = (out / "results.json").read_bytes()
    assert json.loads(kept)["rows"] == first["rows"] and json.loads(kept)["first_seed"] == 3
    capsys.readouterr()
    # Another first seed would replace the rows of seed 3 by those of seed 0: one line, nothing changed.
    assert main(job("0") + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "was made with first_seed=3, this command gives 0" in err, err
    assert (out / "results.json").read_bytes() == kept
    # A results.json from before --first-seed started at 0: resumable from 0 only.
    older = json.loads(kept)
    del older["first_seed"]
    (out / "results.json").write_text(json.dumps(older))
    assert main(args + ["--resume"]) == 2
    assert "was made with first_seed=0, this command gives 3" in capsys.readouterr().err


def test_a_negative_first_seed_is_one_line(tmp_path, capsys):
    out = tmp_path / "neg"
    assert main(["label-efficiency", "--out", str(out), "--first-seed", "-1", "--labels", "1", *TINY]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--first-seed -1: must be >= 0" in err, err
    assert not out.exists()
