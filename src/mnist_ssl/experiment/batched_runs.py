"""Several seeds of one method as one job step: each run pretrained, evaluated and written as
:func:`~mnist_ssl.experiment.run.run_experiment` does it, their fine-tuning trained as one
batched model (engine/batched.py).

Each run keeps its own folder, log, resume state, checkpoints and metrics; a stop or a crash
leaves each run's last completed epoch, and ``resume`` continues them (batched again, or one
at a time). A run's ``wall_time_s.finetune`` is its share of the batched phase (the phase's
wall time over the number of models), so the runs' times add up to the job's;
``batched_finetune`` in its metrics names the seeds it shared the steps with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from mnist_ssl.engine import batched
from mnist_ssl.engine.checkpoint import atomic_write_text
from mnist_ssl.experiment import stages
from mnist_ssl.experiment.data import RunData, prepare_data
from mnist_ssl.experiment.rundir import RunDir
from mnist_ssl.engine.resume import RunStart
from mnist_ssl.experiment.run import _finish, _pretrained_encoder, _start_log, _start_point
from mnist_ssl.experiment.runtime import seed_everything, setup
from mnist_ssl.models.vit import ViTClassifier


def run_experiments_batched(cfgs: list, run_dirs: list[str | Path], *, quiet: bool = False, progress=None,
                            stop_requested: Callable[[], bool] = lambda: False,
                            datas: list[RunData | None] | None = None, resume: bool = False) -> list[dict]:
    """Runs ``cfgs`` (one method's seeds; :func:`mnist_ssl.engine.batched.why_not_batched` must
    accept them) into ``run_dirs``; -> each run's metrics, as run_experiment returns them."""
    reason = batched.why_not_batched(cfgs)
    if reason is not None:
        raise ValueError(f"these runs cannot be fine-tuned batched: {reason}")
    kw = dict(quiet=quiet, progress=progress, stop_requested=stop_requested)
    runs = []
    for cfg, run_dir, data in zip(cfgs, run_dirs, datas or [None] * len(cfgs)):
        cfg.validate()
        run = RunDir(run_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        device = setup(cfg)
        start = _start_point(cfg, run) if resume else RunStart()  # a damaged state: redone from what is good
        saved = start.state
        seed_everything(cfg.seed)
        t_start = time.perf_counter()
        data = data if data is not None else prepare_data(cfg, device)
        atomic_write_text(run.config, cfg.to_json())
        _start_log(run, start)
        times: dict[str, float] = {}
        encoder = _pretrained_encoder(cfg, run, data, start, times, **kw)
        t0 = time.perf_counter()
        frozen = stages.frozen(cfg, encoder, data, run.features)
        eval_time = time.perf_counter() - t0
        classifier = ViTClassifier(encoder, len(data.classes)).to(data.train_images.device)
        t0 = time.perf_counter()
        seed_everything(cfg.seed + 1)  # as stages.finetune: LP-FT, then the engine
        if cfg.finetune.head_init == "probe":
            stages.fit_head_on_frozen_features(classifier, data.train_images, data.train_targets)
        times["finetune"] = time.perf_counter() - t0
        fine_saved = saved if saved is not None and saved["meta"]["phase"] == "finetune" else None
        runs.append(dict(cfg=cfg, run=run, data=data, classifier=classifier, frozen=frozen, times=times,
                         eval_time=eval_time, t_start=t_start, saved=fine_saved))

    # Models saved at different epochs (a crash between two runs' end-of-epoch saves) cannot
    # share steps: each epoch's group trains on its own.
    groups: dict[int, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["saved"]["meta"]["epoch"] if r["saved"] else 0, []).append(r)
    t0 = time.perf_counter()
    for group in groups.values():
        callbacks = [stages.run_callbacks(r["cfg"], r["run"].log, f"Train Loss (seed {r['cfg'].seed})", quiet, progress)
                     for r in group]
        trainer = batched.from_runs([r["cfg"] for r in group], [r["classifier"] for r in group],
                                    [r["data"].train_images for r in group], [r["data"].train_targets for r in group],
                                    callbacks=callbacks)
        if group[0]["saved"] is not None:
            trainer.resume([r["saved"] for r in group])
        trainer.train(stop_requested)
    share = (time.perf_counter() - t0) / len(runs)

    results = []
    for r in runs:
        cfg, run, data, classifier, times = r["cfg"], r["run"], r["data"], r["classifier"], r["times"]
        times["finetune"] += share
        ckpt = stages.save_finetuned(cfg, classifier, run.finetuned, data.classes)
        t0 = time.perf_counter()
        metrics, probs = stages.evaluate(classifier, data.test_images, data.test_targets, data.classes)
        stages.save_predictions(run.predictions, probs, data.test_targets, data.test_images)
        tta = stages.tta(cfg, classifier, data.test_images, data.test_targets)
        times["eval"] = time.perf_counter() - t0 + r["eval_time"]
        times["total"] = sum(v for k, v in times.items() if k != "total")
        recon = stages.load_reconstruction_check(run.reconstruction)
        metrics = {"method": cfg.method, "seed": cfg.seed, **metrics, **stages.class_names(cfg, data.classes),
                   **r["frozen"], "tta": tta,
                   **({"reconstruction": recon} if recon is not None else {}),
                   "checkpoint": str(ckpt), "wall_time_s": {k: round(v, 3) for k, v in times.items()},
                   "batched_finetune": {"seeds": [x["cfg"].seed for x in runs]}}
        if not quiet and progress is not None:
            progress.write_line(f"== {cfg.method}, seed {cfg.seed} ==")
        _finish(cfg, run, metrics, data.classes, quiet, progress)
        results.append(metrics)
    return results
