"""The ``semi`` config section (its own module, importing nothing of the objectives, because
``objectives.registry`` builds RunConfig from it; the stage itself is :mod:`mnist_ssl.evaluation.semi`)."""

from __future__ import annotations

from dataclasses import dataclass

from mnist_ssl.errors import ConfigError

# A strong view for FixMatch on digits (RandAugment's flips and colour operations do not
# apply): a larger affine and elastic distortion, a random erased rectangle and pixel
# noise, as AugmentConfig overrides; the weak view is the fine-tuning augmentation.
STRONG_AUGMENT: dict = {"enabled": True, "rotate": 20.0, "translate": 0.15, "scale_min": 0.8, "scale_max": 1.2,
                        "shear": 10.0, "elastic": 2.0, "erase": 0.5, "noise": 0.1}


@dataclass
class SemiConfig:
    """The ``semi`` config section: what runs after fine-tuning, on the unlabelled images."""

    enabled: bool = False
    kind: str = "distill"  # "distill" (SimCLRv2 soft labels) or "fixmatch" (thresholded pseudo-labels)
    student_init: str = "teacher"  # "teacher" (a copy of the fine-tuned classifier) or "pretrained"
    epochs: int = 10  # passes over the unlabelled images
    batch_size: int = 64  # unlabelled images per step
    labelled_batch: int = 32  # labelled images per step (at most all of them)
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0
    temperature: float = 1.0  # distill: of the teacher's and the student's softmax
    threshold: float = 0.95  # fixmatch: confidence a pseudo-label needs
    unlabelled_weight: float = 1.0  # weight of the distillation / pseudo-label term
    labelled_weight: float = 1.0  # weight of the cross-entropy on labelled images (0: off)

    def validate(self, where: str = "semi") -> None:
        if self.kind not in ("distill", "fixmatch"):
            raise ConfigError(f"{where}.kind={self.kind!r} is not one of distill, fixmatch")
        if self.student_init not in ("teacher", "pretrained"):
            raise ConfigError(f"{where}.student_init={self.student_init!r} is not one of teacher, pretrained")
        for name in ("epochs", "batch_size", "labelled_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be > 0")
        for name in ("weight_decay", "grad_clip", "unlabelled_weight", "labelled_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be >= 0")
        if self.unlabelled_weight + self.labelled_weight == 0:
            raise ConfigError(f"{where}: unlabelled_weight and labelled_weight are both 0")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"{where}.threshold={self.threshold} must be in [0, 1]")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"{where}.warmup_epochs={self.warmup_epochs} must be in [0, epochs]")

    def optim(self):
        """The stage's OptimConfig for the engine (AdamW, cosine after warm-up)."""
        from mnist_ssl.config import OptimConfig

        return OptimConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer="adamw",
                           weight_decay=self.weight_decay, schedule="cosine", warmup_epochs=self.warmup_epochs,
                           grad_clip=self.grad_clip)
