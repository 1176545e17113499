"""Resumable training state: written at the end of every epoch, read back by ``--resume``.

``RUN/resume.safetensors`` holds every tensor: the module's ``state_dict``, the
optimiser's per-parameter state (Adam's moments and step counts) and the RNG
states of Python's ``random``, NumPy and torch (CPU, and CUDA/MPS when used),
stored as uint8 byte tensors. ``RUN/resume.json`` holds the rest: the format
tag, phase, completed epochs and steps, the epoch records so far, the log
lines of the whole run so far, the optimiser's hyper-parameters, the schedule's
state, the non-tensor parts of the RNG states, the run's config, and the
SHA-256 of the tensors file. Nothing is pickled and nothing is unpickled.

The JSON file is the commit point. A save writes the tensors to
``resume.next.safetensors`` (temp file, fsync, rename), then ``resume.json``
(likewise), then renames the tensors to ``resume.safetensors``. A crash at any
moment leaves a JSON file whose hash matches one of the two tensor files, so
the last completed epoch can always be read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_ssl.engine.checkpoint import atomic_write_bytes, atomic_write_text, load_into
from mnist_ssl.errors import CheckpointError, ConfigError, TrainingDiverged, WriteFailed
from mnist_ssl.fileio import write_failed

FORMAT = "mnist-ssl/resume/v1"
JSON_NAME = "resume.json"
TENSORS_NAME = "resume.safetensors"
NEXT_NAME = "resume.next.safetensors"
# resume.json's own checksum (of its other fields): a hand edit is caught, not trained on.
# States written before it existed have none and are read as before.
META_HASH = "meta_sha256"
PHASES = ("pretrain", "finetune")


def _meta_hash(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != META_HASH}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ----- what is saved ----------------------------------------------------------
def _module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _bytes_tensor(array: np.ndarray) -> torch.Tensor:
    """Any numpy array as a flat uint8 tensor of its native bytes."""
    return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).reshape(-1).copy())


def rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) for the RNGs of Python, NumPy, torch CPU and the training device."""
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    version, words, gauss_next = random.getstate()
    tensors["rng.python"] = _bytes_tensor(np.asarray(words, dtype=np.uint32))
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = _bytes_tensor(np.asarray(keys, dtype=np.uint32))
    meta: dict[str, Any] = {"python": {"version": version, "gauss_next": gauss_next},
                            "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                                      "cached_gaussian": float(cached)},
                            "cuda_devices": 0, "mps": False}
    if device.type == "cuda":
        states = torch.cuda.get_rng_state_all()
        for i, s in enumerate(states):
            tensors[f"rng.cuda.{i}"] = s.cpu()
        meta["cuda_devices"] = len(states)
    if device.type == "mps":
        tensors["rng.mps"] = torch.mps.get_rng_state().cpu()
        meta["mps"] = True
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    words = tensors["rng.python"].numpy().view(np.uint32)
    random.setstate((meta["python"]["version"], tuple(int(w) for w in words), meta["python"]["gauss_next"]))
    n = meta["numpy"]
    np.random.set_state((n["kind"], tensors["rng.numpy"].numpy().view(np.uint32).copy(), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    if meta.get("cuda_devices") and torch.cuda.is_available():
        states = [tensors[f"rng.cuda.{i}"] for i in range(meta["cuda_devices"])]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    if meta.get("mps") and "rng.mps" in tensors and torch.backends.mps.is_available():
        torch.mps.set_rng_state(tensors["rng.mps"])


def train_state_tensors(state) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) of a :class:`~mnist_ssl.engine.loop.TrainState`, RNG states included."""
    module = getattr(state.module, "_orig_mod", state.module)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in module.state_dict().items():
        t = v.detach().to("cpu", copy=True).contiguous()
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise TrainingDiverged(
                f"{state.phase}: weight {k} became NaN or inf by the end of epoch {state.epoch}; "
                f"the state of the previous epoch is kept; try a lower learning rate or "
                f"--set {state.phase}.grad_clip=1.0"
            )
        tensors[f"module.{k}"] = t
    opt = state.optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    rng_tensors, rng_meta = rng_state(_module_device(module))
    tensors.update(rng_tensors)
    meta = {
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars,
                      "tensor_state": {str(pid): sorted(k for k, v in s.items() if torch.is_tensor(v))
                                       for pid, s in opt["state"].items()}},
        "scheduler": state.scheduler.state_dict(),
        "rng": rng_meta,
    }
    return tensors, meta


# ----- writing ------------------------------------------------------------------
def save_train_state(run_dir: str | Path, state, *, run_config: dict, log_lines: list[str]) -> Path:
    """Write ``run_dir/resume.{safetensors,json}`` for ``state`` (atomic; see the module doc)."""
    from safetensors.torch import save

    run_dir = Path(run_dir)
    tensors, parts = train_state_tensors(state)
    blob = save(tensors)
    meta = {"format": FORMAT, "phase": state.phase, "epoch": state.epoch, "epochs": state.epochs,
            "step": state.step, "steps_per_epoch": state.steps_per_epoch, "history": state.history,
            "log": log_lines, "run_config": run_config, "sha256": hashlib.sha256(blob).hexdigest(), **parts}
    meta[META_HASH] = _meta_hash(meta)
    text = json.dumps(meta, indent=1, sort_keys=True)
    atomic_write_bytes(run_dir / NEXT_NAME, blob)
    try:
        atomic_write_text(run_dir / JSON_NAME, text)
    except WriteFailed:
        # The previous JSON still names the previous tensors: that epoch stays the resumable state.
        (run_dir / NEXT_NAME).unlink(missing_ok=True)
        raise
    try:
        (run_dir / NEXT_NAME).replace(run_dir / TENSORS_NAME)
    except OSError as e:  # the new JSON already matches NEXT, which load_train_state reads
        raise write_failed(run_dir / TENSORS_NAME, e) from None
    return run_dir / TENSORS_NAME


def clear_train_state(run_dir: str | Path) -> None:
    """Remove the resume files (the JSON first: tensors without it are never read)."""
    run_dir = Path(run_dir)
    for name in (JSON_NAME, TENSORS_NAME, NEXT_NAME):
        (run_dir / name).unlink(missing_ok=True)


HOLD_ENV = "MNIST_SSL_TEST_HOLD_AT"


def _hold_point() -> tuple[str, int] | None:
    """The test hook ``MNIST_SSL_TEST_HOLD_AT=<phase>:<step>`` as (phase, step); None when unset or malformed."""
    phase, _, step = os.environ.get(HOLD_ENV, "").partition(":")
    return (phase, int(step)) if phase in PHASES and step.isdigit() else None


class ResumeWriter:
    """Callback: saves the resumable state at the end of every epoch (after the log line).

    Test hook: with ``MNIST_SSL_TEST_HOLD_AT=<phase>:<step>`` the run waits after
    that step (counted from the phase's start) until a stop is requested (at most
    10 minutes), so a test can signal a job at a known point, after a known
    saved epoch, without betting on how fast the machine is. It changes no number.
    """

    HOLD_LIMIT_S = 600.0

    def __init__(self, run_dir: str | Path, run_config: dict, log_path: str | Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.log_path = Path(log_path) if log_path is not None else self.run_dir / "log.jsonl"
        self.hold = _hold_point()

    def on_step(self, state) -> None:
        if self.hold is not None and self.hold == (state.phase, state.step):
            deadline = time.monotonic() + self.HOLD_LIMIT_S
            # This process's own flag: under torchrun the agreed one is a collective, which the
            # other ranks, waiting in theirs, would pair with a different one.
            requested = getattr(state.stop_requested, "local", state.stop_requested)
            while not requested() and time.monotonic() < deadline:
                time.sleep(0.01)

    def on_epoch_end(self, state, record: dict) -> None:
        lines = []
        if self.log_path.exists():
            lines = [line for line in self.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        save_train_state(self.run_dir, state, run_config=self.run_config, log_lines=lines)


# ----- reading ------------------------------------------------------------------
def load_train_state(run_dir: str | Path) -> dict | None:
    """The saved state of ``run_dir`` as ``{"meta": ..., "tensors": ...}``, or None when there is none.

    Raises :class:`CheckpointError` for files that are not a resume state of
    this program, or whose tensors match no hash (corrupted or replaced).
    """
    from safetensors.torch import load

    run_dir = Path(run_dir)
    json_path = run_dir / JSON_NAME
    if not json_path.exists():
        return None
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"resume state {json_path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not an mnist-ssl resume state (format {FORMAT} expected)")
    _check_meta(meta, json_path)
    blob = None
    for name in (TENSORS_NAME, NEXT_NAME):  # NEXT: a save stopped between its last two renames
        path = run_dir / name
        if path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == meta.get("sha256"):
                blob = data
                break
    if blob is None:
        raise CheckpointError(
            f"resume state {run_dir / TENSORS_NAME} is missing or does not match the hash in {JSON_NAME}: "
            "truncated, corrupted or replaced; start this run again with --overwrite"
        )
    try:
        tensors = load(blob)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"resume state {run_dir / TENSORS_NAME} is not a valid safetensors file ({e})") \
            from None
    for key in ("rng.torch", "rng.python", "rng.numpy"):
        if key not in tensors or tensors[key].dtype != torch.uint8:
            raise CheckpointError(f"resume state {run_dir / TENSORS_NAME} lacks the RNG state {key}")
    for pid, names in meta["optimizer"]["tensor_state"].items():
        for name in names:
            if f"optimizer.{pid}.{name}" not in tensors:
                raise CheckpointError(f"resume state {run_dir / TENSORS_NAME} lacks the optimiser tensor "
                                      f"optimizer.{pid}.{name} that {JSON_NAME} names")
    return {"meta": meta, "tensors": tensors, "where": str(run_dir / TENSORS_NAME)}


def _check_meta(meta: dict, json_path: Path) -> None:
    """The fields of a resume.json that training reads, with the types it needs: a damaged or
    hand-edited file is one line naming the field, never a traceback half-way through restoring."""
    def bad(field: str, expected: str) -> CheckpointError:
        return CheckpointError(f"resume state {json_path}: {field} is {json.dumps(meta.get(field))[:60]}, "
                               f"expected {expected} (damaged or edited by hand)")

    if META_HASH in meta and meta[META_HASH] != _meta_hash(meta):
        raise CheckpointError(f"resume state {json_path} does not match its own checksum ({META_HASH}): "
                              "damaged or edited by hand")
    if meta.get("phase") not in PHASES:
        raise bad("phase", " or ".join(PHASES))
    for field in ("epoch", "epochs", "step", "steps_per_epoch"):
        v = meta.get(field)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(field, "an integer >= 0")
    if meta["epoch"] > meta["epochs"]:
        raise bad("epoch", f"at most epochs ({meta['epochs']})")
    for field, kind, name in (("history", list, "a list"), ("log", list, "a list of log lines"),
                              ("run_config", dict, "an object"), ("scheduler", dict, "an object"),
                              ("rng", dict, "an object"), ("optimizer", dict, "an object"),
                              ("sha256", str, "a SHA-256 string")):
        if not isinstance(meta.get(field), kind):
            raise bad(field, name)
    if not all(isinstance(line, str) for line in meta["log"]):
        raise bad("log", "a list of log lines")
    opt = meta["optimizer"]
    if not (isinstance(opt.get("param_groups"), list) and isinstance(opt.get("scalars"), dict)
            and isinstance(opt.get("tensor_state"), dict)
            and all(isinstance(v, list) for v in opt["tensor_state"].values())):
        raise bad("optimizer", "param_groups, scalars and tensor_state")
    rng = meta["rng"]
    if not (isinstance(rng.get("python"), dict) and isinstance(rng.get("numpy"), dict)):
        raise bad("rng", "the python and numpy RNG states")


def check_same_config(resume: dict, run_config: dict, run_dir: str | Path) -> None:
    """Refuse to resume a run with settings other than those it was started with."""
    refuse_other_config(normalised_config(resume["meta"].get("run_config") or {}), run_config, run_dir,
                        "was started with")


def normalised_config(saved: dict) -> dict:
    """A saved run config as this version writes it: a field added since it was saved takes its
    default (which is the behaviour the run had). Left as it is when it no longer parses."""
    from mnist_ssl.objectives.registry import RunConfig

    try:
        return RunConfig.from_dict(saved).to_dict()
    except ConfigError:
        return saved


def refuse_other_config(saved: dict, run_config: dict, run_dir: str | Path, made: str) -> None:
    """One line naming the first setting where ``saved`` (a run's) and ``run_config`` (this
    command's) differ; nothing when they are equal. ``made``: "was started with" or "was made with"."""
    if saved == run_config:
        return
    key, old, new = _first_difference(saved, run_config)
    raise ConfigError(
        f"--resume: {run_dir} {made} {key}={json.dumps(old)}, this command gives "
        f"{json.dumps(new)}; resume with the same settings, or start again with --overwrite"
    )


def _first_difference(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else k)
    return where or "config", a, b


def restore_train_state(state, resume: dict) -> None:
    """Load ``resume`` (from :func:`load_train_state`) into a freshly built ``state``, RNGs included.

    The module must have the same parameters, the optimiser and schedule the
    same shape and the phase the same length in epochs and steps; anything
    else is refused with :class:`CheckpointError`.
    """
    meta, tensors, where = resume["meta"], resume["tensors"], resume["where"]
    for key in ("phase", "epochs", "steps_per_epoch"):
        if meta.get(key) != getattr(state, key):
            raise CheckpointError(
                f"resume state {where}: {key} is {meta.get(key)!r}, this run has {getattr(state, key)!r}"
            )
    if not isinstance(meta.get("epoch"), int) or not 0 <= meta["epoch"] <= state.epochs:
        raise CheckpointError(f"resume state {where}: epoch {meta.get('epoch')!r} is out of range")
    module = getattr(state.module, "_orig_mod", state.module)
    load_into(module, {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")},
              f"resume state {where}")

    opt_meta = meta["optimizer"]
    opt_state: dict[int, dict[str, Any]] = {}
    for pid, names in opt_meta["tensor_state"].items():
        opt_state[int(pid)] = {name: tensors[f"optimizer.{pid}.{name}"] for name in names}
    for pid, scalars in opt_meta["scalars"].items():
        opt_state.setdefault(int(pid), {}).update(scalars)
    current = state.optimizer.state_dict()["param_groups"]
    groups = opt_meta["param_groups"]
    if len(groups) != len(current) or any(len(g["params"]) != len(c["params"]) for g, c in zip(groups, current)):
        raise CheckpointError(f"resume state {where}: its optimiser does not fit this model's parameters")
    for g, c in zip(groups, current):  # JSON turned tuples (Adam's betas) into lists
        for k, v in c.items():
            if isinstance(v, tuple) and isinstance(g.get(k), list):
                g[k] = tuple(g[k])
    state.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    state.scheduler.load_state_dict(meta["scheduler"])

    state.epoch = meta["epoch"]
    state.step = meta["step"]
    state.history = list(meta["history"])
    set_rng_state(tensors, meta["rng"])


# ----- a damaged run folder: where the run starts again -------------------------
class RunStart:
    """Where ``--resume`` continues one unfinished run, after checking its files.

    state: a resume state (:func:`load_train_state`) to continue from, or None;
    from_pretrained: no state, but pretraining finished: fine-tune the encoder of
    ``pretrained.safetensors`` from the first fine-tuning epoch;
    log: the lines ``log.jsonl`` must start with (those of the state, or the
    finished pretraining's);
    problem: one line naming the damaged file, what is wrong, and where the run
    starts again; None when nothing was damaged.
    """

    def __init__(self, state: dict | None = None, from_pretrained: bool = False,
                 log: list[str] | None = None, problem: str | None = None) -> None:
        self.state, self.from_pretrained, self.log, self.problem = state, from_pretrained, log or [], problem

    @property
    def where(self) -> str:
        if self.state is not None:
            m = self.state["meta"]
            return f"after {m['phase']} epoch {m['epoch']}"
        return "its pretrained checkpoint" if self.from_pretrained else "scratch"


def last_good_state(run_dir: str | Path, run_config: dict, *, pretrains: bool,
                    problem: str | None = None) -> RunStart:
    """The last good state of the unfinished run in ``run_dir`` (made with ``run_config``).

    In order: its resume state (resume.json + resume.safetensors); else, for a
    method that ``pretrains``, a finished pretraining (``pretrained.safetensors``
    that reads back, made with this config, and every pretraining line in
    ``log.jsonl``); else scratch. Damaged resume files are removed (nothing can
    be read from them) and named in ``problem``. A state or checkpoint made with
    other settings is not damage: that raises ConfigError, as before.
    ``problem``: damage the caller found already (a finished run's metrics.json,
    see :func:`finished_run_problem`, which the caller has removed).
    """
    run_dir = Path(run_dir)
    try:
        state = load_train_state(run_dir)
    except CheckpointError as e:
        state, problem = None, str(e)
        clear_train_state(run_dir)
    if state is not None and problem is None:
        check_same_config(state, run_config, run_dir)
        if state["meta"]["phase"] == "pretrain" or not pretrains:
            return RunStart(state, log=state["meta"]["log"])
        encoder_problem = _pretrained_problem(run_dir, run_config)
        if encoder_problem is None:
            return RunStart(state, log=state["meta"]["log"])
        # The saved fine-tuning needs the pretrained encoder (frozen probes): without it, scratch.
        clear_train_state(run_dir)
        return RunStart(problem=f"{encoder_problem}; {run_dir} is redone from scratch")
    if pretrains and (problem is not None or (run_dir / "pretrained.json").exists()):
        encoder_problem = _pretrained_problem(run_dir, run_config)
        log = _pretraining_log(run_dir, run_config) if encoder_problem is None else None
        if log is not None:
            return RunStart(from_pretrained=True, log=log, problem=problem and
                            f"{problem}; {run_dir} is redone from its pretrained checkpoint")
        problem = problem or encoder_problem
    return RunStart(problem=problem and f"{problem}; {run_dir} is redone from scratch")


def _pretrained_problem(run_dir: Path, run_config: dict) -> str | None:
    """None when ``run_dir/pretrained.safetensors`` reads back and was made with ``run_config``;
    else what is wrong with it. Other settings raise ConfigError (not damage)."""
    from mnist_ssl.engine.checkpoint import read_checkpoint

    try:
        _, meta = read_checkpoint(run_dir / "pretrained.safetensors")
    except CheckpointError as e:
        return str(e)
    if meta.get("kind") != "objective" or not isinstance(meta.get("run_config"), dict):
        return f"{run_dir / 'pretrained.json'} is not the sidecar of a pretrained checkpoint (damaged or edited)"
    refuse_other_config(normalised_config(meta["run_config"]), run_config, run_dir, "was pretrained with")
    return None


def _pretraining_log(run_dir: Path, run_config: dict) -> list[str] | None:
    """The log lines of a finished pretraining in ``run_dir/log.jsonl`` (epochs 1..N in order),
    or None when they are not all there."""
    try:
        text = (run_dir / "log.jsonl").read_text(encoding="utf-8")
        epochs = int(run_config["pretrain"]["epochs"])
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        return None
    lines = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("phase") == "pretrain":
            lines.append((record.get("epoch"), line))
    if [epoch for epoch, _ in lines] != list(range(1, epochs + 1)):
        return None
    return [line for _, line in lines]


def finished_run_problem(run_dir: str | Path, method: str, seed: int) -> str | None:
    """What is wrong with the finished run in ``run_dir`` (one line), or None when its
    ``metrics.json`` is a valid RunMetrics of this method and seed and ``finetuned.safetensors``
    reads back (hash and format). A damaged finished run is redone from its last good state
    (:func:`last_good_state`, after the caller removes its metrics.json)."""
    from mnist_ssl.engine.checkpoint import read_checkpoint
    from mnist_ssl.report.schema import validate_run_metrics

    path = Path(run_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{path} is not valid JSON ({e}): truncated or damaged"
    problems = validate_run_metrics(metrics, "metrics.json")
    if problems:
        return f"{path} is damaged or edited by hand: {problems[0]}"
    if metrics["method"] != method or metrics["seed"] != seed:
        return (f"{path} holds the run of {metrics['method']} seed {metrics['seed']}, "
                f"not {method} seed {seed} (edited or copied by hand)")
    try:
        read_checkpoint(Path(run_dir) / "finetuned.safetensors")
    except CheckpointError as e:
        return str(e)
    return None
