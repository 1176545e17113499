"""Where a default run's time goes, and K fine-tuning models trained in one step.

Two parts, each saving its JSON under benchmarks/results/:

    nice -n 10 .venv/bin/python benchmarks/bench_batched.py profile   # one MAE run, shortened, cProfiled
    nice -n 10 .venv/bin/python benchmarks/bench_batched.py step      # step throughput at K = 1, 5, 25
    nice -n 10 .venv/bin/python benchmarks/bench_batched.py agree     # 3 full fine-tunings, batched vs one at a time
    nice -n 10 .venv/bin/python benchmarks/bench_batched.py job -- --methods mae --seeds 3 --epochs 5

``profile`` runs ``reproduce`` for one method and one seed (baselines and report included)
with the default recipe except the epoch counts (``--pretrain-epochs`` / ``--finetune-epochs``,
default 3 and 10 of the method's defaults, e.g. MAE's 300 and 100), under cProfile, and reads the cumulative time of the stages;
the training stages are scaled to the default epoch counts (the other stages do not depend on
them). A second, unprofiled run of the same command gives the wall times the profiler inflates.
Process start is timed apart: a fresh interpreter importing what a run imports.

``step`` times one fine-tuning step (the default recipe: batch 8, augmentation, dropout, AdamW,
schedule) of K models: the engine's one-model step (K = 1 only), and engine/batched.py's step
with the leading-model-dimension forward (``bmm``) and with ``torch.func.vmap``. FLOPs per
step are counted with FlopCounterMode and divided by the median step time, as a fraction of
the fp32 matmul peak measured in the same process (benchmarks/_common.py).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Stage -> (file suffix, function name) whose cumulative time is the stage's; training stages
# are scaled by the epoch ratio. Nested entries (within fine-tuning) are read the same way.
STAGES = {
    "prepare_data": ("mnist_ssl/experiment/data.py", "prepare_data"),
    "pretrain": ("mnist_ssl/experiment/stages.py", "pretrain"),
    "pretrain_figure": ("mnist_ssl/experiment/stages.py", "pretraining_figure"),
    "frozen_probes": ("mnist_ssl/experiment/stages.py", "frozen"),
    "finetune": ("mnist_ssl/experiment/stages.py", "finetune"),
    "lp_ft_head_init": ("mnist_ssl/experiment/stages.py", "fit_head_on_frozen_features"),
    "test": ("mnist_ssl/experiment/stages.py", "evaluate"),
    "predictions_file": ("mnist_ssl/experiment/stages.py", "save_predictions"),
    "tta": ("mnist_ssl/experiment/stages.py", "tta"),
    "run_figures_loss": ("mnist_ssl/report/plots.py", "plot_loss_curves"),
    "run_figures_confusion": ("mnist_ssl/report/plots.py", "plot_confusion"),
    "baselines": ("mnist_ssl/experiment/reproduce.py", "_baselines"),
    "report": ("mnist_ssl/report/report.py", "build_report"),
    "resume_state_writes": ("mnist_ssl/engine/resume.py", "on_epoch_end"),  # per epoch, both phases
}
# Within the fine-tuning loop alone (profiled apart: pretraining shares the functions).
# "forward" includes "dropout_masks".
FINETUNE_PARTS = {
    "augmentation": ("mnist_ssl/data/augment.py", "__call__"),
    "dropout_masks": ("mnist_ssl/models/layers.py", "_keep_mask"),
    "forward": ("mnist_ssl/objectives/supervised.py", "forward"),
    "backward": ("torch/_tensor.py", "backward"),
    "optimizer_step": ("torch/optim/optimizer.py", "wrapper"),
}


def _cumulative(stats: pstats.Stats, where: tuple[str, str]) -> float:
    suffix, name = where
    return sum(v[3] for (f, _, fn), v in stats.stats.items() if fn == name and f.endswith(suffix))


def _default_config(method: str, extra: list[str] = ()):
    """The method's RunConfig as `mnist-ssl reproduce` builds it (its preset: MAE drops patches)."""
    return C.run_config("mae-drop" if method == "mae" else method, "default", list(extra))


