"""The achieved FLOP rate of a finished ``mnist-ssl reproduce`` job, as a fraction of the matmul peak.

For every run of the job folder the training FLOPs are counted, not estimated by hand: one
forward + backward of the run's own objective (its config.json: model size, masking, views,
crops) on a real batch of its pretraining batch size, and of the fine-tuning step (the
classifier at the fine-tuning batch size), each by ``torch.utils.flop_counter.FlopCounterMode``
(matmuls, convolutions, attention; elementwise work is not counted, as in bench_throughput.py),
divided by the batch and multiplied by the images the phase trained on (sample size x epochs).
Evaluation (probes, test, TTA) is counted as encoder forwards of the images it encodes. The
run's own stage clocks (``wall_time_s`` in its metrics.json) give the rate per run; the job's
wall time gives the rate of the whole job against the machine's peak (every core).

    .venv/bin/python benchmarks/bench_job_flops.py RUN_DIR --out job_flops_NAME
    .venv/bin/python benchmarks/bench_job_flops.py RUN_DIR --peak-1t 73.2 --peak-all 140  # peaks given
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=1)
def _embedded_images() -> torch.Tensor:
    from mnist_ssl.data import load_embedded

    return load_embedded().images


def _images(n: int) -> torch.Tensor:
    """The first n embedded images in [0, 1] (read once for every run and phase)."""
    return _embedded_images()[:n].float().div_(255.0)


def run_flops(cfg, n_train: int, n_test: int) -> dict:
    """Counted FLOPs of one run's phases: pretraining, fine-tuning, evaluation."""
    from mnist_ssl.experiment.data import clip_builder, make_view
    from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
    from mnist_ssl.objectives.registry import build_objective
    from mnist_ssl.objectives.supervised import Supervised

    torch.manual_seed(0)
    out = {}
    if cfg.method != "supervised":
        objective = build_objective(cfg, ViTEncoder(cfg.model))
        objective.train()
        b = cfg.pretrain.batch_size
        view = make_view(cfg.pretrain_augment, clip_builder(cfg))
        x = _images(b)
        views = [view(x) if view is not None else x for _ in range(objective.views)]
        per_image = _flops(lambda: objective(views, None).loss.backward()) / b
        out["pretrain"] = per_image * n_train * cfg.pretrain.epochs
    encoder = ViTEncoder(cfg.model)
    clf = Supervised(ViTClassifier(encoder, cfg.data.num_classes))
    clf.train()
    b = cfg.finetune.batch_size
    x = _images(b)
    y = torch.zeros(b, dtype=torch.long)
    per_image = _flops(lambda: clf([x], y).loss.backward()) / b
    out["finetune"] = per_image * n_train * cfg.finetune.epochs
    encoder.eval()
    with torch.no_grad():
        fwd = _flops(lambda: encoder(_images(64))) / 64
    # features of train + test for the pretrained and the random-init probes, the test set, TTA copies
    tta = cfg.eval.tta_views
    out["eval"] = fwd * (2 * (n_train + n_test) + n_test * (1 + tta))
    return out


