"""Typed configuration: the one source of truth for a run.

Every run writes its resolved :class:`RunConfig` to ``config.json``; every
checkpoint carries the :class:`ModelConfig` it was built from, so a model can be
rebuilt without the command line. Values are validated in one place
(:meth:`RunConfig.validate`) and refused with a :class:`ConfigError` that names
the field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from mnist_ssl.errors import ConfigError


@dataclass
class ModelConfig:
    """The ViT encoder (and, after fine-tuning, its classification head)."""

    image_size: int = 28
    in_chans: int = 1
    patch_size: int = 4
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1  # in the feed-forward network and after attention
    attn_dropout: float = 0.0  # on the attention weights
    pos_embed: str = "learned"  # "learned" (random start) or "sincos" (fixed 2-D sin-cos)
    # Clips: an image is a clip of one frame. ``frames`` > 1 makes a video model
    # whose inputs are (B, C, T, H, W); ``tubelet`` frames share one token.
    frames: int = 1
    tubelet: int = 1
    num_classes: int = 0  # 0: encoder only (pretraining); set at fine-tuning
    # The encoder computes (x - pixel_mean) / pixel_std on pixels in [0, 1];
    # reconstruction targets stay in pixel space. Default: raw [0, 1] pixels, which
    # suit the learned position embedding (docs/results.md has the comparison).
    pixel_mean: float = 0.0
    pixel_std: float = 1.0

    def validate(self, where: str = "model") -> None:
        check_positive(self, "image_size", "in_chans", "patch_size", "dim", "depth", "heads")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"model.patch_size={self.patch_size} does not divide the image size "
                f"{self.image_size}: choose one of {_divisors(self.image_size)}"
            )
        if self.dim % self.heads:
            raise ConfigError(
                f"model.heads={self.heads} does not divide model.dim={self.dim}"
            )
        if (self.dim // self.heads) % 2:
            raise ConfigError(f"model.dim/heads={self.dim // self.heads} must be even")
        if self.pos_embed in ("sincos",) and self.dim % 4:
            raise ConfigError(f"model.dim={self.dim} must be a multiple of 4 for sin-cos position embeddings")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"model.mlp_ratio={self.mlp_ratio} must be > 0")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be in [0, 1)")
        check_choice(self, "pos_embed", ("sincos", "learned"))
        if self.frames < 1:
            raise ConfigError(f"model.frames={self.frames} must be >= 1")
        if self.tubelet < 1 or self.frames % self.tubelet:
            raise ConfigError(
                f"model.tubelet={self.tubelet} does not divide model.frames={self.frames}"
            )
        if not self.pixel_std > 0:
            raise ConfigError(f"model.pixel_std={self.pixel_std} must be > 0")
        if self.num_classes < 0:
            raise ConfigError(f"model.num_classes={self.num_classes} must be >= 0")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return (self.frames // self.tubelet) * self.grid * self.grid

    @property
    def patch_dim(self) -> int:
        return self.tubelet * self.patch_size * self.patch_size * self.in_chans


@dataclass
class DataConfig:
    """Where the images come from and which of them a run uses."""

    # "embedded", a folder with IDX files, an image folder (DIR/<class>/<image>) or a
    # MedMNIST-style .npz (docs/data.md, "Sources"); told apart by what the path holds.
    source: str = "embedded"
    dataset: str = "mnist"  # "mnist" or "fashion-mnist": names the IDX sub-folder
    classes: list[int] | None = field(default_factory=lambda: [0, 1, 2])  # class numbers; None: all
    # The names of the source's classes (an image folder's folder names), index = class number;
    # filled in from the data for image folders and .npz files, None for MNIST's digits.
    class_names: list[str] | None = None
    # A folder of unlabelled images (or any source) to pretrain on instead of the training sample
    # (--pretrain-data); fine-tuning and the test still use ``source``.
    pretrain_source: str | None = None
    train_per_class: int | None = 100  # None: every image of the class
    test_per_class: int | None = 100
    # What pretraining sees, without labels: "train" = the training sample's images (the
    # document's protocol); "pool" = every image of the source outside this seed's test sample,
    # of every class (the semi-supervised protocol: more unlabelled images, the same labels).
    pretrain_on: str = "train"

    def validate(self, where: str = "data") -> None:
        check_choice(self, "dataset", ("mnist", "fashion-mnist"))
        check_choice(self, "pretrain_on", ("train", "pool"))
        if self.classes is not None:
            if not self.classes:
                raise ConfigError("data.classes is empty")
            for c in self.classes:
                if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < self.num_source_classes:
                    if self.class_names is None:
                        raise ConfigError(f"data.classes: class {c!r} is not a digit 0-9")
                    raise ConfigError(f"data.classes: class {c!r} is not one of the source's "
                                      f"{len(self.class_names)} classes 0-{len(self.class_names) - 1}")
            if len(set(self.classes)) != len(self.classes):
                raise ConfigError(f"data.classes {self.classes} repeats a class")
            if len(self.classes) < 2:
                raise ConfigError("data.classes needs at least two classes to classify")
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name}={value} must be >= 1 (or 'all')")

    @property
    def num_source_classes(self) -> int:
        return 10 if self.class_names is None else len(self.class_names)

    @property
    def num_classes(self) -> int:
        return self.num_source_classes if self.classes is None else len(self.classes)


@dataclass
class AugmentConfig:
    """Batched random affine augmentation of digits (never flips)."""

    enabled: bool = True
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    translate: float = 0.1  # fraction of the image size
    scale_min: float = 0.9
    scale_max: float = 1.1
    shear: float = 0.0  # degrees
    noise: float = 0.0  # std of added Gaussian noise
    erase: float = 0.0  # probability of erasing one random rectangle
    elastic: float = 0.0  # elastic distortion: RMS displacement in pixels; 0 = off
    elastic_sigma: float = 4.0  # smoothness of the elastic field: Gaussian sigma in pixels

    def validate(self, where: str) -> None:
        for name in ("rotate", "translate", "shear", "noise", "elastic"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be >= 0")
        if not self.elastic_sigma > 0:
            raise ConfigError(f"{where}.elastic_sigma={self.elastic_sigma} must be > 0")
        if self.shear >= 90:
            raise ConfigError(f"{where}.shear={self.shear} must be < 90 degrees")
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError(
                f"{where}: need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}"
            )
        if not 0 <= self.erase <= 1:
            raise ConfigError(f"{where}.erase={self.erase} must be a probability in [0, 1]")


@dataclass
class OptimConfig:
    """One training phase: optimiser, schedule, budget."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"  # "adam" or "adamw"
    weight_decay: float = 0.05
    schedule: str = "cosine"  # "cosine" (after warm-up) or "constant"
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    label_smoothing: float = 0.0  # fine-tuning only
    # Layer-wise learning-rate decay (BEiT/MAE fine-tuning): encoder layer l of L trains at
    # lr * layer_decay ** (L + 1 - l), the head at lr; 1.0 = off.
    layer_decay: float = 1.0
    # Fine-tuning only: "zero" starts the head at zero; "probe" first fits it as a
    # logistic regression on the frozen features (LP-FT, Kumar et al. 2022).
    head_init: str = "zero"

    def validate(self, where: str) -> None:
        check_positive(self, "epochs", "batch_size", "lr", where=where)
        check_choice(self, "optimizer", ("adam", "adamw"), where=where)
        check_choice(self, "schedule", ("cosine", "constant"), where=where)
        check_choice(self, "head_init", ("zero", "probe"), where=where)
        if self.weight_decay < 0:
            raise ConfigError(f"{where}.weight_decay={self.weight_decay} must be >= 0")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"{where}.warmup_epochs={self.warmup_epochs} must be in [0, epochs]")
        if self.grad_clip < 0:
            raise ConfigError(f"{where}.grad_clip={self.grad_clip} must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{where}.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"{where}.layer_decay={self.layer_decay} must be in (0, 1]")


@dataclass
class EvalConfig:
    """Frozen-feature evaluations beside fine-tuning."""

    linear_probe: bool = True
    knn: bool = True
    knn_k: int = 5
    probe_c: float = 1.0  # inverse L2 strength of the logistic-regression probe
    # Test-time augmentation: the fine-tuned classifier's accuracy with its probabilities averaged
    # over the test image and this many copies under the fine-tuning augmentation; reported beside
    # the plain accuracy (evaluation/tta.py). 0 = off.
    tta_views: int = 8

    def validate(self, where: str = "eval") -> None:
        if self.knn_k < 1:
            raise ConfigError(f"eval.knn_k={self.knn_k} must be >= 1")
        if self.tta_views < 0:
            raise ConfigError(f"eval.tta_views={self.tta_views} must be >= 0 (0 = no test-time augmentation)")
        if not self.probe_c > 0:
            raise ConfigError(f"eval.probe_c={self.probe_c} must be > 0")


@dataclass
class JobOptions:
    """How a job with several runs trains them."""

    # Several seeds of one method fine-tuned as one batched model (engine/batched.py), in
    # reproduce and in label-efficiency (a budget's seeds), and MAE's seeds pretrained as one in
    # reproduce: each run as if alone, up to rounding (within 2 test images a seed,
    # docs/benchmarks.md); false: one run at a time through the one-model engine.
    batch_models: bool = True
    # --log tensorboard: each run's per-epoch scalars and evaluations also as TensorBoard events
    # in <run>/tensorboard/ (the tensorboard package, an optional extra); log.jsonl stays the record.
    tensorboard: bool = False

    def validate(self, where: str) -> None:
        pass


@dataclass
class RunConfigBase:
    """The sections every run has. ``mnist_ssl.objectives.registry.RunConfig`` is this plus one
    section per registered method (``mae``, ``infonce``, ...), declared in the method's module."""

    method: str = "mae"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    deterministic: bool = False  # deterministic kernels only, CUDA included (docs/reliability.md)
    compile: bool = False  # run the objective through torch.compile (docs/benchmarks.md)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: OptimConfig = field(default_factory=OptimConfig)
    # The fine-tuning recipe chosen by measurement on the protocol (docs/results.md gives the
    # runs): many small steps with a warm-up, long training under augmentation, LP-FT.
    finetune: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=100, batch_size=8, lr=2e-3, warmup_epochs=1.0, head_init="probe"))
    pretrain_augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(enabled=False))
    finetune_augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(elastic=1.0))
    run: JobOptions = field(default_factory=JobOptions)
    # The registry's RunConfig adds the methods' sections, then ``eval: EvalConfig`` last.

    def validate(self) -> "RunConfigBase":
        """Every section, each under its own name (the method's own check is the registry's)."""
        check_choice(self, "device", ("auto", "cpu", "cuda", "mps"))
        if self.threads < 0:
            raise ConfigError(f"threads={self.threads} must be >= 0")
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate(f.name)
        return self

    # ----- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return from_dict(cls, d, "")