def _reproduce_once(method: str, pre: int, ft: int, out: Path, profile: bool):
    from mnist_ssl.experiment.reproduce import reproduce

    cfg = _default_config(method, [f"pretrain.epochs={pre}", f"finetune.epochs={ft}", "threads=1"])
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    metrics = reproduce({method: cfg}, out, seeds=1, baselines=True, quiet=True, report=True)
    if profiler:
        profiler.disable()
    return time.perf_counter() - t0, metrics, profiler


def _profile_finetune(method: str, epochs: int) -> tuple[dict, float]:
    """cProfile of the fine-tuning loop alone (default recipe, ``epochs`` epochs, head init zero):
    the cumulative seconds of each of FINETUNE_PARTS, and the loop's profiled wall time."""
    from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
    from mnist_ssl.experiment.data import prepare_data
    from mnist_ssl.experiment.runtime import seed_everything
    from mnist_ssl.experiment.stages import finetune

    cfg = _default_config(method, [f"finetune.epochs={epochs}", "finetune.head_init=zero"])
    data = prepare_data(cfg, torch.device("cpu"))
    seed_everything(cfg.seed + 1)
    classifier = ViTClassifier(ViTEncoder(cfg.model), len(data.classes))
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    finetune(cfg, cfg.finetune, classifier, data.train_images, data.train_targets, cfg.seed)
    profiler.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    return {k: round(_cumulative(stats, w), 3) for k, w in FINETUNE_PARTS.items()}, wall


# What a run imports before its first step (torch, the package, sklearn for the baselines,
# matplotlib for the figures).
START_IMPORTS = ("import mnist_ssl.experiment.run, mnist_ssl.experiment.reproduce, mnist_ssl.report.report, "
                 "mnist_ssl.report.plots, mnist_ssl.evaluation.baselines, matplotlib.pyplot")


