"""The table of methods: adding one touches its own module and one entry here.

A method's module holds its objective, its ``build(encoder, run_config)`` and its
config section (a dataclass); its entry here names them with its preset, the
accuracy the source document reports and the kind of figure it draws. Everything
that lists methods reads this table: :class:`RunConfig` has one section per entry,
the resume checks compare those sections, the report takes the document's
figures from here.

``build`` makes the pretraining objective around a fresh encoder (``None``: no
pretraining, the from-scratch baseline). ``preset`` holds the method's defaults
as ``RunConfig`` overrides, applied before the user's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from mnist_ssl.config import EvalConfig, RunConfigBase
from mnist_ssl.errors import ConfigError
from mnist_ssl.evaluation.semi_config import SemiConfig
from mnist_ssl.objectives import dino, ibot, infonce, mae, mae_infonce, videomae


@dataclass(frozen=True)
class MethodSpec:
    name: str
    build: Callable[..., Any] | None
    description: str
    section: str | None = None  # this method's RunConfig section, e.g. "mae"
    config: type | None = None  # the section's dataclass, from the method's module
    document_accuracy: float | None = None  # percent, as the source document reports it
    preset: dict = field(default_factory=dict)
    figure: str | None = None  # "reconstruction" or "views": the figure its pretraining writes
    # Whether `reproduce` and `label-efficiency` run it when --methods is not given: a method
    # joins the default job once measurement shows it adds something (docs/results.md).
    in_default_job: bool = True


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in [
        MethodSpec("mae", mae.build, "masked autoencoder ViT (chapter 1)", "mae", mae.MAEConfig,
                   99.00, figure="reconstruction", preset=mae.PRESET),
        MethodSpec("infonce", infonce.build, "contrastive ViT, InfoNCE between CLS tokens of two views (chapter 2)",
                   "infonce", infonce.InfoNCEConfig, 98.67, figure="views", preset=infonce.PRESET),
        MethodSpec("mae-infonce", mae_infonce.build, "MAE + InfoNCE, weighted sum of both losses (chapter 2)",
                   "mae_infonce", mae_infonce.MAEInfoNCEConfig, 98.00, figure="reconstruction",
                   preset=mae_infonce.PRESET),
        MethodSpec("videomae", videomae.build, "video MAE on 3-frame digit clips (2.11-2.15)", "videomae",
                   videomae.VideoMAEConfig, 98.00, figure="reconstruction", preset=videomae.PRESET),
        MethodSpec("dino", dino.build, "self-distillation, student and EMA teacher on global and local crops "
                   "(Caron et al. 2021)", "dino", dino.DINOConfig, None, figure="views", preset=dino.PRESET),
        MethodSpec("ibot", ibot.build, "DINO plus masked patch self-distillation (iBOT, Zhou et al. 2022)", "ibot",
                   ibot.IBOTConfig, None, figure="views", preset=ibot.PRESET, in_default_job=False),
        MethodSpec("supervised", None, "the same ViT trained from scratch, no pretraining"),
    ]
}


def method_names() -> list[str]:
    return list(METHODS)


def default_methods() -> list[str]:
    """The methods a job runs when none are named (``in_default_job``)."""
    return [name for name, spec in METHODS.items() if spec.in_default_job]


def pretrained_methods() -> list[str]:
    """The methods that pretrain (all but the from-scratch baseline)."""
    return [name for name, spec in METHODS.items() if spec.build is not None]


def method_sections() -> list[str]:
    """The RunConfig sections the methods declare, in the table's order."""
    return [spec.section for spec in METHODS.values() if spec.section is not None]


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def build_objective(cfg, encoder):
    """The pretraining objective of ``cfg.method`` around ``encoder`` (None for no pretraining)."""
    spec = get_method(cfg.method)
    return None if spec.build is None else spec.build(encoder, cfg)


def _validate(self) -> "RunConfig":
    get_method(self.method)
    RunConfigBase.validate(self)
    return self


RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [(spec.section, spec.config, field(default_factory=spec.config))
     for spec in METHODS.values() if spec.section is not None]
    + [("semi", SemiConfig, field(default_factory=SemiConfig)),
       ("eval", EvalConfig, field(default_factory=EvalConfig))],
    bases=(RunConfigBase,),
    namespace={"validate": _validate, "__module__": __name__,
               "__doc__": "Everything one (method, seed) run needs: config.RunConfigBase's sections, "
                          "one section per method of METHODS, then semi and eval."},
)