def pretrain_seconds(folder: Path) -> float | None:
    """The pretraining epochs' own clocks summed from log.jsonl (the last record of each epoch): the
    whole phase even when the run was resumed, whose metrics.json times only the part after the resume."""
    times = {}
    for line in (folder / "log.jsonl").read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if rec.get("phase") == "pretrain" and "time_s" in rec:
            times[rec["epoch"]] = rec["time_s"]
    return sum(times.values()) or None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", help="a finished reproduce folder (metrics.json, runs/<method>/seed<k>/)")
    p.add_argument("--out", default=None, help="results name under benchmarks/results/ (default: print only)")
    p.add_argument("--peak-1t", type=float, default=None, help="one-thread fp32 matmul peak, GFLOP/s (default: measure)")
    p.add_argument("--peak-all", type=float, default=None,
                   help="all-core fp32 matmul peak, GFLOP/s (default: measure with every core)")
    args = p.parse_args()

    from mnist_ssl.objectives.registry import RunConfig

    job = Path(args.job)
    metrics = json.loads((job / "metrics.json").read_text())
    torch.set_num_threads(1)
    load_before = C.load()
    peaks_given = args.peak_1t is not None and args.peak_all is not None
    peak_1t = args.peak_1t or C.matmul_peak_gflops()
    cores = os.cpu_count() or 1
    if args.peak_all is None:
        torch.set_num_threads(cores)
        peak_all = C.matmul_peak_gflops()
        torch.set_num_threads(1)
    else:
        peak_all = args.peak_all
    rows, total_flops, total_run_s = [], 0.0, 0.0
    for run in metrics["runs"]:
        folder = job / "runs" / run["method"] / f"seed{run['seed']}"
        cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
        n_test = int(run["n_test"])
        # a class with fewer images than train_per_class gives all it has: the test count is the exact one,
        # the training count is the configured one (the document's 100 a class always exist)
        n_train = int(cfg.data.train_per_class) * cfg.data.num_classes if cfg.data.train_per_class else n_test
        flops = run_flops(cfg, n_train, n_test)
        wall = dict(run["wall_time_s"])
        if cfg.method != "supervised":
            logged = pretrain_seconds(folder)
            if logged is not None and logged > wall.get("pretrain", 0.0) + 1.0:
                wall["total"] += logged - wall.get("pretrain", 0.0)  # a resumed run: its whole pretraining
                wall["pretrain"] = logged
        row = {"method": run["method"], "seed": run["seed"], "gflop": {k: v / 1e9 for k, v in flops.items()},
               "wall_s": {k: wall.get(k) for k in ("pretrain", "finetune", "eval", "total")}}
        for phase in ("pretrain", "finetune"):
            if flops.get(phase) and wall.get(phase):
                row[f"{phase}_gflops"] = flops[phase] / 1e9 / wall[phase]
                row[f"{phase}_of_peak_1t"] = row[f"{phase}_gflops"] / peak_1t
        row["run_gflops"] = sum(flops.values()) / 1e9 / wall["total"]
        row["run_of_peak_1t"] = row["run_gflops"] / peak_1t
        rows.append(row)
        total_flops += sum(flops.values())
        total_run_s += wall["total"]
    job_wall = float(metrics.get("wall_time_s") or 0.0)
    result = {
        "job": str(job), "command": metrics.get("command"), "machine": C.machine(1), "load_before": load_before,
        "load_after": C.load(), "peaks_measured_here": not peaks_given, "peak_gflops_1_thread": peak_1t, "peak_gflops_all_cores": peak_all, "cores": cores,
        "runs": rows, "total_gflop": total_flops / 1e9, "sum_of_run_wall_s": total_run_s,
        "run_weighted_gflops": total_flops / 1e9 / total_run_s if total_run_s else None,
        "run_weighted_of_peak_1t": total_flops / 1e9 / total_run_s / peak_1t if total_run_s else None,
        "job_wall_s": job_wall,
        "job_gflops": total_flops / 1e9 / job_wall if job_wall else None,
        "job_of_peak_all_cores": total_flops / 1e9 / job_wall / peak_all if job_wall else None,
        "note": ("job_* divides every run's FLOPs by the job's wall time: only meaningful for a job that ran "
                 "every run itself (not one resumed from runs made earlier)"),
    }
    lines = ["| method | seed | pretrain GFLOP | fine-tune GFLOP | pretrain % of 1-thread peak "
             "| fine-tune % of 1-thread peak | run % of 1-thread peak |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        pre = r.get("pretrain_of_peak_1t")
        lines.append(f"| {r['method']} | {r['seed']} | {r['gflop'].get('pretrain', 0):.0f} | "
                     f"{r['gflop']['finetune']:.0f} | {'-' if pre is None else f'{100 * pre:.0f}'} | "
                     f"{100 * r.get('finetune_of_peak_1t', math.nan):.0f} | {100 * r['run_of_peak_1t']:.0f} |")
    lines.append(f"\nweighted over runs: {100 * (result['run_weighted_of_peak_1t'] or 0):.1f}% of the one-thread "
                 f"peak ({peak_1t:.1f} GFLOP/s); whole job: {100 * (result['job_of_peak_all_cores'] or 0):.1f}% "
                 f"of the {cores}-core peak ({peak_all:.1f} GFLOP/s) over {job_wall:.0f} s")
    table = "\n".join(lines)
    if args.out:
        C.emit(args.out, result, table)
    else:
        print(json.dumps(result, indent=1))
        print(table)


if __name__ == "__main__":
    main()
