"""One (method, seed) run through the stages, into a :class:`RunDir`; and the runs of the
single-stage commands (``pretrain``, ``finetune``, ``evaluate``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from mnist_ssl.engine import distributed
from mnist_ssl.engine.callbacks import TrainingInterrupted
from mnist_ssl.engine.checkpoint import atomic_write_text, load_classifier, load_encoder
from mnist_ssl.engine.resume import RunStart, clear_train_state, last_good_state
from mnist_ssl.errors import ConfigError
from mnist_ssl.experiment import stages
from mnist_ssl.experiment.beside import Beside, has_spare_core
from mnist_ssl.experiment.data import RunData, load_test_sample, prepare_data
from mnist_ssl.experiment.rundir import RunDir
from mnist_ssl.experiment.runtime import seed_everything, setup, setup_threads
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder
from mnist_ssl.objectives.registry import RunConfig, get_method


def run_experiment(cfg: RunConfig, run_dir: str | Path, *, quiet: bool = False,
                   progress=None, stop_requested: Callable[[], bool] = lambda: False,
                   data: RunData | None = None, encoder: ViTEncoder | None = None,
                   resume: bool = False, spare_core: bool = False) -> dict:
    """Pretrain (if the method does and no ``encoder`` is given), fine-tune, evaluate.

    Writes everything under ``run_dir`` and returns this run's metrics (the
    RunMetrics of docs/design.md). ``resume``: continue from the state saved at
    the end of the last completed epoch (``resume.json``), if there is one; the
    result is bit-identical to an uninterrupted run on the CPU. ``spare_core``: the caller
    leaves the machine's other cores to this run, so its frozen evaluations go to a child
    process beside fine-tuning when a core is idle (:class:`FrozenEvaluations`).
    """
    opened = open_run(cfg, run_dir, resume=resume, data=data, encoder_given=encoder is not None)
    kw = dict(quiet=quiet, progress=progress, stop_requested=stop_requested)
    if encoder is None:
        encoder = _pretrained_encoder(cfg, opened.run, opened.data, opened.start, opened.times, **kw)
    with FrozenEvaluations(spare_core and _may_fork(opened)) as frozen_runs:
        frozen_runs.add(opened, encoder)
        frozen_runs.start()
        t0 = time.perf_counter()
        classifier = ViTClassifier(encoder, len(opened.data.classes)).to(opened.data.train_images.device)
        stages.finetune(cfg, cfg.finetune, classifier, opened.data.train_images, opened.data.train_targets,
                        cfg.seed, callbacks=stages.run_callbacks(cfg, opened.run.log, "Train Loss", quiet, progress),
                        stop_requested=stop_requested, resume=opened.finetune_state())
        opened.times["finetune"] = time.perf_counter() - t0
        frozen, = frozen_runs.results()
    return finish_run(opened, classifier, frozen, **kw)


@dataclass
class OpenRun:
    """A run between its start and its end: its folder, where ``--resume`` continues it, its data
    and the seconds of each stage so far (``frozen_s``: the frozen evaluations, counted as "eval")."""

    cfg: RunConfig
    run: RunDir
    start: RunStart
    data: RunData
    t_start: float
    times: dict = field(default_factory=dict)
    frozen_s: float = 0.0

    def finetune_state(self) -> dict | None:
        """The saved fine-tuning state to continue from, if the run stopped while fine-tuning."""
        saved = self.start.state
        return saved if saved is not None and saved["meta"]["phase"] == "finetune" else None

    def frozen_evaluations(self, encoder: ViTEncoder) -> dict:
        """The frozen probe and kNN of ``encoder`` (and of the random initialisation), timed."""
        t0 = time.perf_counter()
        frozen = stages.frozen(self.cfg, encoder, self.data, self.run.features)
        self.frozen_s += time.perf_counter() - t0
        return frozen


class FrozenEvaluations:
    """The frozen evaluations of opened runs (:meth:`OpenRun.frozen_evaluations`), computed when
    :meth:`add`-ed, or with ``beside`` all in one forked child from :meth:`start` on, while this
    process fine-tunes (experiment/beside.py). The numbers are the same either way: the
    evaluations use the encoders as they were when added, and the random state that fine-tuning
    draws from is seeded again after them. A run's ``frozen_s`` is then the child's seconds for
    it, spent beside fine-tuning, so a run's stage times add up to more than its total."""

    def __init__(self, beside: bool) -> None:
        self.beside = beside
        self._runs: list[tuple[OpenRun, ViTEncoder]] = []
        self._now: list[dict] = []
        self._child: Beside | None = None

    def add(self, opened: OpenRun, encoder: ViTEncoder) -> None:
        self._runs.append((opened, encoder))
        if not self.beside:
            self._now.append(opened.frozen_evaluations(encoder))

    def start(self) -> None:
        if self.beside and self._runs:
            self._child = Beside(lambda: [_timed_frozen(o, e) for o, e in self._runs])

    def results(self) -> list[dict]:
        """Each added run's frozen metrics, in order (waiting for the child)."""
        if self._child is None:
            return self._now
        values, _ = self._child.result()
        for (opened, _), (_, seconds) in zip(self._runs, values):
            opened.frozen_s += seconds
        return [frozen for frozen, _ in values]

    def __enter__(self) -> "FrozenEvaluations":
        return self

    def __exit__(self, *exc) -> None:
        if self._child is not None:
            self._child.close()