def process_start(reps: int = 3) -> dict:
    """Seconds for a fresh interpreter to import what a run imports (median of reps)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", START_IMPORTS], check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return {"median_s": round(C.median(times), 3), "runs_s": [round(t, 3) for t in times],
            "imports": START_IMPORTS}


def cmd_profile(args) -> None:
    torch.set_num_threads(1)
    load_before = C.load()
    start = process_start()
    with tempfile.TemporaryDirectory() as tmp:
        wall_plain, metrics_plain, _ = _reproduce_once(args.method, args.pretrain_epochs, args.finetune_epochs,
                                                       Path(tmp) / "plain", profile=False)
        wall_prof, _, profiler = _reproduce_once(args.method, args.pretrain_epochs, args.finetune_epochs,
                                                 Path(tmp) / "profiled", profile=True)
    stats = pstats.Stats(profiler)
    parts, ft_prof_wall = _profile_finetune(args.method, args.finetune_epochs)
    default = _default_config(args.method)  # the epochs a default run trains, which the estimate scales to
    pre_scale = default.pretrain.epochs / args.pretrain_epochs
    ft_scale = default.finetune.epochs / args.finetune_epochs
    stages = {k: round(_cumulative(stats, w), 3) for k, w in STAGES.items()}
    run_wall = metrics_plain["runs"][0]["wall_time_s"]
    lp_share = stages["lp_ft_head_init"] / max(stages["finetune"], 1e-9)
    unprof = wall_plain / wall_prof  # the profiler's inflation, for stages the run does not time itself
    # Scaled to the default epochs: the training stages by their epoch ratio (the LP-FT head
    # init runs once), everything else as measured; from the unprofiled run where it times the stage.
    estimate = {
        "process_start": start["median_s"],
        "pretrain": round(run_wall.get("pretrain", 0.0) * pre_scale, 2),
        "finetune_lp_ft_head_init": round(run_wall["finetune"] * lp_share, 2),
        "finetune_training": round(run_wall["finetune"] * (1 - lp_share) * ft_scale, 2),
        "evaluation_test_probes_tta": round(run_wall["eval"], 2),
        "run_figures": round((stages["run_figures_loss"] + stages["run_figures_confusion"]) * unprof, 2),
        "baselines": round(stages["baselines"] * unprof, 2),
        "report": round(stages["report"] * unprof, 2),
    }
    estimate["total"] = round(sum(estimate.values()), 2)
    shares = {k: round(v / ft_prof_wall, 3) for k, v in parts.items()}
    result = {
        "command": " ".join(["benchmarks/bench_batched.py"] + sys.argv[1:]),
        "machine": C.machine(1),
        "load_avg_before": load_before,
        "load_avg_after": C.load(),
        "method": args.method,
        "epochs_run": {"pretrain": args.pretrain_epochs, "finetune": args.finetune_epochs},
        "epochs_default": {"pretrain": default.pretrain.epochs, "finetune": default.finetune.epochs},
        "process_start": start,
        "wall_s_unprofiled": round(wall_plain, 2),
        "run_wall_time_s_unprofiled": run_wall,
        "wall_s_profiled": round(wall_prof, 2),
        "stages_cumulative_s_profiled": stages,
        "finetune_loop_alone_profiled_s": round(ft_prof_wall, 3),
        "finetune_parts_cumulative_s_profiled": parts,
        "finetune_training_shares_profiled": shares,
        "default_run_estimate_s": estimate,
    }
    rows = "\n".join(f"| {k} | {v} | {100 * v / estimate['total']:.0f}% |" for k, v in estimate.items() if k != "total")
    table = f"| stage | s (default epochs, estimated) | share |\n|---|---|---|\n{rows}\n| total | {estimate['total']} | |"
    C.emit(args.name or f"profile_{args.method}_run", result, table)


# ----- step throughput at K models ------------------------------------------------
def _models(K: int, n: int = 300):
    """K default-size classifiers (own initialisations, non-zero heads as LP-FT leaves them) and
    K samples of n images (the embedded MNIST subset, disjoint slices) with 3 classes."""
    from mnist_ssl.config import ModelConfig
    from mnist_ssl.data import load_embedded
    from mnist_ssl.models.vit import ViTClassifier, ViTEncoder

    data = load_embedded()
    out = []
    for k in range(K):
        torch.manual_seed(100 + k)
        clf = ViTClassifier(ViTEncoder(ModelConfig()), 3)
        torch.nn.init.normal_(clf.head.weight, std=0.1)
        lo = (k * n) % (len(data.images) - n)
        out.append((clf, data.images[lo:lo + n].clone(), torch.as_tensor(data.labels[lo:lo + n]).long() % 3))
    return out


def _engine_stepper(module, cfg, steps_per_epoch: int, flop_step):
    """engine/loop.py's step around ``flop_step`` (forward and backward of one batch): the
    optimiser and schedule the engine makes for ``module``."""
    from mnist_ssl.engine.optim import make_optimizer, make_schedule

    module.train()
    opt = make_optimizer(module, cfg, torch.device("cpu"))
    sched = make_schedule(opt, cfg, steps_per_epoch)

    def step():
        opt.zero_grad(set_to_none=True)
        flop_step()
        opt.step()
        sched.step()

    return step, flop_step, module


def _one_model_stepper(run, cfg, augment_cfg):
    """The one-model engine's fine-tuning step (engine/loop.py's body) on model ``run``."""
    from mnist_ssl.data.augment import Augmenter
    from mnist_ssl.objectives.supervised import Supervised

    clf, images, labels = run
    module = Supervised(clf)
    augment = Augmenter(augment_cfg)

    def flop_step():
        idx = torch.randperm(len(images))[:cfg.batch_size]
        module([augment(images[idx].float().div_(255.0))], labels[idx]).loss.backward()

    return _engine_stepper(module, cfg, 38, flop_step)


def _trainer_stepper(trainer, cfg):
    """A batched trainer's step (engine/batched.py), and its forward and backward alone."""
    for m in trainer.models:
        m.net.train()

    def batch():
        return [torch.randperm(trainer.n, generator=m.generator)[:cfg.batch_size] for m in trainer.models]

    def flop_step():
        x, draws, y = trainer._views(batch())
        trainer.task.loss(trainer.params.views(), x, y, draws)[0].sum().backward()

    return (lambda: trainer.train_step(batch())), flop_step, trainer


