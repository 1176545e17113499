"""One pretraining epoch over 60,000 images per objective, augmentation included, through the engine.

Fashion-MNIST's 60,000 training images (Debian's dataset-fashion-mnist in
/usr/share/datasets/fashion-mnist, or any IDX folder with --data) are held as
one uint8 tensor; each objective runs one epoch of ``engine.loop.train`` at the
default size with its preset's augmentation (objectives whose preset has none,
MAE and Video MAE, get the default random affine: ``pretrain_augment.enabled=true``).
Each objective runs in its own process, which reports its wall time and peak RSS.

    .venv/bin/python benchmarks/bench_epoch60k.py                        # 1 thread, batch 32 (the default)
    .venv/bin/python benchmarks/bench_epoch60k.py --threads 2 --batch 256
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def one(args) -> None:
    """Child process: one epoch of one objective; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from mnist_ssl.data import load_idx_split
    from mnist_ssl.engine.loop import train
    from mnist_ssl.models.vit import ViTEncoder
    from mnist_ssl.objectives.registry import build_objective
    from mnist_ssl.experiment.data import clip_builder, make_view
    from mnist_ssl.experiment.runtime import resolve_device

    device = resolve_device(args.device)
    extra = [f"pretrain.batch_size={args.batch}", "pretrain.epochs=1", "pretrain_augment.enabled=true"]
    if args.compile:
        extra.append("compile=true")
    cfg = C.run_config(args.one, "default", extra)
    t0 = time.perf_counter()
    images = load_idx_split(args.data, args.dataset, "train").images.to(device)
    load_s = time.perf_counter() - t0
    torch.manual_seed(0)
    objective = build_objective(cfg, ViTEncoder(cfg.model)).to(device)
    t0 = time.perf_counter()
    train(objective, images, None, cfg.pretrain, phase="pretrain",
          view=make_view(cfg.pretrain_augment, clip_builder(cfg)), compile=cfg.compile)
    C.sync(device)
    epoch_s = time.perf_counter() - t0
    print(json.dumps({"objective": args.one, "images": int(len(images)), "load_s": round(load_s, 2),
                      "epoch_s": round(epoch_s, 1), "img_s": round(len(images) / epoch_s, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "augment": {k: v for k, v in cfg.pretrain_augment.__dict__.items()}}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", default=",".join(C.OBJECTIVES))
    p.add_argument("--data", default="/usr/share/datasets")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="results name (default epoch60k_t<threads>_b<batch>)")
    args = p.parse_args()
    if args.one:
        return one(args)
    load_before = C.load()
    rows = []
    for name in args.objectives.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--data", args.data, "--dataset", args.dataset,
               "--batch", str(args.batch), "--threads", str(args.threads), "--device", args.device]
        if args.compile:
            cmd.append("--compile")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stderr[-2000:]}")
        rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "load_avg_after": C.load()})
        print(f"# {name}: {rows[-1]['epoch_s']} s", file=sys.stderr, flush=True)
    result = {"benchmark": "epoch60k", "machine": C.machine(args.threads), "load_avg_before": load_before,
              "data": f"{args.data} ({args.dataset})", "batch": args.batch, "threads": args.threads,
              "device": args.device, "compile": args.compile, "rows": rows}
    lines = [f"One epoch over {rows[0]['images']} {args.dataset} images, default size, batch {args.batch}, "
             f"{args.threads} thread(s){', compiled' if args.compile else ''}; load average before {load_before}", "",
             "| objective | epoch s | img/s | peak RSS MB | under 2 min |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['objective']} | {r['epoch_s']} | {r['img_s']} | {r['peak_rss_mb']:.0f} | "
                     f"{'yes' if r['epoch_s'] < 120 else 'no'} |")
    C.emit(args.out or f"epoch60k_t{args.threads}_b{args.batch}" + ("_compile" if args.compile else ""),
           result, "\n".join(lines))


if __name__ == "__main__":
    main()