def _timed_frozen(opened: OpenRun, encoder: ViTEncoder) -> tuple[dict, float]:
    t0 = time.perf_counter()
    return stages.frozen(opened.cfg, encoder, opened.data, opened.run.features), time.perf_counter() - t0


def _may_fork(opened: OpenRun) -> bool:
    """Whether this run's frozen evaluations go to a forked child: with evaluations to do, outside
    torchrun, on the CPU with a core idle now (experiment/beside.py)."""
    cfg = opened.cfg
    return ((cfg.eval.linear_probe or cfg.eval.knn) and not distributed.launched()
            and has_spare_core(opened.data.train_images.device.type, cfg.threads))


def open_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool, data: RunData | None = None,
             encoder_given: bool = False) -> OpenRun:
    """A run's start: its folder and config.json, the state ``resume`` continues from (a damaged
    one is redone from what is good), the seeded RNG and its data."""
    cfg.validate()
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    device = setup(cfg)
    start = _start_point(cfg, run, encoder_given=encoder_given) if resume else RunStart()
    seed_everything(cfg.seed)
    t_start = time.perf_counter()
    data = data if data is not None else prepare_data(cfg, device)
    atomic_write_text(run.config, cfg.to_json())
    _start_log(run, start)
    return OpenRun(cfg, run, start, data, t_start)


def finish_run(opened: OpenRun, classifier: ViTClassifier, frozen: dict, *, quiet: bool, progress,
               stop_requested: Callable[[], bool], shared_steps: bool = False, extra: dict | None = None) -> dict:
    """A fine-tuned run's end: its checkpoint, test, predictions and TTA, the semi-supervised stage
    (``semi.enabled``), then metrics.json and the run's figures. The run's total seconds are those
    since :func:`open_run`, or with ``shared_steps`` (its fine-tuning shared with other runs, which
    ran in between) the sum of its stages. ``extra``: keys added to its metrics. -> the metrics."""
    cfg, run, data, times = opened.cfg, opened.run, opened.data, opened.times
    ckpt = stages.save_finetuned(cfg, classifier, run.finetuned, data.classes)
    t0 = time.perf_counter()
    metrics, probs = stages.evaluate(classifier, data.test_images, data.test_targets, data.classes)
    stages.save_predictions(run.predictions, probs, data.test_targets, data.test_images)
    tta = stages.tta(cfg, classifier, data.test_images, data.test_targets)
    times["eval"] = time.perf_counter() - t0 + opened.frozen_s
    semi = _semi(cfg, run, classifier, data, times, quiet=quiet, progress=progress,
                 stop_requested=stop_requested) if cfg.semi.enabled else None
    times["total"] = (sum(v for k, v in times.items() if k != "total") if shared_steps
                      else time.perf_counter() - opened.t_start)
    recon = stages.load_reconstruction_check(run.reconstruction)
    metrics = {"method": cfg.method, "seed": cfg.seed, **metrics, **stages.class_names(cfg, data.classes),
               **frozen, "tta": tta,
               **({"reconstruction": recon} if recon is not None else {}),
               **({"semi": semi} if semi is not None else {}),
               "checkpoint": str(ckpt), "wall_time_s": {k: round(v, 3) for k, v in times.items()},
               **(extra or {})}
    _finish(cfg, run, metrics, data.classes, quiet, progress)
    return metrics


