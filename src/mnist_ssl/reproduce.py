"""``mnist-ssl reproduce``: every method x seed on paired samples, baselines, metrics.json, report."""

from __future__ import annotations

import dataclasses
import json
import platform
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from mnist_ssl.config import RunConfig
from mnist_ssl.engine.callbacks import ProgressBar, TrainingInterrupted
from mnist_ssl.engine.checkpoint import atomic_write_text
from mnist_ssl.errors import ConfigError, MnistSSLError

SCHEMA = "mnist-ssl/metrics/v1"


def _relative_checkpoint(metrics: dict, run_dir: Path, out: Path) -> dict:
    """A run's metrics with its checkpoint path relative to the job folder, so that
    metrics.json reads the same whether a run finished now or was kept by --resume, and
    after the job folder moved (a run folder's own metrics.json holds the path it was
    written with; the checkpoint always lies in the run folder)."""
    path = run_dir.relative_to(out) / Path(metrics["checkpoint"]).name
    return {**metrics, "checkpoint": path.as_posix()}


def _finished_run(cfg: RunConfig, run_dir: Path, out: Path) -> dict | None:
    """The metrics of a run that --resume keeps (None: not finished), after checking that it
    was made with this command's settings: a job must not mix runs of two configs."""
    from mnist_ssl.engine.resume import normalised_config, refuse_other_config

    done = run_dir / "metrics.json"
    if not done.exists():
        return None
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        metrics = json.loads(done.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: {run_dir} has no readable config.json/metrics.json ({e.__class__.__name__}); "
                          "start this run again with --overwrite") from None
    refuse_other_config(normalised_config(saved), cfg.to_dict(), run_dir, "was made with")
    _complete_finished_run(cfg, run_dir, metrics)
    return _relative_checkpoint(metrics, run_dir, out)


def _complete_finished_run(cfg: RunConfig, run_dir: Path, metrics: dict) -> None:
    """A run that finished before a measurement existed gets it now, from its fine-tuned
    checkpoint and its seed's test sample (loaded once for both): the TTA accuracy in its
    metrics.json and its predictions.npz."""
    from mnist_ssl.data import class_index, load_splits
    from mnist_ssl.engine.checkpoint import load_classifier
    from mnist_ssl.pipeline import predict_logits, probabilities, save_predictions, setup_threads, tta_stage

    needs_tta = "tta" not in metrics
    needs_predictions = not (run_dir / "predictions.npz").exists()
    if not (needs_tta or needs_predictions):
        return
    if needs_tta and cfg.eval.tta_views == 0:  # TTA off: recorded as not measured, nothing to load
        metrics["tta"] = None
    if needs_predictions or "tta" not in metrics:
        setup_threads(cfg.threads)
        classifier, _ = load_classifier(run_dir / "finetuned.safetensors")
        _, test = load_splits(cfg.data, cfg.seed)
        classes = list(cfg.data.classes) if cfg.data.classes is not None else list(range(10))
        targets = class_index(test.labels, classes)
        if needs_predictions:
            save_predictions(run_dir / "predictions.npz", probabilities(predict_logits(classifier, test.images)),
                             targets, test.images)
        if "tta" not in metrics:
            metrics["tta"] = tta_stage(cfg, classifier, test.images, targets)
    if needs_tta:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))


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
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": threads,
            # The vector kernels torch picked (e.g. AVX2, AVX512): runs on CPUs at different
            # levels round differently and can differ by a test image or two (docs/reliability.md).
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


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


