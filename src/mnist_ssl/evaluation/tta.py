"""Test-time augmentation (TTA): average the classifier's probabilities over augmented copies.

The fine-tuned ViTs were trained to be invariant to the fine-tuning augmentation
(small rotations, shifts and scalings); asking them about the test image and a
few such copies of it, and averaging the softmax outputs, removes part of the
prediction noise of a model trained on 300 images. Measured on the main job
(docs/results.md): +0.5 to +0.9 points for every method, the from-scratch ViT
included. It is reported beside the plain accuracy (the source document's
protocol), never instead of it.

The copies come from a generator seeded by the caller, so a run's TTA accuracy
is reproducible and independent of the global random state.
"""

from __future__ import annotations

import dataclasses

import torch

from mnist_ssl.data.augment import Augmenter

__all__ = ["tta_probabilities"]


@torch.no_grad()
def tta_probabilities(model: torch.nn.Module, images_u8: torch.Tensor, augment_cfg, views: int, seed: int,
                      batch_size: int = 512) -> torch.Tensor:
    """Mean softmax of ``model`` over each image and ``views`` augmented copies of it.

    images_u8: uint8 (N, C, H, W); augment_cfg: an AugmentConfig (its ``enabled``
    flag is ignored here; the experiment stages skip TTA for a classifier
    fine-tuned without augmentation); views: copies per image (0 = the plain prediction);
    seed: seeds the copies. Returns (N, num_classes) float probabilities on the CPU.
    """
    if views < 0:
        raise ValueError(f"views={views} must be >= 0")
    model.eval()
    augment = Augmenter(dataclasses.replace(augment_cfg, enabled=True),
                        generator=torch.Generator().manual_seed(seed))
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i:i + batch_size].float().div_(255.0)
        probs = model(x).float().softmax(-1)
        for _ in range(views):
            probs += model(augment(x)).float().softmax(-1)
        out.append((probs / (views + 1)).cpu())
    return torch.cat(out)
