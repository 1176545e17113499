"""``mnist-ssl reproduce``: every method x seed on paired samples, baselines, metrics.json, report.

Seed k draws one train/test sample used by every method and baseline (a paired comparison).
The job is a plan (:mod:`scheduler`): for each seed its runs, then its raw-pixel baselines.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from mnist_ssl.engine.callbacks import ProgressBar, TrainingInterrupted
from mnist_ssl.engine.checkpoint import atomic_write_text
from mnist_ssl.errors import ConfigError
from mnist_ssl.experiment.rundir import JobDir, RunDir
from mnist_ssl.experiment.scheduler import JobStopped, LocalTask, PretrainTask, RunGroup, RunTask, StopFlag, schedule
from mnist_ssl.objectives.registry import RunConfig, get_method
from mnist_ssl.report.schema import SCHEMA_ID
from mnist_ssl.report.summary import summary_table


def reproduce(configs: dict[str, RunConfig], out: Path, *, seeds: int = 1, first_seed: int = 0,
              baselines: bool = True, quiet: bool = False, resume: bool = False, command: str = "",
              report: bool = True, jobs: int = 1) -> dict:
    """Run each method in ``configs`` for seeds first_seed..first_seed+seeds-1 into ``out``.

    With ``resume``, finished runs (a metrics.json present) are kept and an unfinished run
    continues from the state saved at the end of its last completed epoch. A stop request
    (SIGINT/SIGTERM) ends the job at the next batch: what is saved stays, metrics.json says
    ``"complete": false``, and :class:`TrainingInterrupted` is raised after the resume command
    is printed. ``jobs`` > 1 runs the (method, seed) runs in that many worker processes at once;
    the results, and their order in metrics.json, are those of ``jobs=1``.
    """
    from mnist_ssl.experiment.runtime import setup_threads

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be an integer >= 1")
    job = JobDir(out)
    any_cfg = next(iter(configs.values()))
    setup_threads(any_cfg.threads)
    seed_list = list(range(first_seed, first_seed + seeds))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    plan, kept, total = _plan(configs, job, seed_list, baselines, resume, jobs)
    progress = ProgressBar(total, enabled=None if not quiet else False)
    progress.advance(sum(kept.values()))
    t_job = time.perf_counter()
    interrupted = None
    results: list = []
    with StopFlag() as stop:
        try:
            results = schedule(plan, jobs=jobs, stop=stop, progress=progress, quiet=quiet, resume=resume,
                               on_run_done=lambda task, m: _relative_checkpoint(m, task.run, job))
        except JobStopped as e:
            interrupted, results = e, e.results
        finally:
            progress.close()
    runs, base_rows = _results(plan, results, configs, seed_list)
    metrics = {"schema": SCHEMA_ID, "command": command, "created": started,
               "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "wall_time_s": round(time.perf_counter() - t_job, 2), "complete": interrupted is None,
               "versions": versions(), "machine": machine(any_cfg.threads), "seeds": seed_list,
               "config": {m: c.to_dict() for m, c in configs.items()}, "runs": runs, "baselines": base_rows}
    atomic_write_text(job.metrics, json.dumps(metrics, indent=2))
    if report and runs:
        from mnist_ssl.report.report import build_report

        build_report(out)
    if not quiet or interrupted is None:
        print(summary_table(metrics))
    if interrupted is not None:
        print(interrupted_message(interrupted, out, command), file=sys.stderr)
        raise interrupted
    return metrics



def _results(plan: list, results: list, configs: dict, seed_list: list[int]) -> tuple[list[dict], list[dict]]:
    """The plan's results as metrics.json lists them: the runs in a one-process job's order
    (seed-major, methods as given; batched or not), and the baseline rows."""
    runs = [m for item, r in zip(plan, results) if not isinstance(item, (LocalTask, PretrainTask)) and r is not None
            for m in (r if isinstance(item, RunGroup) else [r])]
    order = {(m, seed): i for i, (seed, m) in enumerate((s, m) for s in seed_list for m in configs)}
    runs.sort(key=lambda r: order[(r["method"], r["seed"])])
    base_rows = [row for item, r in zip(plan, results) if isinstance(item, LocalTask) and r for row in r]
    return runs, base_rows

def default_jobs(configs: dict[str, RunConfig], seeds: int) -> int:
    """``--jobs`` when not given: on the CPU one worker per usable core (at the config's torch
    threads each), no more than the job has runs or batched groups to run; on an accelerator 1
    (the batched step is what fills it)."""
    from mnist_ssl.experiment.beside import usable_cores
    from mnist_ssl.experiment.runtime import resolve_device

    any_cfg = next(iter(configs.values()))
    if resolve_device(any_cfg.device).type != "cpu":
        return 1
    cores = usable_cores()
    batched = seeds > 1 and any_cfg.run.batch_models
    # A batched group pretrains its seeds one per worker (_batched): they are items of their own.
    items = sum(seeds if not batched or get_method(m).build is not None else 1 for m in configs)
    return max(1, min(cores // max(1, any_cfg.threads), items))


def _plan(configs: dict[str, RunConfig], job: JobDir, seed_list: list[int], baselines: bool,
          resume: bool, jobs: int = 1) -> tuple[list, dict, int]:
    """The job's items in the order one process takes them: per seed, each method's run (a
    finished run kept by ``resume`` is its metrics, checked before anything starts), then the
    seed's baselines; with several seeds, batched groups (:func:`_batched`). -> (plan, {slot:
    steps of a kept run}, total steps)."""
    any_cfg = next(iter(configs.values()))
    n_train = len(any_cfg.data.classes or range(10)) * (any_cfg.data.train_per_class or 500)
    plan: list = []
    kept: dict[int, int] = {}
    total = 0
    for seed in seed_list:
        for method, base_cfg in configs.items():
            cfg = RunConfig.from_dict(dataclasses.replace(base_cfg, seed=seed).to_dict())  # a deep copy
            task = RunTask(method, seed, cfg, job.run(method, seed),
                           _steps(cfg, n_train, get_method(method).build is not None))
            total += task.steps
            done = _finished_run(cfg, task.run, job) if resume else None
            if done is not None:
                kept[len(plan)] = task.steps
            plan.append(done if done is not None else task)
        if baselines:
            plan.append(LocalTask(f"the baselines, seed {seed}",
                                  lambda seed=seed: _baselines(configs, job, seed, resume),
                                  kept=lambda seed=seed: resume and job.baselines(seed).exists()))
    return _batched(plan, configs, n_train, jobs) if len(seed_list) > 1 else plan, kept, total


def _batched(plan: list, configs: dict[str, RunConfig], n_train: int, jobs: int) -> list:
    """The plan with each method's unfinished runs (``run.batch_models``, more than one) as one
    RunGroup, whose fine-tuning shares its steps: the groups first, in the methods' order, then
    what stays one item (a single run, kept results, the baselines), in the plan's order. A
    group's pretrainings come before it as items of their own: with one worker MAE's seeds as one
    batched model (the other methods' seeds pretrain inside the group, one after another); with
    ``jobs`` > 1 one seed an item, so that the seeds pretrain on several workers at once (MAE's
    still through the batched engine, whose model k is the same alone or with others: the
    numbers do not depend on ``jobs``; on the CPU batching pretraining gains nothing, on a
    GPU, where --jobs defaults to 1, it turns K small steps into one)."""
    from mnist_ssl.engine.batched import why_not_batched, why_not_batched_pretraining

    items, grouped = [], set()
    for method in configs:
        tasks = [t for t in plan if isinstance(t, RunTask) and t.method == method]
        if len(tasks) > 1 and tasks[0].cfg.run.batch_models and why_not_batched([t.cfg for t in tasks]) is None:
            pretrains = []
            if get_method(method).build is not None:
                if jobs == 1 and why_not_batched_pretraining([t.cfg for t in tasks]) is None:
                    parts = [tasks]
                elif jobs > 1:
                    parts = [[t] for t in tasks]
                else:
                    parts = []
                pretrains = [PretrainTask(part, sum(t.steps - _steps(t.cfg, n_train, False) for t in part))
                             for part in parts]
            items += [*pretrains, RunGroup(tasks, after=pretrains)]
            grouped |= {id(t) for t in tasks}
    return items + [item for item in plan if id(item) not in grouped]


def _steps(cfg: RunConfig, n_train: int, has_pretrain: bool) -> int:
    per = lambda o: o.epochs * ((n_train + o.batch_size - 1) // o.batch_size)  # noqa: E731
    return (per(cfg.pretrain) if has_pretrain else 0) + per(cfg.finetune)


def _relative_checkpoint(metrics: dict, run: RunDir, job: JobDir) -> dict:
    """A run's metrics with its checkpoint path relative to the job folder, so that
    metrics.json reads the same whether a run finished now or was kept by --resume, and
    after the job folder moved (a run folder's own metrics.json holds the path it was
    written with)."""
    return {**metrics, "checkpoint": job.relative_checkpoint(run, metrics["checkpoint"])}


def _finished_run(cfg: RunConfig, run: RunDir, job: JobDir) -> dict | None:
    """The metrics of a run that --resume keeps (None: not finished), after checking that it
    was made with this command's settings: a job must not mix runs of two configs."""
    from mnist_ssl.engine.resume import finished_run_problem, last_good_state, normalised_config, refuse_other_config
    from mnist_ssl.experiment.run import complete_finished_run, warn

    if not run.metrics.exists():
        return None
    try:
        saved = json.loads(run.config.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: {run.path} has no readable config.json ({e.__class__.__name__}); "
                          "start this run again with --overwrite") from None
    refuse_other_config(normalised_config(saved), cfg.to_dict(), run.path, "was made with")
    problem = finished_run_problem(run.path, cfg.method, cfg.seed)
    if problem is not None:  # damaged: one line, and the run is redone from its last good state
        warn(last_good_state(run.path, cfg.to_dict(), pretrains=get_method(cfg.method).build is not None,
                             problem=problem).problem)
        run.metrics.unlink()
        return None
    metrics = json.loads(run.metrics.read_text())
    complete_finished_run(cfg, run, metrics)
    return _relative_checkpoint(metrics, run, job)


def _baselines(configs: dict[str, RunConfig], job: JobDir, seed: int, resume: bool) -> list[dict]:
    """One seed's raw-pixel baselines (kept from an earlier job with ``resume``), on the sample
    of the seed's runs: the first method's, or the last whose classes differ (the sample a
    one-process job holds when it reaches the baselines). Loaded on the CPU: only sklearn uses it."""
    import torch

    from mnist_ssl.evaluation.baselines import run_baselines
    from mnist_ssl.experiment.data import prepare_data

    path = job.baselines(seed)
    if resume and path.exists():
        return json.loads(path.read_text())
    data_cfg = None
    for base_cfg in configs.values():
        cfg = RunConfig.from_dict(dataclasses.replace(base_cfg, seed=seed).to_dict())
        if data_cfg is None or list(data_cfg.data.classes or range(10)) != list(cfg.data.classes or range(10)):
            data_cfg = cfg
    data = prepare_data(data_cfg, torch.device("cpu"))
    rows = run_baselines(data.train_images.float() / 255, data.train_targets,
                         data.test_images.float() / 255, data.test_targets, data.classes)
    from mnist_ssl.experiment.stages import class_names

    for r in rows:
        r.update(seed=seed, **class_names(data_cfg, data.classes))
    atomic_write_text(path, json.dumps(rows, indent=2))
    return rows


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

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": threads,
            # The vector kernels torch picked (e.g. AVX2, AVX512): runs on CPUs at different
            # levels round differently and can differ by a test image or two (docs/reliability.md).
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def interrupted_message(e: TrainingInterrupted, out: Path, command: str) -> str:
    """What was kept, and the command that continues the job."""
    kept = f"finished runs are kept in {out}"
    for run_e, task in getattr(e, "stopped", None) or []:
        if run_e.phase not in ("pretrain", "finetune"):
            continue
        who = f"{task.method} seed {task.seed}"
        if run_e.saved_epoch > 0:
            kept += f"; {who} continues after {run_e.phase} epoch {run_e.saved_epoch} ({task.run.path})"
        elif run_e.phase == "finetune" and get_method(task.method).build is not None:
            kept += f"; {who} keeps its pretraining and starts fine-tuning again"
        else:
            kept += f"; {who} starts again"
    command = command or "mnist-ssl reproduce --out " + str(out)
    if " --resume " not in f"{command} ":
        command += " --resume"
    return f"Interrupted: {kept}. Continue with: {command}"
