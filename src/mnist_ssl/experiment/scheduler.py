"""The one scheduler of (method, seed) runs, and the stop flag every long command polls.

A plan is a list of items in the order a one-process job takes them: runs
(:class:`RunTask`) and work done in this process between them (:class:`LocalTask`, e.g. a
seed's baselines). :func:`schedule` starts the items in that order on ``jobs`` workers:
``jobs=1`` is :class:`InProcessWorker`, this process itself, with the per-epoch lines and
confusion matrices printed; ``jobs > 1`` is a pool of worker processes, one line per finished
run. A local item starts when a worker is free; an item with prerequisites (a batched group
after its seeds' pretrainings) when they have finished, the items after it starting meanwhile. The results come back in the plan's order,
whatever the order the runs finished in.

Stops: SIGINT/SIGTERM set the :class:`StopFlag`; the runs poll it (pool workers through a
shared Event) before every batch, so each stopped run keeps the state of its last completed
epoch, and :func:`schedule` raises :class:`JobStopped` listing them.
"""

from __future__ import annotations

import json
import queue as queue_mod
import signal
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from mnist_ssl.engine.callbacks import TrainingInterrupted
from mnist_ssl.errors import MnistSSLError
from mnist_ssl.experiment.rundir import RunDir

SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        for sig in SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class RunTask:
    """One (method, seed) run of a plan: its config (a RunConfig), its folder, its step count."""

    method: str
    seed: int
    cfg: Any
    run: RunDir
    steps: int

    @property
    def label(self) -> str:
        return f"{self.method}, seed {self.seed}"


@dataclass
class PretrainTask:
    """The pretraining of runs of a :class:`RunGroup`, as a plan item of its own: a group's seeds
    pretrain on several workers at once (MAE's seeds of one item as one batched model,
    experiment/batched_runs.py ``pretrain_runs``), and the group fine-tunes them batched
    afterwards from the encoders they saved. Its result is the seconds it pretrained (the time
    goes to the runs' metrics)."""

    tasks: list
    steps: int

    @property
    def method(self) -> str:
        return self.tasks[0].method

    @property
    def seed(self) -> int | str:
        return self.tasks[0].seed if len(self.tasks) == 1 else ", ".join(str(t.seed) for t in self.tasks)

    @property
    def cfg(self):
        return self.tasks[0].cfg

    @property
    def run(self) -> RunDir:
        return self.tasks[0].run

    @property
    def label(self) -> str:
        if len(self.tasks) == 1:
            return f"{self.tasks[0].label} (pretraining)"
        return f"{self.method}, seeds {self.seed} (pretraining, batched)"


@dataclass
class RunGroup:
    """Several seeds of one method whose fine-tuning shares its steps (engine/batched.py):
    one plan item, one worker; its result is the list of its runs' metrics. ``after``: the
    :class:`PretrainTask` items that pretrain its runs first (on other workers); the group then
    starts from their saved encoders, and ``steps`` counts only what is left."""

    tasks: list
    after: list = field(default_factory=list)

    @property
    def steps(self) -> int:
        return sum(t.steps for t in self.tasks) - sum(p.steps for p in self.after)

    @property
    def method(self) -> str:
        return self.tasks[0].method

    @property
    def seed(self) -> str:
        return ", ".join(str(t.seed) for t in self.tasks)

    @property
    def label(self) -> str:
        return f"{self.tasks[0].method}, seeds {', '.join(str(t.seed) for t in self.tasks)} (batched)"

    @property
    def run(self) -> RunDir:
        return self.tasks[0].run


def execute(item, *, quiet: bool, progress, stop_requested, resume: bool, data=None, spare_core: bool = False):
    """Run a RunTask (-> its metrics), a RunGroup (-> its runs' metrics) or a PretrainTask
    (-> its pretraining seconds). ``spare_core``: this process is the job's only worker, so the
    item's runs may put their frozen evaluations on an idle core (run.FrozenEvaluations)."""
    if isinstance(item, PretrainTask):
        from mnist_ssl.experiment.batched_runs import pretrain_runs

        return pretrain_runs([t.cfg for t in item.tasks], [t.run.path for t in item.tasks], quiet=quiet,
                             progress=progress, stop_requested=stop_requested, data=data, resume=resume)
    if isinstance(item, RunGroup):
        from mnist_ssl.experiment.batched_runs import run_experiments_batched

        # After its PretrainTasks the group continues from the encoders they saved in this job,
        # as --resume continues a run whose pretraining had finished.
        return run_experiments_batched([t.cfg for t in item.tasks], [t.run.path for t in item.tasks], quiet=quiet,
                                       progress=progress, stop_requested=stop_requested,
                                       resume=resume or bool(item.after), spare_core=spare_core)
    from mnist_ssl.experiment.run import run_experiment

    return run_experiment(item.cfg, item.run.path, quiet=quiet, progress=progress, stop_requested=stop_requested,
                          data=data, resume=resume, spare_core=spare_core)


