"""Work done in a forked child process while this process trains: a run's frozen evaluations
beside its fine-tuning, when the machine has a core that the run does not use.

The frozen evaluations (probe and kNN of the pretrained and of the randomly initialised
encoder) depend only on the encoder and the sample, and draw nothing from the random state
that fine-tuning uses (stages.frozen), so they give the same numbers in a child as in this
process; with one torch thread a process, the child's core would otherwise idle while the
run fine-tunes. The child is forked (as PyTorch's DataLoader workers are on Linux), so it
starts with the encoder and the data in memory, and writes its files atomically itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from typing import Any, Callable


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, as ``taskset`` sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def runnable_elsewhere(looks: int = 3, gap_s: float = 0.02) -> int:
    """Processes running or waiting for a core on this machine besides this one (Linux's
    /proc/loadavg, the least of a few looks: a momentary process is not load); 0 where unknown."""
    counts = []
    for i in range(looks):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return 0
        if i + 1 < looks:
            time.sleep(gap_s)
    return max(0, min(counts) - 1)


def has_spare_core(device_type: str, threads: int) -> bool:
    """Whether a run in this process leaves a core idle for a child: on the CPU, where fork
    exists, with room for twice the run's torch threads beside what else is running now (on a
    busy machine a child would only slow the run down; where /proc/loadavg counts a whole host
    rather than this container, the child is not started)."""
    if device_type != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
        return False
    return usable_cores() - runnable_elsewhere() >= 2 * max(1, threads)


class Beside:
    """``work()`` in a forked child; :meth:`result` waits for its return value and its seconds.
    Use as a context manager: leaving it before the result (a stop, an error) ends the child."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._done = None
        ctx = multiprocessing.get_context("fork")
        self._conn, child_end = ctx.Pipe(duplex=False)
        self._child = ctx.Process(target=_child_main, args=(work, child_end), daemon=True)
        self._child.start()
        child_end.close()

    def result(self) -> tuple[Any, float]:
        """-> (what ``work`` returned, the seconds it took); raises what it raised, as RuntimeError."""
        if self._done is not None:
            return self._done
        try:
            kind, value, seconds = self._conn.recv()
        except EOFError:
            self._child.join()
            raise RuntimeError(f"the frozen evaluations' process ended without a result "
                               f"(exit code {self._child.exitcode})") from None
        finally:
            self._conn.close()
        self._child.join()
        if kind == "error":
            raise RuntimeError(f"in the frozen evaluations' process: {value}")
        self._done = (value, seconds)
        return self._done

    def close(self) -> None:
        """End the child if it is still running (nothing when the result came back)."""
        if self._child is not None and self._child.is_alive():
            self._child.kill()
            self._child.join()

    def __enter__(self) -> "Beside":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _child_main(work: Callable[[], Any], conn) -> None:
    # The parent handles Ctrl-C and SIGTERM (it stops its run and then ends this child).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    t0 = time.perf_counter()
    try:
        message = ("ok", work(), time.perf_counter() - t0)
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
        message = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", 0.0)
    try:
        conn.send(message)
    except OSError:
        pass  # the parent has gone (killed); nothing is waiting for the result
    finally:
        conn.close()
