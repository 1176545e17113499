"""The semi-supervised stage: after fine-tuning on the few labelled images, use all the unlabelled ones.

Two kinds, each an objective run by the ordinary engine (phase ``"semi"``: the same
logging, schedule, finiteness guard and resume as every phase):

- ``distill`` (SimCLRv2, Chen et al. 2020): the fine-tuned classifier is the teacher;
  a student learns its soft labels at temperature ``temperature`` on every unlabelled
  image, -sum_k p_T(k | x; tau) log p_S(k | x; tau), both on the same weakly augmented
  view, plus ``labelled_weight`` x cross-entropy on a batch of the labelled images.
- ``fixmatch`` (Sohn et al. 2020): the student's own prediction on a weak view of an
  unlabelled image, where its confidence reaches ``threshold``, is the hard label
  for a strong view of the same image; plus ``labelled_weight`` x cross-entropy on
  weak views of labelled images. (The teacher is only the student's starting point.)

The functions take models and uint8 images, never a run folder: the orchestration
builds the student (usually a copy of the fine-tuned teacher, :func:`copy_student`),
calls :func:`run_semi`, then tests the student as it tests any classifier.
The teacher is held outside the objective's modules: it is never trained, never in
the optimiser, and not in the stage's resumable state (the caller reloads it).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mnist_ssl.evaluation.semi_config import STRONG_AUGMENT, SemiConfig
from mnist_ssl.objectives.base import Objective, ObjectiveOutput

View = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["STRONG_AUGMENT", "SemiConfig", "copy_student", "run_semi", "semi_objective", "soft_label_loss"]

def copy_student(teacher: nn.Module) -> nn.Module:
    """A trainable copy of the fine-tuned classifier: the SimCLRv2 self-distillation student."""
    return copy.deepcopy(teacher).requires_grad_(True).train()


def soft_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch mean of -sum_k softmax(t / tau)_k log_softmax(s / tau)_k; no gradient into the teacher."""
    target = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(-1).mean()


class _LabelledBatches:
    """A random batch of the labelled images (uint8 on the device) per call, from torch's global RNG
    (seeded and checkpointed by the engine), through a view function."""

    def __init__(self, images_u8: torch.Tensor, targets: torch.Tensor, batch: int, view: View | None) -> None:
        if images_u8.shape[0] != targets.shape[0] or images_u8.shape[0] == 0:
            raise ValueError(f"labelled images {tuple(images_u8.shape)} and targets {tuple(targets.shape)} "
                             "must be non-empty and of the same length")
        self.images, self.targets, self.view = images_u8, targets, view
        self.batch = min(batch, images_u8.shape[0])

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(self.images.shape[0])[: self.batch].to(self.images.device)
        x = self.images[idx].float().div_(255.0)
        return (self.view(x) if self.view is not None else x), self.targets[idx]


