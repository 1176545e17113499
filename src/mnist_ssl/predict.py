"""``mnist-ssl predict``: classify image files (PNG, JPEG, ... of any size) with a fine-tuned checkpoint.

A photo or drawing of a digit is brought to MNIST's form before the model sees it
(LeCun et al.'s preparation of MNIST):

1. greyscale (transparent pixels become the background);
2. inverted when the digit is dark on a light background (the border is light),
   so that the digit is light on black, as in MNIST;
3. contrast stretched to [0, 1] and faint background (below 10% of the
   stroke's brightness) set to black;
4. cropped to the digit's bounding box and resized, keeping its aspect ratio,
   so that its longer side is 20 pixels;
5. placed in a 28 x 28 black image with its centre of mass at pixel (14, 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_ssl.errors import DataError

BOX = 20  # the digit's longer side, in pixels (MNIST)
SIZE = 28
CENTRE = 14.0  # row and column of the centre of mass, 0-based
BACKGROUND = 0.1  # fraction of the stroke's brightness below which a pixel is background


@dataclass
class Prediction:
    file: str
    label: int  # the class number (digit), not a position
    probability: float
    probabilities: dict[int, float]

    def to_dict(self) -> dict:
        return {"file": self.file, "class": self.label, "probability": self.probability,
                "probabilities": {str(k): v for k, v in self.probabilities.items()}}


def read_image(path: str | Path) -> np.ndarray:
    """An image file -> float32 (H, W) greyscale in [0, 1]; transparent pixels become the background.

    Raises :class:`DataError` for a missing file or one that is not an image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
                grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                alpha = rgba[..., 3]
                # A transparent pixel takes the colour of the opaque background; with
                # nothing opaque to tell, it is white (a digit drawn on nothing).
                opaque = alpha > 0.5
                back = float(np.median(_border(grey)[_border(opaque)])) if _border(opaque).any() else 1.0
                return (grey * alpha + back * (1 - alpha)).astype(np.float32)
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: not an image that can be read ({type(e).__name__}: {e})") from None


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def to_mnist(grey: np.ndarray, where: str = "image") -> np.ndarray:
    """Greyscale (H, W) in [0, 1] -> float32 (28, 28) in [0, 1], a light digit centred on black.

    Steps 2-5 of the module's docstring. Raises :class:`DataError` when the
    image is blank (no digit to find).
    """
    from PIL import Image

    x = np.asarray(grey, dtype=np.float32)
    if x.ndim != 2 or min(x.shape) < 1:
        raise DataError(f"{where}: expected a 2-D greyscale image, got shape {x.shape}")
    if np.median(_border(x)) > 0.5:  # light background: a dark digit
        x = 1.0 - x
    lo, hi = float(np.percentile(x, 1)), float(x.max())
    if hi - lo < 1e-3:
        raise DataError(f"{where}: the image is blank (no digit found)")
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    x[x < BACKGROUND] = 0.0
    rows, cols = np.nonzero(x)
    x = x[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = x.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(x).resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0.0, 1.0)
    total = small.sum()
    if total <= 0:
        raise DataError(f"{where}: the image is blank (no digit found)")
    ys, xs = np.mgrid[0:nh, 0:nw]
    cy, cx = float((ys * small).sum() / total), float((xs * small).sum() / total)
    # Top-left corner that puts the centre of mass at pixel (14, 14), where MNIST's
    # digits have it (mean over the embedded 5,000: 13.99, 14.00), inside the frame.
    top = int(np.clip(round(CENTRE - cy), 0, SIZE - nh))
    left = int(np.clip(round(CENTRE - cx), 0, SIZE - nw))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top:top + nh, left:left + nw] = small
    return out


def load_images(paths: list[str | Path]) -> torch.Tensor:
    """Files -> float32 (N, 1, 28, 28) in [0, 1], MNIST-style; the first bad file raises DataError."""
    if not paths:
        raise DataError("no image files given")
    return torch.from_numpy(np.stack([to_mnist(read_image(p), str(p)) for p in paths])).unsqueeze(1)


@torch.no_grad()
def predict_files(checkpoint: str | Path, paths: list[str | Path], threads: int = 1) -> list[Prediction]:
    """Classify each file with the fine-tuned classifier in ``checkpoint`` (classes from its sidecar)."""
    from mnist_ssl.engine.checkpoint import load_classifier

    if threads > 0:
        torch.set_num_threads(threads)
    model, meta = load_classifier(checkpoint)
    classes = list(meta.get("classes") or range(model.cfg.num_classes))
    images = load_images(paths)
    probs = torch.softmax(model(images).float(), dim=-1)
    out = []
    for path, p in zip(paths, probs):
        i = int(p.argmax())
        out.append(Prediction(str(path), int(classes[i]), float(p[i]),
                              {int(c): round(float(q), 6) for c, q in zip(classes, p)}))
    return out


# ----- the command ----------------------------------------------------------------
def add_parser(sub) -> None:
    """Register ``mnist-ssl predict`` on the CLI's subparsers (the parser and the command live here)."""
    p = sub.add_parser("predict", help="classify image files (PNG, JPEG, any size) with a fine-tuned checkpoint",
                       description="Each image is made MNIST-like (greyscale, a light digit on black, "
                                   "20x20 box centred by centre of mass in 28x28), then classified.")
    p.add_argument("--checkpoint", required=True, help="a finetuned.safetensors")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=command)


def command(args) -> int:
    import json

    preds = predict_files(args.checkpoint, args.images, threads=args.threads or 1)
    if args.json:
        print(json.dumps([p.to_dict() for p in preds]))
    else:
        for p in preds:
            print(f"{p.file}: {p.label} ({100 * p.probability:.1f}%)")
    return 0