def open_pretraining(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False,
                     data: RunData | None = None) -> tuple[RunDir, RunStart, RunData] | None:
    """A run's folder, start point and sample for its pretraining alone, its config written and
    its log started, torch's RNG seeded as the run seeds it before its encoder is built; None
    when ``resume`` finds its pretraining finished."""
    cfg.validate()
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    device = setup(cfg)
    start = _start_point(cfg, run) if resume else RunStart()
    if start.from_pretrained or (start.state is not None and start.state["meta"]["phase"] == "finetune"):
        return None
    seed_everything(cfg.seed)
    data = data if data is not None else prepare_data(cfg, device)
    atomic_write_text(run.config, cfg.to_json())
    _start_log(run, start)
    return run, start, data


def save_pretraining(cfg: RunConfig, run: RunDir, objective, data: RunData) -> None:
    """What a finished pretraining leaves in its run folder: the checkpoint, the method's figure
    and, for a masked method, the reconstruction check (on the main process only)."""
    if distributed.is_main():
        stages.save_pretrained(cfg, objective, run.pretrained, data.classes)
        stages.pretraining_figure(cfg, objective, data.test_images, run.figure)
        stages.save_reconstruction_check(
            stages.reconstruction_check(objective, data.train_images, data.test_images), run.reconstruction)


def pretrain_run(cfg: RunConfig, run_dir: str | Path, *, quiet: bool = False, progress=None,
                 stop_requested: Callable[[], bool] = lambda: False, data: RunData | None = None,
                 resume: bool = False) -> float:
    """Only the pretraining of the run in ``run_dir``, as :func:`run_experiment` begins it (the same
    random draws, checkpoint, figure and log lines), so that a later ``run_experiment`` or batched
    fine-tuning with ``resume`` continues from its encoder. ``resume``: a pretraining that had
    finished is kept, one that had stopped continues. -> the seconds it pretrained now."""
    opened = open_pretraining(cfg, run_dir, resume=resume, data=data)
    if opened is None:
        return 0.0
    run, start, data = opened
    times: dict[str, float] = {}
    _pretrained_encoder(cfg, run, data, start, times, quiet=quiet, progress=progress, stop_requested=stop_requested)
    # The checkpoint and every pretraining line are written: the last epoch's resume state would
    # make the next start continue a pretraining with no epochs left (and redo its figure).
    clear_train_state(run.path)
    return times.get("pretrain", 0.0)


def _semi(cfg: RunConfig, run: RunDir, classifier: ViTClassifier, data: RunData, times: dict, *,
          quiet: bool, progress, stop_requested) -> dict:
    """The semi-supervised stage after fine-tuning (``semi.*``): a student learns from the fine-tuned
    classifier on the pretraining images (the training sample, or the pool with data.pretrain_on=pool);
    -> its test result, kept beside the plain one. Its epochs go to the log as phase "semi"."""
    from mnist_ssl.engine.callbacks import ConsolePrinter, JSONLLogger
    from mnist_ssl.experiment.semi import semi_stage

    t0 = time.perf_counter()
    init = None
    if cfg.semi.student_init == "pretrained" and run.pretrained_weights.exists():
        init = load_encoder(run.pretrained_weights)[0].to(data.train_images.device)
    callbacks = [] if not distributed.is_main() else [JSONLLogger(run.log, method=cfg.method, seed=cfg.seed)] + (
        [] if quiet else [ConsolePrinter("Semi Loss", stream=progress, extra_terms=True)])
    student, _ = semi_stage(cfg, classifier, data.pretrain_images, data.train_images, data.train_targets,
                            len(data.classes), seed=cfg.seed, init_encoder=init, callbacks=callbacks,
                            stop_requested=stop_requested, compile=cfg.compile)
    result, _ = stages.evaluate(student, data.test_images, data.test_targets, data.classes)
    times["semi"] = time.perf_counter() - t0
    stages.say(f"Test Accuracy after the semi-supervised stage ({cfg.semi.kind}): {100 * result['accuracy']:.2f}%",
               quiet, progress)
    return {"kind": cfg.semi.kind, "accuracy": result["accuracy"], "ci95": result["ci95"],
            "unlabelled_images": int(len(data.pretrain_images)), "epochs": cfg.semi.epochs,
            "tta": stages.tta(cfg, student, data.test_images, data.test_targets)}


