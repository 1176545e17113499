"""Threads: one train step with 1 and 2 torch threads, alone and beside a busy neighbour process.

With two threads each step ends in OpenMP barriers: when another process holds
one of the two cores, a thread waits for its partner's time slice and a step
can take many times longer. This measures it: for each size and objective,
median and 90th-percentile step times at 1 and 2 threads, first alone, then
with a neighbour (a process spinning on one core) running.

    .venv/bin/python benchmarks/bench_threads.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", default="mae-zero,infonce")
    p.add_argument("--sizes", default="default,large")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="threads")
    args = p.parse_args()
    device = torch.device("cpu")
    load_before = C.load()
    rows = []
    for neighbour in (False, True):
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
        try:
            for size in args.sizes.split(","):
                for name in args.objectives.split(","):
                    stepper, _, _ = C.ours(name, size, args.batch, device)
                    for threads in (1, 2):
                        torch.set_num_threads(threads)
                        C.time_steps(stepper, 3, device)
                        ts = C.time_steps(stepper, args.steps, device)
                        rows.append({"size": size, "objective": name, "threads": threads, "neighbour": neighbour,
                                     "median_ms": round(1e3 * C.median(ts), 2),
                                     "p90_ms": round(1e3 * percentile(ts, 0.9), 2),
                                     "max_ms": round(1e3 * max(ts), 2),
                                     "img_s": round(args.batch / C.median(ts), 1), "load_avg": C.load()})
                        print(f"# {rows[-1]}", file=sys.stderr, flush=True)
        finally:
            if spin is not None:
                spin.kill()
                spin.wait()
    result = {"benchmark": "threads", "machine": C.machine(), "load_avg_before": load_before,
              "batch": args.batch, "rows": rows}
    lines = [f"Train step, batch {args.batch}; load average before {load_before}", "",
             "| size | objective | neighbour | threads | median ms | p90 ms | max ms | img/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['objective']} | {'busy' if r['neighbour'] else 'none'} | {r['threads']} "
                     f"| {r['median_ms']} | {r['p90_ms']} | {r['max_ms']} | {r['img_s']} |")
    C.emit(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