@dataclass
class LocalTask:
    """Work done in this process at its place in the plan; ``kept()``: already done earlier
    (--resume), so a stop does not prevent it."""

    name: str
    work: Callable[[], Any]
    kept: Callable[[], bool] = lambda: False


class JobStopped(TrainingInterrupted):
    """The job stopped before it finished; ``stopped`` lists (TrainingInterrupted, RunTask) of the
    runs that were in progress, for the message that tells what was kept."""

    def __init__(self, message: str, stopped: list, results: list) -> None:
        super().__init__("reproduce", 0, message)
        self.stopped = stopped
        self.results = results  # as schedule() returns them, None for what did not finish


def schedule(plan: list, *, jobs: int, stop: StopFlag, progress, quiet: bool, resume: bool,
             on_run_done: Callable[[RunTask, dict], dict] = lambda task, m: m) -> list:
    """Execute ``plan`` (RunTask and LocalTask items; any other item is a result kept from
    before, e.g. a finished run's metrics) on ``jobs`` workers; -> each item's result,
    in the plan's order (a run's metrics after ``on_run_done``; a local task's return value).
    Raises the first failed run's error, or :class:`JobStopped` when the job stopped early."""
    state = _Schedule(plan, jobs, stop, progress, quiet)
    workers = InProcessWorker(state, resume) if jobs == 1 else PoolWorkers(state, jobs, resume)
    with workers:
        state.loop(workers, on_run_done)
    return state.finish()


class _Schedule:
    """The bookkeeping of one :func:`schedule` call: what waits, runs, finished or stopped."""

    def __init__(self, plan: list, jobs: int, stop: StopFlag, progress, quiet: bool) -> None:
        self.plan, self.jobs, self.stop, self.progress, self.quiet = plan, jobs, stop, progress, quiet
        todo = [slot for slot, item in enumerate(plan) if isinstance(item, (LocalTask, RunTask, RunGroup, PretrainTask))]
        self.pending = deque(todo)
        # Any other item is a result kept from before (--resume).
        self.results: list = [None if slot in todo else item for slot, item in enumerate(plan)]
        self.slot_of = {id(item): slot for slot, item in enumerate(plan)}
        self.done: set[int] = set()  # slots finished in this call
        self.in_flight: dict[Future, int] = {}
        self.counted: dict[int, int] = {}  # slot -> steps shown on the bar
        self.running: dict[int, str] = {}  # slot -> "method seed k", for the bar's description
        self.stopped: list[tuple] = []  # (TrainingInterrupted, RunTask)
        self.error: BaseException | None = None
        self.halted = False  # a stop or an error: nothing new starts

    def count(self, slot: int, steps: int) -> None:
        if steps > self.counted.get(slot, 0):
            self.progress.advance(steps - self.counted.get(slot, 0))
            self.counted[slot] = steps

    def started(self, slot: int, description: str) -> None:
        self.running[slot] = description
        self.progress.set_description(", ".join(self.running.values()))

    def loop(self, workers, on_run_done) -> None:
        while True:
            if self.stop():
                workers.halt()
                self.halted = True
            if not self.halted:
                self._start_next(workers)
            if not self.in_flight:
                return
            done, _ = wait(set(self.in_flight), timeout=0.2, return_when=FIRST_COMPLETED)
            workers.poll()
            for future in sorted(done, key=self.in_flight.get):
                self._collect(self.in_flight.pop(future), future, on_run_done)
            if self.error is not None or self.stopped:
                workers.halt()
                self.halted = True

    def _ready(self, slot: int) -> bool:
        """Whether the item's prerequisites (a RunGroup's PretrainTasks) have finished."""
        return all(self.slot_of[id(p)] in self.done for p in getattr(self.plan[slot], "after", ()))

    def _start_next(self, workers) -> None:
        """Start plan items in order while a worker is free, each as soon as its prerequisites
        have finished (one that waits lets the next ones start); a local item runs here and now."""
        while len(self.in_flight) < self.jobs:
            slot = next((s for s in self.pending if self._ready(s)), None)
            if slot is None:
                return
            item = self.plan[slot]
            if isinstance(item, LocalTask):
                if self.stop() and not item.kept():
                    return
                self.pending.remove(slot)
                self.progress.set_description(item.name)
                self.results[slot] = item.work()
                self.done.add(slot)
                continue
            if self.stop():
                return
            self.pending.remove(slot)
            self.in_flight[workers.submit(slot, item)] = slot

    def _collect(self, slot: int, future: Future, on_run_done) -> None:
        task = self.plan[slot]
        self.running.pop(slot, None)
        try:
            status, value = future.result()
        except Exception as e:  # noqa: BLE001 - a broken pool or a bug in a worker: stop the others
            status, value = "error", _pool_error(e, task)
        if status == "ok" and isinstance(task, PretrainTask):
            self.done.add(slot)
            self.count(slot, task.steps)
            if self.jobs > 1 and not self.quiet:
                self.progress.write_line(f"== {task.label}: done ({value:.0f} s) ==")
        elif status == "ok":
            self.done.add(slot)
            pairs = list(zip(task.tasks, value)) if isinstance(task, RunGroup) else [(task, value)]
            done = [on_run_done(t, m) for t, m in pairs]
            self.results[slot] = done if isinstance(task, RunGroup) else done[0]
            self.count(slot, task.steps)
            if self.jobs > 1 and not self.quiet:
                for t, m in zip([t for t, _ in pairs], done):
                    self.progress.write_line(f"== {t.label}: {100 * m['accuracy']:.2f}% "
                                             f"({m['wall_time_s']['total']:.0f} s) ==")
        elif status == "interrupted":
            phase, epoch, message = value
            if phase == "reproduce":  # stopped before it began: it is still to do
                self.pending = deque(sorted([*self.pending, slot]))
            else:
                self.stopped.append((TrainingInterrupted(phase, epoch, message), task))
            self.halted = True
        else:
            self.error = self.error or value
        if self.running:
            self.progress.set_description(", ".join(self.running.values()))

    def finish(self) -> list:
        if self.error is not None:
            raise self.error
        if self.stopped or self.pending:
            order = {id(item): slot for slot, item in enumerate(self.plan)}
            self.stopped.sort(key=lambda stopped: order[id(stopped[1])])  # the plan's order
            if self.stopped:
                message = str(self.stopped[0][0])
            else:
                item = self.plan[self.pending[0]]
                message = (f"interrupted before {item.label}" if isinstance(item, (RunTask, RunGroup, PretrainTask))
                           else f"interrupted before {item.name}")
            raise JobStopped(message, self.stopped, self.results)
        return self.results