def _start_log(run: RunDir, start: RunStart | dict | None) -> None:
    """A fresh run starts without resume state or log; a resumed one with the log as it was saved
    (or as its finished pretraining wrote it)."""
    start = _as_start(start)
    if start.state is None:
        clear_train_state(run.path)
    if start.state is None and not start.from_pretrained:
        run.log.unlink(missing_ok=True)
    else:
        atomic_write_text(run.log, "".join(line + "\n" for line in start.log))


def _pretrained_encoder(cfg: RunConfig, run: RunDir, data: RunData, start: RunStart, times: dict,
                        *, quiet: bool, progress, stop_requested) -> ViTEncoder:
    """The run's pretrained encoder: pretrained now (continuing a saved pretraining state), or,
    when pretraining had finished before a stop (or a damaged fine-tuning state), loaded from its checkpoint."""
    device = data.train_images.device
    encoder = ViTEncoder(cfg.model).to(device)
    start = _as_start(start)
    saved = start.state
    if start.from_pretrained or (saved is not None and saved["meta"]["phase"] == "finetune"):
        if get_method(cfg.method).build is not None:
            encoder = load_encoder(run.pretrained_weights)[0].to(device)
            records = [json.loads(line) for line in start.log]
            # A batched epoch's time was shared by its models: each run counts its share, so
            # that the runs' times add up to the job's.
            times["pretrain"] = sum(r.get("time_s", 0.0) / r.get("batched_models", 1)
                                    for r in records if r.get("phase") == "pretrain")
        return encoder
    t0 = time.perf_counter()
    objective = stages.pretrain(
        cfg, encoder, data.pretrain_images, stop_requested=stop_requested, resume=saved,
        callbacks=lambda label: stages.run_callbacks(cfg, run.log, label, quiet, progress))
    if objective is None:
        return encoder
    times["pretrain"] = time.perf_counter() - t0
    save_pretraining(cfg, run, objective, data)
    return encoder


def _finish(cfg: RunConfig, run: RunDir, metrics: dict, classes: list[int], quiet: bool, progress) -> None:
    """Print the result, write metrics.json (the mark of a finished run), drop the resume state,
    draw the loss curves and the confusion matrix."""
    from mnist_ssl.evaluation.metrics import format_confusion
    from mnist_ssl.report.plots import plot_confusion, plot_loss_curves

    tta = metrics["tta"]
    tta_line = "" if tta is None else \
        f"\nTest Accuracy with test-time augmentation ({tta['views']} copies): {100 * tta['accuracy']:.2f}%"
    stages.say(f"Test Accuracy: {100 * metrics['accuracy']:.2f}%{tta_line}\nConfusion Matrix:\n"
               f"{format_confusion(np.array(metrics['confusion']))}", quiet, progress)
    atomic_write_text(run.metrics, json.dumps(metrics, indent=2))
    clear_train_state(run.path)  # the run is finished: metrics.json marks it
    if cfg.run.tensorboard and distributed.is_main():
        from mnist_ssl.engine.callbacks import TensorBoardLogger, eval_scalars

        board = TensorBoardLogger(run.tensorboard)
        board.log_metrics(eval_scalars(metrics))
        board.close()
    history = [json.loads(line) for line in run.log.read_text().splitlines() if line.strip()]
    plot_loss_curves({p: [r["loss"] for r in history if r["phase"] == p] for p in ("pretrain", "finetune")},
                     str(run.loss_curve), f"{cfg.method}, seed {cfg.seed}")
    plot_confusion(np.array(metrics["confusion"]), metrics.get("class_names", classes), str(run.confusion),
                   f"{cfg.method}, seed {cfg.seed}: {100 * metrics['accuracy']:.2f}%")


def _as_start(start: RunStart | dict | None) -> RunStart:
    """A saved state (``load_train_state``'s dict, as batched_runs passes it) as a RunStart."""
    if isinstance(start, RunStart):
        return start
    return RunStart() if start is None else RunStart(start, log=start["meta"]["log"])