def _batched_stepper(runs, cfg, augment_cfg, forward: str):
    from mnist_ssl.engine.batched import BatchedFinetune

    return _trainer_stepper(BatchedFinetune([r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs],
                                            list(range(len(runs))), cfg, augment_cfg, forward=forward), cfg)


def _mae_runs(K: int, n: int = 300):
    """K MAE objectives with the method's default recipe (drop masking, ratio 0.5, the default
    decoder; own initialisations) and K unlabelled samples of n images (disjoint slices)."""
    from mnist_ssl.data import load_embedded
    from mnist_ssl.objectives.registry import RunConfig, build_objective
    from mnist_ssl.models.vit import ViTEncoder

    cfg = _default_config("mae")
    data = load_embedded()
    out = []
    for k in range(K):
        torch.manual_seed(100 + k)
        lo = (k * n) % (len(data.images) - n)
        out.append((build_objective(cfg, ViTEncoder(cfg.model)), data.images[lo:lo + n].clone(), None))
    return out, cfg


def _one_model_pretrain_stepper(run, cfg, augment_cfg):
    """The one-model engine's pretraining step (engine/loop.py's body) on objective ``run``."""
    module, images, _ = run

    def flop_step():
        idx = torch.randperm(len(images))[:cfg.batch_size]
        module([images[idx].float().div_(255.0)]).loss.backward()

    return _engine_stepper(module, cfg, -(-len(images) // cfg.batch_size), flop_step)


def _batched_pretrain_stepper(runs, cfg, augment_cfg, forward: str):
    from mnist_ssl.engine.batched import BatchedMAEPretrain

    return _trainer_stepper(BatchedMAEPretrain([r[0] for r in runs], [r[1] for r in runs], list(range(len(runs))),
                                               cfg, augment_cfg), cfg)


def _count_flops(flop_step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        flop_step()
    return int(counter.get_total_flops())


def _time(step, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def cmd_step(args) -> None:
    from mnist_ssl.objectives.registry import RunConfig

    torch.set_num_threads(args.threads)
    load_before = C.load()
    peak = C.matmul_peak_gflops()
    pretrain = args.phase == "pretrain"
    base = _default_config("mae") if pretrain else RunConfig()
    cfg, augment_cfg = (base.pretrain, base.pretrain_augment) if pretrain else (base.finetune, base.finetune_augment)
    forwards = ["bmm"] if pretrain else args.forwards  # pretraining has no vmap path
    one, many = ((_one_model_pretrain_stepper, _batched_pretrain_stepper) if pretrain
                 else (_one_model_stepper, _batched_stepper))
    steppers = []  # (K, kind, step, flops)
    for K in args.models:
        runs = _mae_runs(K)[0] if pretrain else _models(K)
        for kind in (["engine"] if K == 1 else []) + forwards:
            if kind == "engine":
                step, flop_step, _ = one(runs[0], cfg, augment_cfg)
            else:
                step, flop_step, _ = many(runs, cfg, augment_cfg, kind)
            steppers.append((K, kind, step, _count_flops(flop_step)))
            _time(step, args.warmup, 0)
    # Alternating rounds: each round times every stepper once, so a neighbour's load falls on
    # all of them alike; the per-model speedup is taken within each round.
    per_round: list[list[float]] = [[] for _ in steppers]
    for _ in range(args.rounds):
        for i, (_, _, step, _) in enumerate(steppers):
            per_round[i].append(C.median(_time(step, 0, args.steps)))
    engine_rounds = per_round[0]
    rows = []
    for (K, kind, _, flops), rounds in zip(steppers, per_round):
        med = C.median(rounds)
        speedups = [K * e / t for e, t in zip(engine_rounds, rounds)]
        rows.append({"K": K, "step": kind, "median_step_s": round(med, 5),
                     "round_medians_s": [round(t, 5) for t in rounds],
                     "model_steps_per_s": round(K / med, 1), "gflop_per_step": round(flops / 1e9, 4),
                     "gflops": round(flops / med / 1e9, 2), "fraction_of_peak": round(flops / med / 1e9 / peak, 3),
                     "speedup_vs_engine_per_model": round(C.median(speedups), 2),
                     "speedup_per_round": [round(x, 2) for x in speedups]})
        print(rows[-1], flush=True)
    peak_after = C.matmul_peak_gflops()
    result = {
        "command": " ".join(["benchmarks/bench_batched.py"] + sys.argv[1:]),
        "machine": C.machine(args.threads),
        "load_avg_before": load_before,
        "load_avg_after": C.load(),
        "phase": args.phase,
        "recipe": ({"batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "dropout": 0.1,
                    "objective": "MAE, drop masking, ratio 0.5, the default decoder", "augment": "none (the default)",
                    "model": "dim 64, depth 4, 4 heads, patch 4"} if pretrain else
                   {"batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "dropout": 0.1,
                    "augment": "affine + elastic 1.0 (the default)", "model": "dim 64, depth 4, 4 heads, patch 4"}),
        "matmul_peak_gflops": round(peak, 1),
        "matmul_peak_gflops_after": round(peak_after, 1),
        "warmup_steps": args.warmup, "rounds": args.rounds, "steps_per_round": args.steps,
        "rows": rows,
    }
    lines = "\n".join(f"| {r['K']} | {r['step']} | {1000 * r['median_step_s']:.1f} | {r['model_steps_per_s']} | "
                      f"{r['speedup_vs_engine_per_model']}x | {r['gflops']} | {100 * r['fraction_of_peak']:.0f}% |"
                      for r in rows)
    table = ("| K | step | ms/step | model-steps/s | per model vs engine | GFLOP/s | of peak |\n"
             "|---|---|---|---|---|---|---|\n" + lines)
    C.emit(args.name or f"batched_step_t{args.threads}", result, table)


# ----- batched against the one-model engine, full runs ---------------------------------
def _run_helpers(*names: str):
    """The run's helpers by name, from wherever this version of the package keeps them."""
    import importlib

    found = []
    for name in names:
        for module in ("mnist_ssl.experiment.stages", "mnist_ssl.experiment.data", "mnist_ssl.experiment.runtime"):
            try:
                obj = getattr(importlib.import_module(module), name, None)
            except ImportError:
                obj = None
            if obj is not None:
                found.append(obj)
                break
        else:
            raise ImportError(f"no {name} in this version of mnist_ssl")
    return found


def cmd_agree(args) -> None:
    """Fine-tune ``--seeds`` runs of ``--method`` (the default recipe; the encoder from scratch
    or as its pretraining left it is irrelevant to the comparison, so it is a fresh one) with
    the one-model engine and batched, from the same initialisations; compare losses, accuracy
    and test predictions."""
    import copy

    from mnist_ssl.objectives.registry import RunConfig
    from mnist_ssl.data.augment import Augmenter
    from mnist_ssl.engine.batched import BatchedFinetune
    from mnist_ssl.engine.loop import train
    from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
    from mnist_ssl.objectives.supervised import Supervised

    fit_head_on_frozen_features, predict_logits, prepare_data, seed_everything = _run_helpers(
        "fit_head_on_frozen_features", "predict_logits", "prepare_data", "seed_everything")

    torch.set_num_threads(1)
    load_before = C.load()
    seeds = list(range(args.seeds))
    runs = []
    for s in seeds:
        cfg = RunConfig(method=args.method, seed=s)  # the default fine-tuning recipe
        cfg.finetune.epochs = args.epochs
        data = prepare_data(cfg, torch.device("cpu"))
        seed_everything(s)  # as run_experiment seeds the encoder's initialisation
        clf = ViTClassifier(ViTEncoder(cfg.model), len(data.classes))
        if cfg.finetune.head_init == "probe":
            fit_head_on_frozen_features(clf, data.train_images, data.train_targets)
        runs.append((cfg, data, clf))
    ft = copy.copy(runs[0][0].finetune)
    ft.head_init = "zero"  # fitted above, once, for both sides
    t0 = time.perf_counter()
    bf = BatchedFinetune([copy.deepcopy(c) for _, _, c in runs], [d.train_images for _, d, _ in runs],
                         [d.train_targets for _, d, _ in runs], seeds, ft, runs[0][0].finetune_augment,
                         label_smoothing=ft.label_smoothing)
    batched_states = bf.train()
    batched_s = time.perf_counter() - t0
    rows, engine_s = [], 0.0
    for (cfg, data, clf), bstate in zip(runs, batched_states):
        c = copy.deepcopy(clf)
        seed_everything(cfg.seed + 1)  # as finetune_stage seeds fine-tuning
        t0 = time.perf_counter()
        estate = train(Supervised(c, ft.label_smoothing), data.train_images, data.train_targets, ft,
                       phase="finetune", view=Augmenter(cfg.finetune_augment))
        engine_s += time.perf_counter() - t0
        pe = predict_logits(c, data.test_images).argmax(-1)
        pb = predict_logits(bstate.module.classifier, data.test_images).argmax(-1)
        y = data.test_targets.cpu()
        le = [r["loss"] for r in estate.history]
        lb = [r["loss"] for r in bstate.history]
        diffs = [abs(a - b) for a, b in zip(le, lb)]
        first = next((i + 1 for i, d in enumerate(diffs) if d > 0), None)
        rows.append({"seed": cfg.seed, "accuracy_engine": round(float((pe == y).float().mean()), 4),
                     "accuracy_batched": round(float((pb == y).float().mean()), 4),
                     "test_predictions_differing": int((pe != pb).sum()), "n_test": len(y),
                     "final_loss_engine": le[-1], "final_loss_batched": lb[-1],
                     "max_abs_epoch_loss_diff": max(diffs), "first_epoch_loss_differs": first,
                     "epoch_loss_diff_at": {str(e): diffs[e - 1] for e in (1, 2, 5, 10, 25, 50, 100) if e <= len(diffs)}})
        print(rows[-1], flush=True)
    result = {"command": " ".join(["benchmarks/bench_batched.py"] + sys.argv[1:]),
              "machine": C.machine(1), "load_avg_before": load_before, "load_avg_after": C.load(),
              "method": args.method, "epochs": args.epochs, "seeds": seeds,
              "wall_s": {"engine_one_at_a_time": round(engine_s, 2), "batched": round(batched_s, 2)},
              "rows": rows}
    lines = "\n".join(f"| {r['seed']} | {100 * r['accuracy_engine']:.2f} | {100 * r['accuracy_batched']:.2f} | "
                      f"{r['test_predictions_differing']} | {r['max_abs_epoch_loss_diff']:.2e} |" for r in rows)
    table = ("| seed | acc. engine | acc. batched | test predictions differing | max epoch-loss diff |\n"
             "|---|---|---|---|---|\n" + lines)
    C.emit(args.name or f"batched_vs_engine_{args.method}_{len(seeds)}seeds", result, table)


# ----- a whole reproduce job, batched and one at a time ---------------------------------
def cmd_job(args) -> None:
    """``mnist-ssl reproduce`` with ``args.job_args`` twice, in fresh processes: the default
    (seeds batched) and ``--set run.batch_models=false``; per run the accuracies and their
    difference, and each job's wall time."""
    import json

    rows, walls = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, extra in (("batched", []), ("one_at_a_time", ["--set", "run.batch_models=false"])):
            out = Path(tmp) / mode
            cmd = [sys.executable, "-m", "mnist_ssl", "reproduce", "--out", str(out), "--quiet", *args.job_args, *extra]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"reproduce failed ({mode}): {done.stderr.strip().splitlines()[-1:]}")
            walls[mode] = round(time.perf_counter() - t0, 2)
            metrics = json.loads((out / "metrics.json").read_text())
            rows[mode] = {(r["method"], r["seed"]): r for r in metrics["runs"]}
    n_test = None
    compare = []
    for key, b in rows["batched"].items():
        a = rows["one_at_a_time"][key]
        n_test = b.get("n_test", n_test)
        compare.append({"method": key[0], "seed": key[1], "accuracy_batched": b["accuracy"],
                        "accuracy_one_at_a_time": a["accuracy"],
                        "test_images_difference": round((b["accuracy"] - a["accuracy"]) * (b.get("n_test") or 0)),
                        "batched_with": (b.get("batched_finetune") or {}).get("seeds"),
                        # what the pretraining left, batched and one at a time (MAE's is batched too)
                        "linear_probe_cv": [(r.get("linear_probe_cv") or {}).get("accuracy") for r in (b, a)],
                        "masked_mse": [(r.get("reconstruction") or {}).get("masked_mse") for r in (b, a)]})
    result = {"command": " ".join(["benchmarks/bench_batched.py", "job", "--"] + args.job_args),
              "machine": C.machine(1), "load_avg_after": C.load(), "wall_s": walls, "runs": compare}
    lines = "\n".join(f"| {r['method']} | {r['seed']} | {100 * r['accuracy_batched']:.2f} | "
                      f"{100 * r['accuracy_one_at_a_time']:.2f} | {r['test_images_difference']} |" for r in compare)
    table = ("| method | seed | batched % | one at a time % | difference (test images) |\n|---|---|---|---|---|\n"
             + lines + f"\n\nwall: {walls}")
    C.emit(args.name or "reproduce_batched_vs_one_at_a_time", result, table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("profile", help="where one run's time goes (cProfile, shortened, scaled)")
    p.add_argument("--method", default="mae")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--name", default=None, help="results file name (default profile_METHOD_run)")
    p.set_defaults(func=cmd_profile)
    p = sub.add_parser("step", help="fine-tuning (or MAE pretraining) step throughput of K models in one step")
    p.add_argument("--phase", choices=["finetune", "pretrain"], default="finetune",
                   help="pretrain: MAE's default pretraining step (batch 32, drop masking)")
    p.add_argument("--models", type=lambda v: [int(x) for x in v.split(",")], default=[1, 5, 25])
    p.add_argument("--forwards", type=lambda v: v.split(","), default=["bmm", "vmap"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed steps per stepper and round")
    p.add_argument("--name", default=None, help="results file name (default batched_step_tTHREADS)")
    p.set_defaults(func=cmd_step)
    p = sub.add_parser("agree", help="full fine-tuning runs: batched against the one-model engine")
    p.add_argument("--method", default="supervised")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_agree)
    p = sub.add_parser("job", help="a reproduce job batched and one at a time (arguments after --)")
    p.add_argument("--name", default=None)
    p.add_argument("job_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_job)
    args = ap.parse_args(argv)
    if getattr(args, "job_args", None) and args.job_args[0] == "--":
        args.job_args = args.job_args[1:]
    args.func(args)


if __name__ == "__main__":
    main()
