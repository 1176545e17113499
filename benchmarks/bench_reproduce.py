"""Whole-job wall time and peak memory of ``mnist-ssl reproduce`` (one seed, every method, baselines, report).

The job runs as a child process; its peak resident memory is
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it ends (the largest
child waited for: here the only one). Per-run times come from its metrics.json.

    .venv/bin/python benchmarks/bench_reproduce.py                     # the default protocol, 1 thread
    .venv/bin/python benchmarks/bench_reproduce.py --threads 2 -- --methods mae,supervised
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="results name (default reproduce_t<threads>)")
    p.add_argument("extra", nargs="*", help="more arguments for mnist-ssl reproduce (after --)")
    args = p.parse_args()
    load_before = C.load()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "mnist_ssl", "reproduce", "--seeds", "1", "--out", str(run), "--quiet",
               "--threads", str(args.threads), *args.extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"reproduce failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        metrics = json.loads((run / "metrics.json").read_text())
    runs = [{"method": r["method"], "accuracy": r["accuracy"], **r["wall_time_s"]} for r in metrics["runs"]]
    result = {"benchmark": "reproduce", "command": " ".join(cmd[1:]).replace(str(run), "OUT"),
              "machine": C.machine(), "load_avg_before": load_before, "threads": args.threads,
              "wall_time_s": round(wall, 1), "job_wall_time_s": metrics["wall_time_s"],
              "peak_rss_mb": round(peak_mb, 1), "runs": runs}
    lines = [f"`mnist-ssl reproduce --seeds 1` ({args.threads} thread(s)): {wall:.1f} s wall "
             f"(job's own clock {metrics['wall_time_s']} s), peak RSS {peak_mb:.0f} MB; "
             f"load average before {load_before}", "",
             "| method | pretrain s | fine-tune s | eval s | total s | accuracy % |", "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['method']} | {r.get('pretrain', '-')} | {r.get('finetune', '-')} | {r.get('eval', '-')} "
                     f"| {r.get('total', '-')} | {100 * r['accuracy']:.2f} |")
    C.emit(args.out or f"reproduce_t{args.threads}", result, "\n".join(lines))


if __name__ == "__main__":
    main()