def _steps(cfg: RunConfig, n_train: int, has_pretrain: bool) -> int:
    per = lambda o: o.epochs * ((n_train + o.batch_size - 1) // o.batch_size)  # noqa: E731
    return (per(cfg.pretrain) if has_pretrain else 0) + per(cfg.finetune)


def _run_spec(method: str, base_cfg: RunConfig, seed: int, out: Path, n_train: int) -> tuple[RunConfig, Path, int]:
    """One (method, seed) run of the job: its own config (a deep copy), its folder, its step count."""
    from mnist_ssl.objectives.registry import get_method

    cfg = RunConfig.from_dict(dataclasses.replace(base_cfg, seed=seed).to_dict())
    return cfg, out / "runs" / method / f"seed{seed}", _steps(cfg, n_train, get_method(method).build is not None)


def reproduce(configs: dict[str, RunConfig], out: Path, *, seeds: int = 1, first_seed: int = 0,
              baselines: bool = True, quiet: bool = False, resume: bool = False, command: str = "",
              report: bool = True, jobs: int = 1) -> dict:
    """Run each method in ``configs`` for seeds first_seed..first_seed+seeds-1 into ``out``.

    Seed k draws one train/test sample used by every method and baseline (a paired comparison).
    With ``resume``, finished runs (a metrics.json present) are kept and an unfinished run
    continues from the state saved at the end of its last completed epoch. A stop request
    (SIGINT/SIGTERM) ends the job at the next batch: what is saved stays, metrics.json says
    ``"complete": false``, and :class:`TrainingInterrupted` is raised after the resume command
    is printed.

    ``jobs`` > 1 runs the (method, seed) runs in that many worker processes at once
    (:func:`_run_parallel`); the results, and their order in metrics.json, are those of
    ``jobs=1``, which runs everything in this process.
    """
    from mnist_ssl.objectives.registry import get_method
    from mnist_ssl.pipeline import prepare_data, resolve_device, run_experiment, setup_threads

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be an integer >= 1")
    any_cfg = next(iter(configs.values()))
    setup_threads(any_cfg.threads)
    device = resolve_device(any_cfg.device)
    seed_list = list(range(first_seed, first_seed + seeds))
    runs: list[dict] = []
    base_rows: list[dict] = []
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n_train = len(any_cfg.data.classes or range(10)) * (any_cfg.data.train_per_class or 500)
    total = sum(_steps(c, n_train, get_method(m).build is not None) for m, c in configs.items()) * len(seed_list)
    if resume:  # every kept run checked before anything starts
        for seed in seed_list:
            for method, base_cfg in configs.items():
                cfg, run_dir, _ = _run_spec(method, base_cfg, seed, out, n_train)
                _finished_run(cfg, run_dir, out)
    progress = ProgressBar(total, enabled=None if not quiet else False)
    t_job = time.perf_counter()
    interrupted = None
    current = None  # (method, seed, run folder) of the run in progress
    with StopFlag() as stop:
        try:
            if jobs > 1:
                _run_parallel(configs, out, seed_list, jobs=jobs, baselines=baselines, quiet=quiet,
                              resume=resume, progress=progress, stop=stop, n_train=n_train,
                              runs=runs, base_rows=base_rows)
            else:
                for seed in seed_list:
                    data = None
                    for method, base_cfg in configs.items():
                        cfg, run_dir, steps = _run_spec(method, base_cfg, seed, out, n_train)
                        kept = _finished_run(cfg, run_dir, out) if resume else None
                        if kept is not None:
                            runs.append(kept)
                            progress.advance(steps)
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
                        runs.append(_relative_checkpoint(metrics, run_dir, out))
                    if baselines:
                        kept = resume and (out / "baselines" / f"seed{seed}.json").exists()
                        if stop() and not kept:
                            raise TrainingInterrupted("reproduce", 0, f"interrupted before the baselines, seed {seed}")
                        base_rows.extend(_baselines(configs, out, seed, resume))
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


# ----- --jobs N: runs in worker processes ---------------------------------------
class _JobInterrupted(TrainingInterrupted):
    """The parallel job stopped; ``stopped`` lists (TrainingInterrupted, (method, seed, run folder))
    of the runs that were in progress, for :func:`interrupted_message`."""

    def __init__(self, message: str, stopped: list) -> None:
        super().__init__("reproduce", 0, message)
        self.stopped = stopped


def _run_parallel(configs: dict[str, RunConfig], out: Path, seed_list: list[int], *, jobs: int,
                  baselines: bool, quiet: bool, resume: bool, progress: ProgressBar, stop: StopFlag,
                  n_train: int, runs: list[dict], base_rows: list[dict]) -> None:
    """reproduce()'s loop with the (method, seed) runs in ``jobs`` worker processes.

    Each worker loads its own data and calls run_experiment(quiet=True) with torch threads from
    the config; the metrics come back here and go into ``runs`` in the serial order (seed-major,
    methods as given). The baselines run in this process, one seed at a time, while a worker is
    idle. Workers leave the process group and ignore SIGINT; a stop request (or a failed run)
    sets a shared Event that they poll before every batch, so each stopped run keeps the state
    of its last completed epoch.
    Appends to ``runs`` and ``base_rows``; raises the first failed run's error, or
    :class:`_JobInterrupted` when the job stopped before it finished.
    """
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    slots: list[dict | None] = []  # one per (seed, method), in the serial order
    tasks: dict[int, tuple] = {}  # slot -> (method, seed, cfg, run folder, steps)
    for seed in seed_list:
        for method, base_cfg in configs.items():
            cfg, run_dir, steps = _run_spec(method, base_cfg, seed, out, n_train)
            kept = _finished_run(cfg, run_dir, out) if resume else None
            if kept is not None:
                slots.append(kept)
                progress.advance(steps)
                continue
            tasks[len(slots)] = (method, seed, cfg, run_dir, steps)
            slots.append(None)
    base_seeds = list(seed_list) if baselines else []

    ctx = _pool_context()
    event, messages = ctx.Event(), ctx.Queue()
    counted: dict[int, int] = {}  # slot -> steps shown on the bar
    running: dict[int, str] = {}  # slot -> "method seed k", for the bar's description
    stopped: list[tuple] = []  # (TrainingInterrupted, (method, seed, run folder))
    not_started: list[int] = []
    error: BaseException | None = None

    def count(slot: int, steps: int) -> None:
        if steps > counted.get(slot, 0):
            progress.advance(steps - counted.get(slot, 0))
            counted[slot] = steps

    def drain() -> None:
        while True:
            try:
                kind, slot, value = messages.get_nowait()
            except (queue_mod.Empty, OSError, EOFError):
                return
            if kind == "start":
                running[slot] = value
                progress.set_description(", ".join(running.values()))
            else:
                count(slot, value)

    # The signal handler only sets the StopFlag; this thread passes it on to the workers,
    # also while this process is busy with the baselines.
    job_over = threading.Event()

    def relay() -> None:
        while not job_over.wait(0.1):
            if stop():
                event.set()
                return

    pool = None
    futures: dict = {}
    try:
        threading.Thread(target=relay, name="mnist-ssl-stop-relay", daemon=True).start()
        if tasks:
            pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx,
                                       initializer=_worker_init, initargs=(event, messages))
            with _signals_blocked():  # submit() starts the processes
                for slot, (method, seed, cfg, run_dir, _) in tasks.items():
                    futures[pool.submit(_worker_run, cfg.to_dict(), str(run_dir), resume, slot)] = slot
        not_done = set(futures)
        while not_done or (base_seeds and not event.is_set()):
            finished = set()
            if not_done:
                finished, not_done = wait(not_done, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for future in sorted(finished, key=futures.get):
                slot = futures[future]
                method, seed, cfg, run_dir, steps = tasks[slot]
                running.pop(slot, None)
                if future.cancelled():
                    not_started.append(slot)
                    continue
                try:
                    status, value = future.result()
                except BrokenProcessPool:
                    status, value = "error", MnistSSLError(
                        f"a worker process ended abruptly (killed, or out of memory?) and the runs in progress "
                        f"with it; finished runs are kept in {out}: continue with --resume")
                except Exception as e:  # noqa: BLE001 - a bug in a worker: stop the others, re-raise
                    status, value = "error", e
                if status == "ok":
                    slots[slot] = value = _relative_checkpoint(value, run_dir, out)
                    count(slot, steps)
                    if not quiet:
                        progress.write_line(f"== {method}, seed {seed}: {100 * value['accuracy']:.2f}% "
                                            f"({value['wall_time_s']['total']:.0f} s) ==")
                elif status == "interrupted":
                    phase, epoch, message = value
                    if phase == "reproduce":  # stopped before it began
                        not_started.append(slot)
                    else:
                        stopped.append((TrainingInterrupted(phase, epoch, message), (method, seed, run_dir)))
                    event.set()
                else:
                    error = error or value
                    event.set()
            if running:
                progress.set_description(", ".join(running.values()))
            if stop() or event.is_set():
                event.set()
                for future in not_done:
                    future.cancel()  # those not started yet; running ones stop at their next batch
                continue
            if base_seeds and len(not_done) < jobs:  # a core is free: one seed's baselines
                seed = base_seeds.pop(0)
                progress.set_description(f"baselines seed {seed}")
                base_rows.extend(_baselines(configs, out, seed, resume))
        drain()
    finally:
        job_over.set()
        if pool is not None:
            event.set()  # only matters when leaving early (a second Ctrl-C)
            pool.shutdown(wait=True, cancel_futures=True)
        messages.close()
    if error is not None:
        raise error
    runs.extend(r for r in slots if r is not None)
    if stopped or not_started or base_seeds:
        stopped.sort(key=lambda s: (s[1][1], list(configs).index(s[1][0])))  # the serial order
        if stopped:
            message = str(stopped[0][0])
        elif not_started:
            method, seed = tasks[min(not_started)][:2]
            message = f"interrupted before {method}, seed {seed}"
        else:
            message = f"interrupted before the baselines, seed {base_seeds[0]}"
        raise _JobInterrupted(message, stopped)


# What every worker imports; the fork server imports it once, and forks workers from it.
_PRELOAD = ["mnist_ssl.pipeline", "mnist_ssl.evaluation.probe", "mnist_ssl.report.plots", "sklearn.linear_model"]


def _pool_context():
    """"forkserver" where there is one (workers start in a fraction of a second: the modules are
    imported once, in a fresh process that has run nothing), else "spawn". Never "fork": the
    parent has run torch, and may hold threads and a CUDA context."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _baselines(configs: dict[str, RunConfig], out: Path, seed: int, resume: bool) -> list[dict]:
    """One seed's raw-pixel baselines (kept from an earlier job with ``resume``), on the sample
    of the seed's runs: the first method's, or the last whose classes differ (the sample the
    serial loop holds when it reaches the baselines). Loaded on the CPU: only sklearn uses it."""
    import torch

    from mnist_ssl.evaluation.baselines import run_baselines
    from mnist_ssl.pipeline import prepare_data

    bpath = out / "baselines" / f"seed{seed}.json"
    if resume and bpath.exists():
        return json.loads(bpath.read_text())
    data_cfg = None
    for base_cfg in configs.values():
        cfg = RunConfig.from_dict(dataclasses.replace(base_cfg, seed=seed).to_dict())
        if data_cfg is None or list(data_cfg.data.classes or range(10)) != list(cfg.data.classes or range(10)):
            data_cfg = cfg
    data = prepare_data(data_cfg, torch.device("cpu"))
    rows = run_baselines(data.train_images.float() / 255, data.train_targets,
                         data.test_images.float() / 255, data.test_targets, data.classes)
    for r in rows:
        r["seed"] = seed
    atomic_write_text(bpath, json.dumps(rows, indent=2))
    return rows


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _signals_blocked:
    """SIGINT and SIGTERM blocked in this thread while the pool starts its processes: the fork
    server and the workers inherit the mask, so a Ctrl-C or a SIGTERM sent to the whole process
    group can never kill them; the workers unblock them once they are in their own group
    (:func:`_worker_init`). The parent still sees such a signal: another thread receives it, and
    the StopFlag's handler runs in the main thread as usual."""

    def __enter__(self) -> None:
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) if hasattr(signal, "pthread_sigmask") else None

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old)


