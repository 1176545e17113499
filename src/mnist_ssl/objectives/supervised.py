"""Cross-entropy classification: fine-tuning for every method, and the from-scratch baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mnist_ssl.models.vit import ViTClassifier
from mnist_ssl.objectives.base import Objective, ObjectiveOutput


class Supervised(Objective):
    """views: [images]; labels: class indices (B,) in 0..K-1. Trains the whole network."""

    views = 1
    loss_label = "Train Loss"

    def __init__(self, classifier: ViTClassifier, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.classifier = classifier
        self.label_smoothing = label_smoothing

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        if labels is None:
            raise ValueError("the supervised objective needs labels")
        logits = self.classifier(views[0])
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        correct = (logits.detach().argmax(-1) == labels).float().mean()
        return ObjectiveOutput(loss, {"ce": loss.detach(), "train_acc": correct})