def _pool_error(e: Exception, task: RunTask) -> Exception:
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(e, BrokenProcessPool):
        return MnistSSLError(f"a worker process ended abruptly (killed, or out of memory?) and the runs in "
                             f"progress with it; finished runs are kept in {task.run.path.parents[2]}: "
                             "continue with --resume")
    return e


def _run_outcome(run: Callable[[], dict]) -> tuple[str, object]:
    """("ok", metrics), ("interrupted", (phase, epoch, message)) or ("error", an MnistSSLError)."""
    try:
        return "ok", run()
    except TrainingInterrupted as e:  # its own pickling would lose phase and epoch
        return "interrupted", (e.phase, e.epoch, str(e))
    except MnistSSLError as e:
        try:  # what rebuilding it in the parent does; TrainingInterrupted, say, would fail
            type(e)(*e.args)
        except Exception:  # noqa: BLE001 - an error class with its own constructor
            e = MnistSSLError(str(e))
        return "error", e


# ----- jobs=1: this process -------------------------------------------------------------
class InProcessWorker:
    """The one-worker case: each run executes in this process when it is submitted (the future
    is done on return), with the job's progress bar and stop flag; a seed's sample is loaded
    once for the runs that share it."""

    def __init__(self, state: _Schedule, resume: bool) -> None:
        self.state, self.resume = state, resume
        self._data_key = self._data = None

    def __enter__(self) -> "InProcessWorker":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def halt(self) -> None:
        pass  # the run in progress polls the stop flag itself

    def poll(self) -> None:
        pass

    def submit(self, slot: int, task: RunTask) -> Future:
        from mnist_ssl.experiment.data import prepare_data
        from mnist_ssl.experiment.runtime import resolve_device

        state = self.state
        one_sample = isinstance(task, RunTask) or (isinstance(task, PretrainTask) and len(task.tasks) == 1)
        if one_sample:
            key = (task.seed, json.dumps(task.cfg.data.__dict__, sort_keys=True))
            if key != self._data_key:
                self._data, self._data_key = prepare_data(task.cfg, resolve_device(task.cfg.device)), key
            state.started(slot, f"{task.method} seed {task.seed}")
        else:
            state.started(slot, task.label)
        if not state.quiet:
            state.progress.write_line(f"== {task.label} ==")
        future: Future = Future()
        future.set_result(_run_outcome(lambda: execute(
            task, quiet=state.quiet, progress=state.progress, stop_requested=state.stop, resume=self.resume,
            data=self._data if one_sample else None, spare_core=True)))  # the only worker
        state.counted[slot] = task.steps  # the run drew its steps on the bar itself
        return future


# ----- jobs > 1: worker processes -----------------------------------------------------
# What every worker imports; the fork server imports it once, and forks workers from it.
PRELOAD = ["mnist_ssl.experiment.run", "mnist_ssl.evaluation.probe", "mnist_ssl.report.plots",
           "sklearn.linear_model"]


