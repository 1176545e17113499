"""Several seeds of one method as one job step: each run opened, pretrained, evaluated and
finished as :func:`~mnist_ssl.experiment.run.run_experiment` does it (the same functions),
their fine-tuning trained as one batched model (engine/batched.py).

Each run keeps its own folder, log, resume state, checkpoints and metrics; a stop or a crash
leaves each run's last completed epoch, and ``resume`` continues them (batched again, or one
at a time). A run's ``wall_time_s.finetune`` is its share of the batched phase (the phase's
wall time over the number of models), so the runs' times add up to the job's;
``batched_finetune`` in its metrics names the seeds it shared the steps with. The
semi-supervised stage (``semi.enabled``) runs after the shared fine-tuning, one run at a time.

:func:`pretrain_runs` pretrains several seeds of MAE as one batched model too (the other
objectives one run at a time), each run's checkpoint, figure, log and resume state as
:func:`~mnist_ssl.experiment.run.pretrain_run` writes them; a run's ``wall_time_s.pretrain`` is
then its share of the batched epochs' times in its log (an epoch's time over its models).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from mnist_ssl.engine import batched
from mnist_ssl.engine.resume import clear_train_state
from mnist_ssl.experiment import stages
from mnist_ssl.experiment.data import RunData
from mnist_ssl.experiment.run import (FrozenEvaluations, _may_fork, _pretrained_encoder, finish_run,
                                      open_pretraining, open_run, pretrain_run, save_pretraining)
from mnist_ssl.experiment.runtime import seed_everything
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.registry import build_objective


def run_experiments_batched(cfgs: list, run_dirs: list[str | Path], *, quiet: bool = False, progress=None,
                            stop_requested: Callable[[], bool] = lambda: False,
                            datas: list[RunData | None] | None = None, resume: bool = False,
                            spare_core: bool = False) -> list[dict]:
    """Runs ``cfgs`` (one method's seeds; :func:`mnist_ssl.engine.batched.why_not_batched` must
    accept them) into ``run_dirs``; -> each run's metrics, as run_experiment returns them.
    ``spare_core``: as run_experiment's; the runs' frozen evaluations then go to one child process
    beside the batched fine-tuning (run.FrozenEvaluations)."""
    reason = batched.why_not_batched(cfgs)
    if reason is not None:
        raise ValueError(f"these runs cannot be fine-tuned batched: {reason}")
    kw = dict(quiet=quiet, progress=progress, stop_requested=stop_requested)
    runs = []
    frozen_runs = None
    for cfg, run_dir, data in zip(cfgs, run_dirs, datas or [None] * len(cfgs)):
        opened = open_run(cfg, run_dir, resume=resume, data=data)
        encoder = _pretrained_encoder(cfg, opened.run, opened.data, opened.start, opened.times, **kw)
        if frozen_runs is None:  # the runs are alike (why_not_batched): the first one decides
            frozen_runs = FrozenEvaluations(spare_core and _may_fork(opened))
        frozen_runs.add(opened, encoder)
        classifier = ViTClassifier(encoder, len(opened.data.classes)).to(opened.data.train_images.device)
        t0 = time.perf_counter()
        seed_everything(cfg.seed + 1)  # as stages.finetune: LP-FT, then the engine
        if cfg.finetune.head_init == "probe":
            stages.fit_head_on_frozen_features(classifier, opened.data.train_images, opened.data.train_targets)
        opened.times["finetune"] = time.perf_counter() - t0
        runs.append(dict(opened=opened, classifier=classifier, saved=opened.finetune_state()))
    with frozen_runs or FrozenEvaluations(False):
        frozen_runs.start()
        _finetune_batched(runs, quiet, progress, stop_requested)
        for r, frozen in zip(runs, frozen_runs.results()):
            r["frozen"] = frozen
    return _finish_batched(runs, **kw)


def _finetune_batched(runs: list[dict], quiet: bool, progress, stop_requested: Callable[[], bool]) -> None:
    """The runs' fine-tuning as batched models; each run's ``times["finetune"]`` gets its share."""
    # Models saved at different epochs (a crash between two runs' end-of-epoch saves) cannot
    # share steps: each epoch's group trains on its own.
    groups: dict[int, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["saved"]["meta"]["epoch"] if r["saved"] else 0, []).append(r)
    t0 = time.perf_counter()
    for group in groups.values():
        cfgs_g = [r["opened"].cfg for r in group]
        callbacks = [stages.run_callbacks(c, r["opened"].run.log, f"Train Loss (seed {c.seed})", quiet, progress)
                     for c, r in zip(cfgs_g, group)]
        trainer = batched.from_runs(cfgs_g, [r["classifier"] for r in group],
                                    [r["opened"].data.train_images for r in group],
                                    [r["opened"].data.train_targets for r in group], callbacks=callbacks)
        if group[0]["saved"] is not None:
            trainer.resume([r["saved"] for r in group])
        trainer.train(stop_requested)
    share = (time.perf_counter() - t0) / len(runs)
    for r in runs:
        r["opened"].times["finetune"] += share


def _finish_batched(runs: list[dict], **kw) -> list[dict]:
    """Each run's end as run_experiment's (finish_run), its metrics naming the seeds it shared steps with."""
    seeds = [r["opened"].cfg.seed for r in runs]
    quiet, progress = kw["quiet"], kw["progress"]
    results = []
    for r in runs:
        opened = r["opened"]
        if not quiet and progress is not None:
            progress.write_line(f"== {opened.cfg.method}, seed {opened.cfg.seed} ==")
        results.append(finish_run(opened, r["classifier"], r["frozen"], shared_steps=True,
                                  extra={"batched_finetune": {"seeds": seeds}}, **kw))
    return results


def pretrain_runs(cfgs: list, run_dirs: list[str | Path], *, quiet: bool = False, progress=None,
                  stop_requested: Callable[[], bool] = lambda: False, data: RunData | None = None,
                  resume: bool = False) -> float:
    """The pretraining of several runs, as :func:`~mnist_ssl.experiment.run.pretrain_run` does each
    (the same initialisation, draws, checkpoint, figure, reconstruction check and log), batched
    when :func:`mnist_ssl.engine.batched.why_not_batched_pretraining` accepts them (a lone run
    too, so that a seed's numbers do not depend on how a group's seeds were split over workers),
    else one after another; ``data``: the sample of a lone run. -> the seconds it pretrained now."""
    if batched.why_not_batched_pretraining(cfgs) is not None:
        return sum(pretrain_run(c, d, quiet=quiet, progress=progress, stop_requested=stop_requested,
                                data=data if len(cfgs) == 1 else None, resume=resume)
                   for c, d in zip(cfgs, run_dirs))
    runs = []
    for cfg, run_dir in zip(cfgs, run_dirs):
        opened = open_pretraining(cfg, run_dir, resume=resume)
        if opened is None:
            continue  # its pretraining had finished
        run, start, run_data = opened
        device = run_data.pretrain_images.device  # the encoder, then the decoder, as pretrain_run builds them
        objective = build_objective(cfg, ViTEncoder(cfg.model).to(device)).to(device)
        runs.append(dict(cfg=cfg, run=run, data=run_data, objective=objective, saved=start.state))
    if len({len(r["data"].pretrain_images) for r in runs}) > 1:  # pools of other sizes: one at a time
        return sum(pretrain_run(r["cfg"], r["run"].path, quiet=quiet, progress=progress,
                                stop_requested=stop_requested, resume=resume) for r in runs)
    groups: dict[int, list[dict]] = {}  # as in fine-tuning: runs saved at other epochs train apart
    for r in runs:
        groups.setdefault(r["saved"]["meta"]["epoch"] if r["saved"] else 0, []).append(r)
    t0 = time.perf_counter()
    for group in groups.values():
        first = group[0]["cfg"]
        callbacks = [stages.run_callbacks(r["cfg"], r["run"].log, f"{r['objective'].loss_label} (seed {r['cfg'].seed})",
                                          quiet, progress) for r in group]
        trainer = batched.BatchedMAEPretrain([r["objective"] for r in group],
                                             [r["data"].pretrain_images for r in group],
                                             [r["cfg"].seed for r in group], first.pretrain, first.pretrain_augment,
                                             callbacks=callbacks)
        if group[0]["saved"] is not None:
            trainer.resume([r["saved"] for r in group])
        trainer.train(stop_requested)
    seconds = time.perf_counter() - t0
    for r in runs:
        cfg, run, objective, run_data = r["cfg"], r["run"], r["objective"], r["data"]
        objective.eval()
        save_pretraining(cfg, run, objective, run_data)
        clear_train_state(run.path)  # as pretrain_run: the checkpoint and the log lines are written
    return seconds