def with_labelled_term(student: nn.Module, labelled: _LabelledBatches | None, weight: float,
                       loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> ObjectiveOutput:
    """``loss`` plus ``weight`` x the student's cross-entropy on a labelled batch (logged as
    ``labelled``), when there are labelled images and the weight is > 0."""
    if labelled is not None and weight > 0:
        xl, yl = labelled.draw()
        ce = F.cross_entropy(student(xl).float(), yl)
        loss = loss + weight * ce
        terms["labelled"] = ce.detach()
    return ObjectiveOutput(loss, terms)


class Distillation(Objective):
    """views: [unlabelled batch (B, C, H, W) float in [0, 1]], un-augmented; the weak view is made here."""

    views = 1
    loss_label = "Distillation Loss"

    def __init__(self, teacher: nn.Module, student: nn.Module, cfg: SemiConfig,
                 labelled: _LabelledBatches | None, weak_view: View | None) -> None:
        super().__init__()
        self.student = student
        self._teacher = (teacher,)  # a tuple: not a submodule, so not trained nor saved
        self.cfg, self.labelled, self.weak_view = cfg, labelled, weak_view

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        x = self.weak_view(views[0]) if self.weak_view is not None else views[0]
        with torch.no_grad():
            self.teacher.eval()
            teacher_logits = self.teacher(x)
        distill = soft_label_loss(self.student(x), teacher_logits, self.cfg.temperature)
        loss = self.cfg.unlabelled_weight * distill
        terms = {"distill": distill.detach()}
        return with_labelled_term(self.student, self.labelled, self.cfg.labelled_weight, loss, terms)


class FixMatch(Objective):
    """views: [unlabelled batch (B, C, H, W) float in [0, 1]], un-augmented; weak and strong views made here."""

    views = 1
    loss_label = "FixMatch Loss"

    def __init__(self, student: nn.Module, cfg: SemiConfig, labelled: _LabelledBatches | None,
                 weak_view: View | None, strong_view: View) -> None:
        super().__init__()
        self.student = student
        self.cfg, self.labelled, self.weak_view, self.strong_view = cfg, labelled, weak_view, strong_view

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        x = views[0]
        weak = self.weak_view(x) if self.weak_view is not None else x
        with torch.no_grad():
            probs = F.softmax(self.student(weak).float(), dim=-1)
            confidence, pseudo = probs.max(-1)
            mask = (confidence >= self.cfg.threshold).float()
        per_image = F.cross_entropy(self.student(self.strong_view(x)).float(), pseudo, reduction="none")
        unlabelled = (per_image * mask).mean()  # FixMatch: averaged over the whole unlabelled batch
        loss = self.cfg.unlabelled_weight * unlabelled
        terms = {"unlabelled": unlabelled.detach(), "mask_rate": mask.mean()}
        return with_labelled_term(self.student, self.labelled, self.cfg.labelled_weight, loss, terms)


def semi_objective(teacher: nn.Module, student: nn.Module, labelled_u8: torch.Tensor | None,
                   labelled_targets: torch.Tensor | None, cfg: SemiConfig, *, weak_view: View | None,
                   strong_view: View | None = None) -> Objective:
    """The stage's objective around ``student`` (trained) and ``teacher`` (frozen, distill only)."""
    cfg.validate()
    if teacher is student:
        raise ValueError("the student must be its own module (copy_student(teacher)), not the teacher")
    labelled = None
    if labelled_u8 is not None and cfg.labelled_weight > 0:
        labelled = _LabelledBatches(labelled_u8, labelled_targets, cfg.labelled_batch, weak_view)
    if cfg.kind == "distill":
        return Distillation(teacher, student, cfg, labelled, weak_view)
    if strong_view is None:
        raise ValueError("semi.kind=fixmatch needs a strong view function")
    return FixMatch(student, cfg, labelled, weak_view, strong_view)


def run_semi(teacher: nn.Module, student: nn.Module, unlabelled_u8: torch.Tensor,
             labelled_u8: torch.Tensor | None, labelled_targets: torch.Tensor | None, cfg: SemiConfig, *,
             weak_view: View | None, strong_view: View | None = None, **train_kw):
    """Train ``student`` (in place) on ``unlabelled_u8`` (uint8 (N, C, H, W) on the device) with the
    ``cfg.kind`` objective; labelled images/targets feed the cross-entropy term. ``train_kw`` goes to
    the engine's :func:`~mnist_ssl.engine.loop.train` (callbacks, resume, stop_requested, compile).
    Returns the engine's TrainState (``history`` holds the per-epoch records); the student is left
    in eval mode."""
    from mnist_ssl.engine.loop import train

    objective = semi_objective(teacher, student, labelled_u8, labelled_targets, cfg,
                               weak_view=weak_view, strong_view=strong_view)
    teacher_params = {id(p) for p in teacher.parameters()}
    if any(id(p) in teacher_params for p in student.parameters()):
        raise ValueError("the student shares parameters with the teacher; give it its own copy")
    state = train(objective, unlabelled_u8, None, cfg.optim(), phase="semi", view=None, **train_kw)
    student.eval()
    return state