# ----- generic dataclass <-> dict helpers -----------------------------------
def from_dict(cls: type, d: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a plain dict, refusing unknown keys and wrong types."""
    if not isinstance(d, dict):
        raise ConfigError(f"config{'.' + where if where else ''} must be an object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config key {_join(where, unknown[0])!r}")
    kwargs = {}
    for key, value in d.items():
        kwargs[key] = _coerce(hints[key], value, _join(where, key))
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config {where} must be a list, got {value!r}")
        return [_coerce(args[0], v, where) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config {where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config {where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config {where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config {where} must be a string, got {value!r}")
        return value
    return value


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` (JSON, else a bare string)."""
    lowered = text.strip().lower()
    if lowered in ("none", "null", "all"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if "," in text:
            return [parse_value(t) for t in text.split(",")]
        return text


def apply_overrides(cfg: RunConfigBase, overrides: list[str]) -> RunConfigBase:
    """Apply ``section.key=value`` overrides (as given to ``--set``) to a copy of ``cfg``."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. pretrain.lr=0.001")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"--set {item!r}: unknown config key {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"--set {item!r}: unknown config key {key!r}")
        node[parts[-1]] = parse_value(raw)
    return type(cfg).from_dict(d)


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON preset (for example ``configs/document.json``)."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return d


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``update`` wins, nested sections merge key by key."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# ----- validation helpers ---------------------------------------------------
def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_positive(obj: Any, *names: str, where: str = "") -> None:
    prefix = where or type(obj).__name__.replace("Config", "").lower()
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{prefix}.{name}={value} must be > 0")


def check_choice(obj: Any, name: str, options: tuple[str, ...], where: str = "") -> None:
    value = getattr(obj, name)
    if value not in options:
        prefix = f"{where}." if where else (
            "" if isinstance(obj, RunConfigBase) else type(obj).__name__.replace("Config", "").lower() + "."
        )
        raise ConfigError(f"{prefix}{name}={value!r} is not one of {', '.join(options)}")


def check_ratio(value: float, where: str) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{where}={value} must be strictly between 0 and 1")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
