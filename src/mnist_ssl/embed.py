"""``mnist-ssl embed``: a data set's frozen CLS features and labels, for the user's own probe or plots.

The .npz it writes holds ``x`` float32 (N, D) features, ``y`` int64 (N,) labels
(positions in ``classes``; -1 for an unlabelled folder), ``split`` (N,) the
split each image came from ("train", "val", "test", or "all" for a source that
comes unsplit), and ``classes`` (K,) the class names. Images are in each
split's file order, splits in the order train, val, test.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from mnist_ssl.errors import DataError

CHUNK = 4096  # images converted to float at a time: a 60,000-image set stays small in memory


@torch.no_grad()
def embed(checkpoint: str | Path, data: str, out: str | Path, dataset: str = "mnist",
          batch_size: int = 256) -> dict:
    """Write the features of every image of ``data`` through ``checkpoint``'s encoder to ``out``.

    Returns a summary: {"out", "n", "dim", "splits": {name: count}}.
    """
    from mnist_ssl.api import features, load_encoder
    from mnist_ssl.data.sources import open_source
    from mnist_ssl.fileio import atomic_write_bytes

    encoder = load_encoder(checkpoint)
    source = open_source(data, dataset, unlabelled=True)
    splits, classes = source.splits, source.classes
    cfg = encoder.cfg
    want = (cfg.in_chans, cfg.image_size, cfg.image_size)
    if source.shape != want:
        raise DataError(f"{data} holds images of shape {source.shape} (C, H, W) but the encoder in "
                        f"{checkpoint} takes {want}")
    xs, ys, names = [], [], []
    for name, split in splits.items():
        for i in range(0, len(split), CHUNK):
            xs.append(features(encoder, split.images[i:i + CHUNK], batch_size=batch_size).numpy())
        ys.append(split.labels.numpy())
        names += [name] * len(split)
    x = np.concatenate(xs).astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=np.concatenate(ys).astype(np.int64), split=np.array(names),
                        classes=np.array(classes, dtype=str))
    atomic_write_bytes(out, buf.getvalue())
    return {"out": str(out), "n": len(x), "dim": x.shape[1], "splits": {k: len(v) for k, v in splits.items()}}

