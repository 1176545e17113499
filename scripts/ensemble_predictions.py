"""Does averaging the fine-tuned classifiers of several methods beat each of them?

A paired check (docs/results.md, "Ensembles"): seed k of ``mnist-ssl reproduce``
tests every method on the same sample, and each run's ``predictions.npz`` holds
its softmax on that sample, so the mean of the methods' probabilities is an
ensemble tested on the same images, with no training and no model loaded. Runs
made before predictions.npz existed get it from ``mnist-ssl reproduce ... --resume``
with the job's own settings.

    python scripts/ensemble_predictions.py RUN_DIR [METHODS] [--json OUT]
    e.g. python scripts/ensemble_predictions.py runs/reproduce mae,infonce,mae-infonce,videomae

METHODS defaults to every method of RUN_DIR/runs. Prints, per seed found in
every method, each method's accuracy and the ensemble's; then means over seeds.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np

from mnist_ssl.fileio import atomic_write_text

USAGE = "usage: python scripts/ensemble_predictions.py RUN_DIR [METHODS] [--json OUT]"


def _fail(line: str) -> None:
    """One line on stderr and exit code 2, as the CLI does for bad input."""
    print(line, file=sys.stderr)
    sys.exit(2)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            probs, y = np.asarray(z["probs"], dtype=np.float64), np.asarray(z["y"]).ravel()
    except (OSError, ValueError, KeyError) as err:
        _fail(f"{path}: not a readable predictions file ({type(err).__name__}: {err})")
    if probs.ndim != 2 or probs.shape[0] != y.shape[0]:
        _fail(f"{path}: probs {probs.shape} and y {y.shape} do not fit together")
    return probs, y


def ensemble(run_dir: Path, methods: list[str]) -> list[dict]:
    """One row per seed that every method has: each method's accuracy and the ensemble's."""
    seeds_of = {m: {int(p.parent.name[4:]) for p in (run_dir / "runs" / m).glob("seed*/predictions.npz")
                    if re.fullmatch(r"seed\d+", p.parent.name)} for m in methods}
    for m, seeds in seeds_of.items():
        if not seeds:
            _fail(f"{run_dir / 'runs' / m}: no seed*/predictions.npz (run `mnist-ssl reproduce ... --resume` "
                  "with the job's settings to write them)")
    rows = []
    for seed in sorted(set.intersection(*seeds_of.values())):
        loaded = {m: _load(run_dir / "runs" / m / f"seed{seed}" / "predictions.npz") for m in methods}
        first, y = loaded[methods[0]]
        for m, (probs, y_m) in loaded.items():
            if not np.array_equal(y_m, y) or probs.shape != first.shape:
                _fail(f"seed {seed}: {m}'s test sample differs from {methods[0]}'s; not one paired job")
        mean = np.mean([probs for probs, _ in loaded.values()], axis=0)
        row = {"seed": seed, "n_test": int(y.shape[0]),
               "accuracy": {m: float((p.argmax(1) == y).mean()) for m, (p, _) in loaded.items()},
               "ensemble": float((mean.argmax(1) == y).mean())}
        rows.append(row)
    if not rows:
        _fail(f"no seed has predictions.npz for every one of {','.join(methods)}")
    return rows


def main(argv: list[str]) -> None:
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        if i + 1 >= len(argv):
            _fail(USAGE + " (--json needs a file name)")
        out = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
        if not out.parent.is_dir():
            _fail(f"--json {out}: folder {out.parent} does not exist")
        if out.is_dir():
            _fail(f"--json {out}: is a folder; give a file name")
    if not 1 <= len(argv) <= 2:
        _fail(USAGE)
    run_dir = Path(argv[0])
    if not (run_dir / "runs").is_dir():
        _fail(f"{run_dir}: not a run folder of mnist-ssl reproduce (no runs/ inside)")
    if len(argv) == 2:
        methods = [m.strip() for m in argv[1].split(",") if m.strip()]
    else:
        methods = sorted(p.name for p in (run_dir / "runs").iterdir() if p.is_dir())
    if len(methods) < 2:
        _fail(f"an ensemble needs at least two methods, got {methods}")
    rows = ensemble(run_dir, methods)
    for row in rows:
        accs = ", ".join(f"{m} {100 * a:.2f}" for m, a in row["accuracy"].items())
        print(f"seed {row['seed']} ({row['n_test']} test images): {accs}; ensemble {100 * row['ensemble']:.2f}")
    mean = {m: float(np.mean([r["accuracy"][m] for r in rows])) for m in methods}
    ens = [r["ensemble"] for r in rows]
    sd = float(np.std(ens, ddof=1)) if len(ens) > 1 else 0.0
    print(f"mean over {len(rows)} seed(s): " + ", ".join(f"{m} {100 * a:.2f}" for m, a in mean.items())
          + f"; ensemble {100 * np.mean(ens):.2f} ± {100 * sd:.2f}")
    if out is not None:
        atomic_write_text(out, json.dumps({"run_dir": str(run_dir), "methods": methods, "seeds": rows}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