def _start_point(cfg: RunConfig, run: RunDir, encoder_given: bool = False) -> RunStart:
    """Where ``--resume`` continues ``run``: its last good state (engine/resume.py), checked
    against ``cfg``; a damaged file is one warning line and the run is redone from what is good.
    ``encoder_given`` (``finetune``): only a fine-tuning state counts, the encoder is the caller's."""
    start = last_good_state(run.path, cfg.to_dict(),
                            pretrains=get_method(cfg.method).build is not None and not encoder_given)
    if start.problem:
        warn(start.problem)
    if encoder_given and (start.from_pretrained or (start.state and start.state["meta"]["phase"] != "finetune")):
        return RunStart()
    return start


def warn(text: str) -> None:
    """One line on stderr that does not stop the command (a damaged file that is redone)."""
    import sys

    print(f"mnist-ssl: warning: {text}", file=sys.stderr, flush=True)


def complete_finished_run(cfg: RunConfig, run: RunDir, metrics: dict) -> None:
    """A run that finished before a measurement existed gets it now, from its fine-tuned
    checkpoint and its seed's test sample (loaded once for both): the TTA accuracy in its
    metrics.json and its predictions.npz."""
    needs_tta = "tta" not in metrics
    needs_predictions = not run.predictions.exists()
    if not (needs_tta or needs_predictions):
        return
    if needs_tta and cfg.eval.tta_views == 0:  # TTA off: recorded as not measured, nothing to load
        metrics["tta"] = None
    if needs_predictions or "tta" not in metrics:
        setup_threads(cfg.threads)
        classifier, _ = load_classifier(run.finetuned_weights)
        images, targets = load_test_sample(cfg)
        if needs_predictions:
            stages.save_predictions(run.predictions, stages.probabilities(stages.predict_logits(classifier, images)),
                                    targets, images)
        if "tta" not in metrics:
            metrics["tta"] = stages.tta(cfg, classifier, images, targets)
    if needs_tta:
        atomic_write_text(run.metrics, json.dumps(metrics, indent=2))


# ----- the single-stage commands ----------------------------------------------
def pretrain_only(cfg: RunConfig, out_dir: str | Path, *, quiet: bool = False,
                  stop_requested: Callable[[], bool] = lambda: False, resume: bool = False,
                  command: str = "mnist-ssl pretrain") -> Path:
    """``mnist-ssl pretrain``: pretrain only; returns the pretrained checkpoint's path.

    The state of every epoch is saved; a stop (SIGINT/SIGTERM) keeps the last one and says how
    ``command --resume`` continues it. Under torchrun every rank joins the group, reads the same
    saved state and stops at the same batch (engine/distributed.py); a lost peer is one line."""
    cfg.validate()
    if get_method(cfg.method).build is None:
        raise ConfigError(f"method {cfg.method!r} has no pretraining; use 'mnist-ssl reproduce --methods {cfg.method}'")
    run = RunDir(out_dir)
    with distributed.process_group(setup(cfg)) as device:  # torchrun: join the group
        seed_everything(cfg.seed)
        data = prepare_data(cfg, device)
        saved = _start_point(cfg, run).state if resume else None
        if distributed.is_main():
            atomic_write_text(run.config, cfg.to_json())
            _start_log(run, saved)
        encoder = ViTEncoder(cfg.model).to(device)
        try:
            objective = stages.pretrain(
                cfg, encoder, data.pretrain_images, stop_requested=distributed.agreed_stop(stop_requested),
                resume=saved, callbacks=lambda label: stages.run_callbacks(cfg, run.log, label, quiet, None))
        except TrainingInterrupted as e:
            raise interrupted(e, run.path, command) from None
        if distributed.is_main():
            stages.save_pretrained(cfg, objective, run.pretrained, data.classes)
            stages.pretraining_figure(cfg, objective, data.test_images, run.figure)
            clear_train_state(run.path)  # finished: pretrained.safetensors is the result
    return run.pretrained_weights


def interrupted(e: TrainingInterrupted, folder: Path, command: str) -> TrainingInterrupted:
    """The stop of a single-stage command as one line: what is kept, and the command that continues."""
    kept = f"the state of epoch {e.saved_epoch} is kept in {folder}" if e.saved_epoch else \
        f"nothing of this phase was finished in {folder}"
    again = command if command.split()[-1] == "--resume" else f"{command} --resume"
    return TrainingInterrupted(e.phase, e.epoch, f"{e}; {kept}. Continue with: {again}")


