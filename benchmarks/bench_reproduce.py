"""Whole-job wall time and peak memory of ``mnist-ssl reproduce`` (one seed, every method, baselines, report).

The job runs as a child process; its peak resident memory is
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it ends (the largest
single process waited for; with ``--jobs N`` the workers are the fork server's
children and may not be counted). The job's process tree (the job, its fork
server and workers) is also sampled from /proc every 0.5 s: the peak of the sum
of their PSS (shared pages split between their sharers) and of their RSS (shared
pages counted in each process) at one moment, and the largest single process seen. Per-run times
come from its metrics.json.

    .venv/bin/python benchmarks/bench_reproduce.py                     # the default protocol, 1 thread
    .venv/bin/python benchmarks/bench_reproduce.py --threads 2 -- --methods mae,supervised
    .venv/bin/python benchmarks/bench_reproduce.py --keep runs/bench_job --out NAME   # keep the folder
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _tree_mem_kb(root: int) -> dict[int, tuple[int, int]]:
    """(RSS, PSS) in KiB of ``root`` and each of its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                          if line.startswith(("Rss:", "Pss:")))
            out[pid] = (int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0]))
        except (OSError, KeyError, ValueError):
            pass
    return out


def _sample(proc: subprocess.Popen, peak: dict, period: float = 0.5) -> None:
    """Until ``proc`` ends: the peak summed RSS and PSS of its tree, the largest process, the most processes.

    The summed RSS counts pages the workers share with the fork server once per process (an upper
    bound); the summed PSS splits each shared page between its sharers (the memory the job holds).
    """
    while proc.poll() is None:
        mem = _tree_mem_kb(proc.pid)
        if mem:
            peak["sum_kb"] = max(peak["sum_kb"], sum(r for r, _ in mem.values()))
            peak["pss_kb"] = max(peak["pss_kb"], sum(q for _, q in mem.values()))
            peak["one_kb"] = max(peak["one_kb"], max(r for r, _ in mem.values()))
            peak["procs"] = max(peak["procs"], len(mem))
        time.sleep(period)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="results name (default reproduce_t<threads>)")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="run the job in DIR and keep it (for bench_job_flops.py); default: a temporary folder")
    p.add_argument("extra", nargs="*", help="more arguments for mnist-ssl reproduce (after --)")
    args = p.parse_args()
    load_before = C.load()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.keep) if args.keep else Path(tmp) / "run"
        # One seed unless the extra arguments ask for more (printing both would misquote the command).
        seeds = [] if any(a == "--seeds" or a.startswith("--seeds=") for a in args.extra) else ["--seeds", "1"]
        cmd = [sys.executable, "-m", "mnist_ssl", "reproduce", *seeds, "--out", str(run), "--quiet",
               "--threads", str(args.threads), *args.extra]
        peak = {"sum_kb": 0, "pss_kb": 0, "one_kb": 0, "procs": 0}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = threading.Thread(target=_sample, args=(proc, peak), daemon=True)
        sampler.start()
        _, stderr = proc.communicate()
        wall = time.perf_counter() - t0
        sampler.join()
        if proc.returncode != 0:
            sys.exit(f"reproduce failed ({proc.returncode}):\n{stderr[-2000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        metrics = json.loads((run / "metrics.json").read_text())
    runs = [{"method": r["method"], "accuracy": r["accuracy"], **r["wall_time_s"]} for r in metrics["runs"]]
    result = {"benchmark": "reproduce", "command": " ".join(cmd[1:]).replace(str(run), "OUT"),
              "machine": C.machine(args.threads), "load_avg_before": load_before, "threads": args.threads,
              "wall_time_s": round(wall, 1), "job_wall_time_s": metrics["wall_time_s"],
              "peak_rss_mb": round(peak_mb, 1),
              "sampled_tree": {"peak_sum_rss_mb": round(peak["sum_kb"] / 1024, 1),
                               "peak_sum_pss_mb": round(peak["pss_kb"] / 1024, 1),
                               "peak_one_process_rss_mb": round(peak["one_kb"] / 1024, 1),
                               "max_processes": peak["procs"], "period_s": 0.5},
              "runs": runs}
    lines = [f"`mnist-ssl reproduce {' '.join(seeds + args.extra)}` ({args.threads} thread(s)): {wall:.1f} s wall "
             f"(job's own clock {metrics['wall_time_s']} s), peak RSS {peak_mb:.0f} MB (ru_maxrss, largest "
             f"process waited for); sampled process tree: peak sum of PSS {peak['pss_kb'] / 1024:.0f} MB (of RSS "
             f"{peak['sum_kb'] / 1024:.0f} MB), largest process "
             f"{peak['one_kb'] / 1024:.0f} MB, up to {peak['procs']} processes; "
             f"load average before {load_before}", "",
             "| method | pretrain s | fine-tune s | eval s | total s | accuracy % |", "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['method']} | {r.get('pretrain', '-')} | {r.get('finetune', '-')} | {r.get('eval', '-')} "
                     f"| {r.get('total', '-')} | {100 * r['accuracy']:.2f} |")
    C.emit(args.out or f"reproduce_t{args.threads}", result, "\n".join(lines))


if __name__ == "__main__":
    main()
