"""Pretraining throughput of every objective beside the HuggingFace peer, in the same process.

For each size (the default config, and width 192 / depth 6) and each objective,
our train step (forward + loss + backward + optimiser, as the engine does it, on
fixed views) and the peer's (``ViTMAEForPreTraining``, or
``VideoMAEForPreTraining`` for Video MAE, configured to the same sizes) are
timed in alternating rounds; each round gives a ratio of images per second
(ours / peer), and the table shows the medians. FLOPs of a step are counted
with ``torch.utils.flop_counter.FlopCounterMode`` and divided by the median step
time, as a fraction of the fp32 matmul peak measured at the start.
Augmentation (made by the data layer, not part of the step) is timed apart.

    .venv/bin/python benchmarks/bench_throughput.py                 # 1 thread, batch 64
    .venv/bin/python benchmarks/bench_throughput.py --compile       # our step under torch.compile
    .venv/bin/python benchmarks/bench_throughput.py --objectives mae-zero --sizes large --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def bench_pair(name: str, size: str, args, device: torch.device, peak: float) -> dict:
    if args.compile:
        # Compile each model afresh, as its own run would: without this the rows after the first
        # of a code path were not compiled again (no compilation logged; warm-up = the steps' time).
        torch._dynamo.reset()
    extra = [] if args.dropout == "config" else [f"model.dropout={float(args.dropout)}"]
    ours, make_views, cfg = C.ours(name, size, args.batch, device, compile=args.compile, extra=extra)
    peer = C.hf_peer(C.OBJECTIVES[name][2], size, args.batch, device, frames=cfg.model.frames,
                     dropout=cfg.model.dropout)
    t0 = time.perf_counter()
    C.time_steps(ours, args.warmup, device)
    warm_s = time.perf_counter() - t0  # includes compilation with --compile
    C.time_steps(peer, args.warmup, device)
    times = {"ours": [], "peer": []}
    ratios = []
    for r in range(args.rounds):
        order = [("ours", ours), ("peer", peer)] if r % 2 == 0 else [("peer", peer), ("ours", ours)]
        per_round = {}
        for key, stepper in order:
            ts = C.time_steps(stepper, args.steps, device)
            times[key] += ts
            per_round[key] = C.median(ts)
        ratios.append(per_round["peer"] / per_round["ours"])  # = ours img/s / peer img/s
    aug = []
    for _ in range(args.steps):
        t = C.now(device)
        make_views()
        aug.append(C.now(device) - t)
    flops = {"ours": C.count_flops(ours), "peer": C.count_flops(peer)}
    out = {"objective": name, "size": size, "batch": args.batch, "peer_model": peer.name,
           "params": {"ours": sum(p.numel() for p in ours.module.parameters()),
                      "peer": sum(p.numel() for p in peer.module.parameters())},
           "warmup_s": round(warm_s, 2)}
    for key in ("ours", "peer"):
        med = C.median(times[key])
        out[key] = {"img_s": round(args.batch / med, 1), "step_ms": round(1e3 * med, 3),
                    "steps_timed": len(times[key]), "gflop_per_step": round(flops[key] / 1e9, 4),
                    "gflop_s": round(flops[key] / med / 1e9, 2),
                    "fraction_of_peak": round(flops[key] / med / 1e9 / peak, 3)}
    out["dropout"] = cfg.model.dropout
    out["ratio_per_round"] = [round(x, 3) for x in ratios]
    out["ratio_median"] = round(C.median(ratios), 3)
    # The same ratio per FLOP: how efficiently each side does the work it does.
    out["ratio_per_flop"] = round(out["ratio_median"] * flops["ours"] / flops["peer"], 3)
    out["augment_ms_per_batch"] = round(1e3 * C.median(aug), 3)
    out["load_avg_after"] = C.load()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", default=",".join(C.OBJECTIVES))
    p.add_argument("--sizes", default="default,large")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round and side (default 10)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="our step through torch.compile")
    p.add_argument("--dropout", default="config",
                   help="dropout of both sides: 'config' (ours as configured, 0.1 by default; HF's "
                        "hidden_dropout_prob set to the same) or a number (default config)")
    p.add_argument("--peak-n", type=int, default=4096, help="matmul size for the fp32 peak")
    p.add_argument("--out", default=None, help="results name (default throughput[_compile][_DEVICE])")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = C.load()
    peak = C.matmul_peak_gflops(args.peak_n, device=args.device)
    rows = []
    for size in args.sizes.split(","):
        for name in args.objectives.split(","):
            r = bench_pair(name, size, args, device, peak)
            rows.append(r)
            print(f"# {size} {name}: ours {r['ours']['img_s']} img/s, peer {r['peer']['img_s']} img/s, "
                  f"ratio {r['ratio_median']}", file=sys.stderr, flush=True)
    result = {"benchmark": "throughput", "machine": C.machine(), "load_avg_before": load_before,
              "threads": args.threads, "device": args.device, "compile": args.compile, "dropout": args.dropout,
              "matmul_peak_gflop_s": round(peak, 1), "peak_n": args.peak_n, "rows": rows}
    lines = [f"fp32 matmul peak ({args.peak_n}^3, {args.threads} thread(s)): {peak:.1f} GFLOP/s; "
             f"batch {args.batch}; dropout {rows[0]['dropout']} on both sides; load average before "
             f"{load_before}, after {C.load()}",
             "",
             "| size | objective | ours img/s | peer | peer img/s | ratio (median of rounds) | ratios per round "
             "| ratio per FLOP | ours GFLOP/step | peer GFLOP/step | ours GFLOP/s (% peak) | peer GFLOP/s (% peak) "
             "| augment ms/batch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, q = r["ours"], r["peer"]
        lines.append(f"| {r['size']} | {r['objective']}{' (compiled)' if args.compile else ''} | {o['img_s']} "
                     f"| {r['peer_model']} | {q['img_s']} | {r['ratio_median']:.2f}x | "
                     f"{', '.join(f'{x:.2f}' for x in r['ratio_per_round'])} | {r['ratio_per_flop']:.2f}x | "
                     f"{o['gflop_per_step']:.2f} | {q['gflop_per_step']:.2f} | "
                     f"{o['gflop_s']} ({100 * o['fraction_of_peak']:.0f}%) | "
                     f"{q['gflop_s']} ({100 * q['fraction_of_peak']:.0f}%) | {r['augment_ms_per_batch']} |")
    name = args.out or ("throughput" + ("_compile" if args.compile else "")
                        + ("" if args.dropout == "config" else f"_dropout{args.dropout}")
                        + ("" if args.device == "cpu" else "_" + args.device))
    C.emit(name, result, "\n".join(lines))


if __name__ == "__main__":
    main()