_WORKER: dict = {}


def _worker_init(event, messages) -> None:
    """Pool initializer. Signals are the parent's to handle: the worker leaves the job's process
    group (a Ctrl-C or SIGTERM to the group reaches only the parent, which sets ``event``) and
    ignores SIGINT; SIGTERM keeps its default, which the pool uses to end a broken pool's workers.
    A watcher thread stops the run at the next batch, and then the worker, if the parent dies."""
    import multiprocessing
    import os

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    messages.cancel_join_thread()  # never block this process's exit on progress messages
    _WORKER.update(event=event, messages=messages, orphaned=False, busy=False)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), name="mnist-ssl-parent-watch", daemon=True).start()


def _watch_parent(parent) -> None:
    import os

    parent.join()  # returns when the parent process has ended
    _WORKER["orphaned"] = True
    while _WORKER["busy"]:  # the run stops at its next batch, its state kept
        time.sleep(0.1)
    os._exit(1)  # an idle worker would otherwise wait for work forever


def _worker_stop() -> bool:
    return _WORKER["orphaned"] or _WORKER["event"].is_set()


def _worker_run(cfg_dict: dict, run_dir: str, resume: bool, slot: int) -> tuple[str, object]:
    """One (method, seed) run in a worker: ("ok", metrics), ("interrupted", (phase, epoch,
    message)) or ("error", an MnistSSLError)."""
    from mnist_ssl.pipeline import run_experiment, setup_threads

    cfg = RunConfig.from_dict(cfg_dict)
    setup_threads(cfg.threads or 1)  # one torch thread per process unless the config says more
    if _worker_stop():
        return "interrupted", ("reproduce", 0, f"interrupted before {cfg.method}, seed {cfg.seed}")
    messages = _WORKER["messages"]
    messages.put(("start", slot, f"{cfg.method} seed {cfg.seed}"))
    progress = _QueueProgress(messages, slot)
    _WORKER["busy"] = True
    try:
        return "ok", run_experiment(cfg, run_dir, quiet=True, progress=progress, stop_requested=_worker_stop,
                                    resume=resume)
    except TrainingInterrupted as e:  # its own pickling would lose phase and epoch
        return "interrupted", (e.phase, e.epoch, str(e))
    except MnistSSLError as e:
        try:  # what rebuilding it in the parent does; TrainingInterrupted, say, would fail
            type(e)(*e.args)
        except Exception:  # noqa: BLE001 - an error class with its own constructor
            e = MnistSSLError(str(e))
        return "error", e
    finally:
        _WORKER["busy"] = False
        progress.flush()


