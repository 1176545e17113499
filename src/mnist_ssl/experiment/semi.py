"""The semi-supervised stage of a run: the algorithms live in ``evaluation/semi.py``; this
module gives them the run's views, seeding and student (the orchestration's part)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mnist_ssl.config import AugmentConfig
from mnist_ssl.errors import ConfigError
from mnist_ssl.evaluation.semi import STRONG_AUGMENT, copy_student, run_semi
from mnist_ssl.experiment.data import clip_builder, make_view, phase_view
from mnist_ssl.experiment.runtime import seed_everything
from mnist_ssl.models.vit import ViTClassifier


def semi_stage(cfg, teacher: nn.Module, unlabelled_u8: torch.Tensor, labelled_u8: torch.Tensor,
               labelled_targets: torch.Tensor, num_classes: int, *, seed: int,
               init_encoder: nn.Module | None = None, **train_kw) -> tuple[nn.Module, list[dict]]:
    """The ``semi`` stage of a run (``cfg``: the RunConfig): a student trained from ``teacher`` (the
    fine-tuned classifier) on ``unlabelled_u8`` -> the student, in eval mode, and the engine's
    per-epoch records of the stage (its TrainState's ``history``).

    The student is a copy of the teacher (``semi.student_init="teacher"``) or a fresh head on a
    copy of ``init_encoder`` (``"pretrained"``: the encoder before fine-tuning). The weak view is
    the run's fine-tuning augmentation, the strong one :data:`STRONG_AUGMENT` (clips built
    after either for video models). Seeded by ``seed`` (+ 2: pretraining uses ``seed``,
    fine-tuning ``seed + 1``).
    """
    sc = cfg.semi
    sc.validate()
    seed_everything(seed + 2)
    if sc.student_init == "teacher":
        student = copy_student(teacher)
    else:
        if init_encoder is None:
            raise ConfigError("semi.student_init=pretrained needs the encoder before fine-tuning; "
                              "use semi.student_init=teacher here")
        student = ViTClassifier(copy.deepcopy(init_encoder), num_classes).to(labelled_u8.device)
        student.requires_grad_(True)
    strong = make_view(AugmentConfig(**STRONG_AUGMENT), clip_builder(cfg)) if sc.kind == "fixmatch" else None
    state = run_semi(teacher, student, unlabelled_u8, labelled_u8, labelled_targets, sc,
                     weak_view=phase_view(cfg, "finetune"), strong_view=strong, **train_kw)
    return student, state.history
