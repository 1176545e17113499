"""``mnist-ssl reproduce``: every method x seed on paired samples, baselines, metrics.json, report."""

from __future__ import annotations

import dataclasses
import json
import platform
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from mnist_ssl.config import RunConfig
from mnist_ssl.engine.callbacks import ProgressBar, TrainingInterrupted
from mnist_ssl.engine.checkpoint import atomic_write_text

SCHEMA = "mnist-ssl/metrics/v1"


class StopFlag:
    """Set by SIGINT/SIGTERM; the engine polls it between batches and stops cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict = {}

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def versions() -> dict:
    import numpy
    import sklearn
    import torch

    from mnist_ssl import __version__

    return {"mnist_ssl": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scikit-learn": sklearn.__version__}


def machine(threads: int) -> dict:
    import os

    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": threads,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


def _steps(cfg: RunConfig, n_train: int, has_pretrain: bool) -> int:
    per = lambda o: o.epochs * ((n_train + o.batch_size - 1) // o.batch_size)  # noqa: E731
    return (per(cfg.pretrain) if has_pretrain else 0) + per(cfg.finetune)


def reproduce(configs: dict[str, RunConfig], out: Path, *, seeds: int = 1, first_seed: int = 0,
              baselines: bool = True, quiet: bool = False, resume: bool = False, command: str = "",
              report: bool = True) -> dict:
    """Run each method in ``configs`` for seeds first_seed..first_seed+seeds-1 into ``out``.

    Seed k draws one train/test sample used by every method and baseline (a paired comparison).
    With ``resume``, finished runs (a metrics.json present) are kept and an unfinished run
    continues from the state saved at the end of its last completed epoch. A stop request
    (SIGINT/SIGTERM) ends the job at the next batch: what is saved stays, metrics.json says
    ``"complete": false``, and :class:`TrainingInterrupted` is raised after the resume command
    is printed.
    """
    from mnist_ssl.evaluation.baselines import run_baselines
    from mnist_ssl.objectives.registry import get_method
    from mnist_ssl.pipeline import prepare_data, resolve_device, run_experiment, setup_threads

    any_cfg = next(iter(configs.values()))
    setup_threads(any_cfg.threads)
    device = resolve_device(any_cfg.device)
    seed_list = list(range(first_seed, first_seed + seeds))
    runs: list[dict] = []
    base_rows: list[dict] = []
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n_train = len(any_cfg.data.classes or range(10)) * (any_cfg.data.train_per_class or 500)
    total = sum(_steps(c, n_train, get_method(m).build is not None) for m, c in configs.items()) * len(seed_list)
    progress = ProgressBar(total, enabled=None if not quiet else False)
    t_job = time.perf_counter()
    interrupted = None
    current = None  # (method, seed, run folder) of the run in progress
    with StopFlag() as stop:
        try:
            for seed in seed_list:
                data = None
                for method, base_cfg in configs.items():
                    cfg = dataclasses.replace(base_cfg, seed=seed)
                    cfg = RunConfig.from_dict(cfg.to_dict())  # a deep copy per run
                    run_dir = out / "runs" / method / f"seed{seed}"
                    done = run_dir / "metrics.json"
                    if resume and done.exists():
                        runs.append(json.loads(done.read_text()))
                        progress.advance(_steps(cfg, n_train, get_method(method).build is not None))
                        continue
                    if stop():
                        raise TrainingInterrupted("reproduce", 0, f"interrupted before {method}, seed {seed}")
                    current = (method, seed, run_dir)
                    if data is None or data.classes != list(cfg.data.classes or range(10)):
                        data = prepare_data(cfg, device)
                    progress.set_description(f"{method} seed {seed}")
                    if not quiet:
                        progress.write_line(f"== {method}, seed {seed} ==")
                    metrics = run_experiment(cfg, run_dir, quiet=quiet, progress=progress,
                                             stop_requested=stop, data=data, resume=resume)
                    current = None
                    metrics["checkpoint"] = str(Path(metrics["checkpoint"]).relative_to(out))
                    runs.append(metrics)
                if baselines:
                    bpath = out / "baselines" / f"seed{seed}.json"
                    if resume and bpath.exists():
                        rows = json.loads(bpath.read_text())
                    else:
                        if stop():
                            raise TrainingInterrupted("reproduce", 0, f"interrupted before the baselines, seed {seed}")
                        if data is None:
                            data = prepare_data(any_cfg.__class__.from_dict({**any_cfg.to_dict(), "seed": seed}), device)
                        rows = run_baselines(data.train_images.float().cpu() / 255, data.train_targets.cpu(),
                                             data.test_images.float().cpu() / 255, data.test_targets.cpu(),
                                             data.classes)
                        for r in rows:
                            r["seed"] = seed
                        atomic_write_text(bpath, json.dumps(rows, indent=2))
                    base_rows.extend(rows)
        except TrainingInterrupted as e:
            interrupted = e
        finally:
            progress.close()
    metrics = {
        "schema": SCHEMA,
        "command": command,
        "created": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.perf_counter() - t_job, 2),
        "complete": interrupted is None,
        "versions": versions(),
        "machine": machine(any_cfg.threads),
        "seeds": seed_list,
        "config": {m: c.to_dict() for m, c in configs.items()},
        "runs": runs,
        "baselines": base_rows,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    if report and runs:
        from mnist_ssl.report.report import build_report

        build_report(out)
    if not quiet or interrupted is None:
        print(summary_table(metrics))
    if interrupted is not None:
        print(interrupted_message(interrupted, current, out, command), file=sys.stderr)
        raise interrupted
    return metrics


def interrupted_message(e: TrainingInterrupted, current, out: Path, command: str) -> str:
    """What was kept, and the command that continues the job."""
    from mnist_ssl.objectives.registry import get_method

    kept = f"finished runs are kept in {out}"
    if current is not None and e.phase in ("pretrain", "finetune"):
        method, seed, run_dir = current
        if e.saved_epoch > 0:
            kept += f"; {method} seed {seed} continues after {e.phase} epoch {e.saved_epoch} ({run_dir})"
        elif e.phase == "finetune" and get_method(method).build is not None:
            kept += f"; {method} seed {seed} keeps its pretraining and starts fine-tuning again"
        else:
            kept += f"; {method} seed {seed} starts again"
    command = command or "mnist-ssl reproduce --out " + str(out)
    if " --resume " not in f"{command} ":
        command += " --resume"
    return f"Interrupted: {kept}. Continue with: {command}"


def summary_table(metrics: dict) -> str:
    """The terminal's closing table: method x (fine-tune, linear probe, kNN), mean ± std over seeds."""
    from mnist_ssl.evaluation.metrics import summary
    from mnist_ssl.objectives.registry import METHODS

    def fmt(values: list[float]) -> str:
        if not values:
            return "-"
        s = summary([100 * v for v in values])
        return f"{s['mean']:.2f} ± {s['std']:.2f}" if s["n"] > 1 else f"{s['mean']:.2f}"

    rows = ["| method | fine-tune % | linear probe % | kNN % | document % | seeds |", "|---|---|---|---|---|---|"]
    by_method: dict[str, list[dict]] = {}
    for r in metrics["runs"]:
        by_method.setdefault(r["method"], []).append(r)
    for m, rs in by_method.items():
        doc = METHODS[m].document_accuracy if m in METHODS else None
        rows.append(f"| {m} | {fmt([r['accuracy'] for r in rs])} | "
                    f"{fmt([r['linear_probe']['accuracy'] for r in rs if 'linear_probe' in r])} | "
                    f"{fmt([r['knn']['accuracy'] for r in rs if 'knn' in r])} | "
                    f"{'-' if doc is None else f'{doc:.2f}'} | {len(rs)} |")
    by_base: dict[str, list[dict]] = {}
    for r in metrics["baselines"]:
        by_base.setdefault(r["method"], []).append(r)
    for m, rs in by_base.items():
        rows.append(f"| {m} (raw pixels) | {fmt([r['accuracy'] for r in rs])} | - | - | - | {len(rs)} |")
    n_test = metrics["runs"][0]["n_test"] if metrics["runs"] else 0
    return "\n".join(rows) + f"\n({n_test} test images per seed; wall time {metrics['wall_time_s']} s)"