class _QueueProgress:
    """A worker's stand-in for the parent's ProgressBar: sends the run's step count so far,
    at most every 0.2 s and at the end of each epoch."""

    def __init__(self, messages, slot: int) -> None:
        self.messages, self.slot = messages, slot
        self.steps = self._sent = 0
        self._last = time.monotonic()

    def on_step(self, state) -> None:
        self.steps += 1
        if time.monotonic() - self._last >= 0.2:
            self.flush()

    def on_epoch_end(self, state, record: dict) -> None:
        self.flush()

    def flush(self) -> None:
        if self.steps != self._sent:
            self.messages.put(("steps", self.slot, self.steps))
            self._sent = self.steps
        self._last = time.monotonic()


def interrupted_message(e: TrainingInterrupted, current, out: Path, command: str) -> str:
    """What was kept, and the command that continues the job."""
    from mnist_ssl.objectives.registry import get_method

    kept = f"finished runs are kept in {out}"
    # With --jobs, several runs may have stopped: e.stopped lists (their interruption, their run).
    for run_e, run in getattr(e, "stopped", None) or [(e, current)]:
        if run is None or run_e.phase not in ("pretrain", "finetune"):
            continue
        method, seed, run_dir = run
        if run_e.saved_epoch > 0:
            kept += f"; {method} seed {seed} continues after {run_e.phase} epoch {run_e.saved_epoch} ({run_dir})"
        elif run_e.phase == "finetune" and get_method(method).build is not None:
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

    rows = ["| method | fine-tune % | with TTA % | linear probe % | kNN % | document % | seeds |",
            "|---|---|---|---|---|---|---|"]
    by_method: dict[str, list[dict]] = {}
    for r in metrics["runs"]:
        by_method.setdefault(r["method"], []).append(r)
    for m, rs in by_method.items():
        doc = METHODS[m].document_accuracy if m in METHODS else None
        rows.append(f"| {m} | {fmt([r['accuracy'] for r in rs])} | "
                    f"{fmt([r['tta']['accuracy'] for r in rs if r.get('tta')])} | "
                    f"{fmt([r['linear_probe']['accuracy'] for r in rs if 'linear_probe' in r])} | "
                    f"{fmt([r['knn']['accuracy'] for r in rs if 'knn' in r])} | "
                    f"{'-' if doc is None else f'{doc:.2f}'} | {len(rs)} |")
    by_base: dict[str, list[dict]] = {}
    for r in metrics["baselines"]:
        by_base.setdefault(r["method"], []).append(r)
    for m, rs in by_base.items():
        rows.append(f"| {m} (raw pixels) | {fmt([r['accuracy'] for r in rs])} | - | - | - | - | {len(rs)} |")
    n_test = metrics["runs"][0]["n_test"] if metrics["runs"] else 0
    return "\n".join(rows) + f"\n({n_test} test images per seed; wall time {metrics['wall_time_s']} s)"