def load_pretrained(checkpoint: str | Path) -> tuple[ViTEncoder, RunConfig]:
    """A pretrained encoder (a pretrained.safetensors, or the folder `pretrain --out` wrote) and
    the run config it was pretrained with."""
    if Path(checkpoint).is_dir():
        checkpoint = RunDir(checkpoint).pretrained_weights
    encoder, meta = load_encoder(checkpoint)
    saved = RunConfig.from_dict(meta.get("run_config") or RunConfig(method=meta.get("method", "mae")).to_dict())
    return encoder, saved


# Model fields without weights: a loaded encoder can take new values of these.
RETUNABLE_MODEL_FIELDS = ("dropout", "attn_dropout")


def finetune_pretrained(encoder: ViTEncoder, saved: RunConfig, cfg: RunConfig, out_dir: str | Path, *,
                        quiet: bool = False, stop_requested: Callable[[], bool] = lambda: False,
                        resume: bool = False, command: str = "mnist-ssl finetune") -> dict:
    """``mnist-ssl finetune``: fine-tune and test ``encoder`` with ``cfg`` (the checkpoint's
    config ``saved`` with the command line on top). Dropout rates the command line changed
    are applied to the encoder; any architectural change is refused, never ignored."""
    wanted = cfg.model
    changed = [f.name for f in fields(wanted) if getattr(wanted, f.name) != getattr(saved.model, f.name)]
    fixed = [name for name in changed if name not in RETUNABLE_MODEL_FIELDS]
    if fixed:
        name = fixed[0]
        raise ConfigError(f"model.{name}={getattr(wanted, name)!r} (from --set or --config): the checkpoint's "
                          f"encoder has {name}={getattr(encoder.cfg, name)!r}, which fine-tuning cannot change "
                          f"(only {', '.join('model.' + n for n in RETUNABLE_MODEL_FIELDS)} can)")
    if changed:
        encoder.set_dropout(wanted.dropout, wanted.attn_dropout)
    cfg.model = encoder.cfg
    device = setup(cfg)
    try:
        return run_experiment(cfg, out_dir, quiet=quiet, encoder=encoder.to(device), stop_requested=stop_requested,
                              resume=resume)
    except TrainingInterrupted as e:
        raise interrupted(e, Path(out_dir), command) from None


def evaluate_checkpoint(checkpoint: str | Path, *, data: str = "embedded", dataset: str = "mnist",
                        classes: list[int] | None = None, classes_given: bool = False,
                        test_per_class="keep", all_test: bool = False, seed: int = 0,
                        threads: int = 1, tta_views: int = 0) -> dict:
    """``mnist-ssl evaluate``: test a fine-tuned classifier on the test split of ``data``; with
    ``tta_views`` > 0 also with test-time augmentation (the checkpoint's fine-tuning augmentation)."""
    from mnist_ssl.config import DataConfig
    from mnist_ssl.data import class_index, load_test_split

    setup_threads(threads)
    model, meta = load_classifier(checkpoint)
    ckpt_classes = list(meta.get("classes") or range(model.cfg.num_classes))
    wanted = ckpt_classes
    if classes_given:
        wanted = list(range(10)) if classes is None else classes
        foreign = [c for c in wanted if c not in ckpt_classes]
        if foreign:
            raise ConfigError(f"--classes: the checkpoint was trained on {ckpt_classes}, "
                              f"it cannot predict {foreign}")
    data_cfg = DataConfig(source=data, dataset=dataset, classes=wanted)
    if test_per_class != "keep":
        data_cfg.test_per_class = test_per_class
    data_cfg.validate()
    split = load_test_split(data_cfg, seed, all_test=all_test)
    targets = class_index(split.labels, ckpt_classes)
    result, _ = stages.evaluate(model, split.images, targets, ckpt_classes)
    result["n"] = result["n_test"]
    result["classes"] = ckpt_classes
    if tta_views:
        cfg = RunConfig.from_dict(meta.get("run_config") or {})
        cfg.seed, cfg.eval.tta_views = seed, tta_views
        if not cfg.finetune_augment.enabled:
            raise ConfigError("--tta: this checkpoint was fine-tuned without augmentation, so augmented "
                              "test copies are views it never saw (they lower its accuracy); leave --tta out")
        result["tta"] = stages.tta(cfg, model, split.images, targets)
    return result