class PoolWorkers:
    """``jobs`` worker processes. Each loads its own data and runs quietly with the config's torch
    threads; its progress comes back through a queue. Workers leave the process group and ignore
    SIGINT; a stop request (or a failed run) sets a shared Event that they poll before every batch."""

    def __init__(self, state: _Schedule, jobs: int, resume: bool) -> None:
        self.state, self.jobs, self.resume = state, jobs, resume
        self.ctx = _pool_context()
        self.event, self.messages = self.ctx.Event(), self.ctx.Queue()
        self.pool = None
        self._over = threading.Event()

    def __enter__(self) -> "PoolWorkers":
        # The signal handler only sets the StopFlag; this thread passes it on to the workers,
        # also while this process is busy with local work (the baselines).
        threading.Thread(target=self._relay, name="mnist-ssl-stop-relay", daemon=True).start()
        return self

    def _relay(self) -> None:
        while not self._over.wait(0.1):
            if self.state.stop():
                self.event.set()
                return

    def __exit__(self, *exc) -> None:
        self._over.set()
        if self.pool is not None:
            self.event.set()  # only matters when leaving early (a second Ctrl-C)
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.poll()
        self.messages.close()

    def halt(self) -> None:
        self.event.set()

    def submit(self, slot: int, task: RunTask) -> Future:
        from concurrent.futures import ProcessPoolExecutor

        if self.pool is None:
            n_runs = sum(isinstance(item, (RunTask, RunGroup, PretrainTask)) for item in self.state.plan)
            self.pool = ProcessPoolExecutor(max_workers=min(self.jobs, n_runs), mp_context=self.ctx,
                                            initializer=_worker_init, initargs=(self.event, self.messages))
        with _signals_blocked():  # submit() starts the processes
            tasks = task.tasks if isinstance(task, RunGroup) else [task]
            kind = "group" if isinstance(task, RunGroup) else "pretrain" if isinstance(task, PretrainTask) else "run"
            resume = self.resume or bool(getattr(task, "after", None))  # see execute()
            return self.pool.submit(_worker_run, [(t.cfg.to_dict(), str(t.run.path)) for t in tasks],
                                    kind, resume, slot)

    def poll(self) -> None:
        while True:
            try:
                kind, slot, value = self.messages.get_nowait()
            except (queue_mod.Empty, OSError, EOFError, ValueError):
                return
            if kind == "start":
                self.state.started(slot, value)
            else:
                self.state.count(slot, value)


def _pool_context():
    """"forkserver" where there is one (workers start in a fraction of a second: the modules are
    imported once, in a fresh process that has run nothing), else "spawn". Never "fork": the
    parent has run torch, and may hold threads and a CUDA context."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class _signals_blocked:
    """SIGINT and SIGTERM blocked in this thread while the pool starts its processes: the fork
    server and the workers inherit the mask, so a Ctrl-C or a SIGTERM sent to the whole process
    group can never kill them; the workers unblock them once they are in their own group
    (:func:`_worker_init`). The parent still sees such a signal: another thread receives it, and
    the StopFlag's handler runs in the main thread as usual."""

    def __enter__(self) -> None:
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS) if hasattr(signal, "pthread_sigmask") else None

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
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
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


def _worker_run(runs: list[tuple[dict, str]], kind: str, resume: bool, slot: int) -> tuple[str, object]:
    """One (method, seed) run ("run"), a RunGroup of them ("group") or the pretraining of some
    of a group's runs ("pretrain"), in a worker, as :func:`_run_outcome` reports it. runs: (config dict, run
    folder) of each run; ``resume`` here already says whether a group continues from saved encoders."""
    from mnist_ssl.experiment.rundir import RunDir
    from mnist_ssl.experiment.runtime import setup_threads
    from mnist_ssl.objectives.registry import RunConfig

    tasks = []
    for cfg_dict, run_dir in runs:
        cfg = RunConfig.from_dict(cfg_dict)
        tasks.append(RunTask(cfg.method, cfg.seed, cfg, RunDir(run_dir), 0))
    item = RunGroup(tasks) if kind == "group" else PretrainTask(tasks, 0) if kind == "pretrain" else tasks[0]
    setup_threads(tasks[0].cfg.threads or 1)  # one torch thread per process unless the config says more
    if _worker_stop():
        return "interrupted", ("reproduce", 0, f"interrupted before {item.label}")
    messages = _WORKER["messages"]
    messages.put(("start", slot, item.label))
    progress = _QueueProgress(messages, slot)
    _WORKER["busy"] = True
    try:
        return _run_outcome(lambda: execute(item, quiet=True, progress=progress, stop_requested=_worker_stop,
                                            resume=resume))
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
