"""``mnist-ssl predict``: classify image files (photos, scans, drawings; PNG, JPEG, ... of any size).

Each file is brought to MNIST's form by :mod:`mnist_ssl.imageprep` (background
and lighting removed, the digit found as the main connected strokes, framed in
a 20-pixel box centred by mass in 28 x 28), then classified. Every file gets
its own result, in the order given:

* ``ok``: the class and its probability;
* ``uncertain``: no digit-like stroke was found, or the top probability is
  below ``min_confidence`` (the top class is still given for information);
* ``error``: the file could not be read (missing, not an image, corrupt, too
  many pixels); one line naming the file, and the other files go on.

docs/predict.md tells how the preparation works and how well it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from mnist_ssl.errors import ConfigError, DataError
from mnist_ssl.imageprep import DEFAULT_MAX_PIXELS, NoDigit, image_files, prepare_file, to_mnist

# Chosen on development digits (docs/predict.md): the highest value that keeps 99% of the
# correctly classified development photos confident.
DEFAULT_MIN_CONFIDENCE = 0.7
BATCH = 64  # files prepared before one forward pass: memory stays bounded for any number of files

__all__ = ["DEFAULT_MIN_CONFIDENCE", "Result", "load_images", "predict_files", "predict_paths", "to_mnist"]


@dataclass
class Result:
    """One file's outcome. ``status``: "ok", "uncertain" or "error"; ``label`` is a class number."""

    file: str
    status: str
    label: int | None = None
    probability: float | None = None
    probabilities: dict[int, float] = field(default_factory=dict)
    reason: str | None = None  # why uncertain, or the error
    prepared: str | None = None  # the 28 x 28 image written with save_prepared

    def to_dict(self) -> dict:
        out: dict = {"file": self.file, "status": self.status}
        if self.label is not None:
            out.update({"class": self.label, "probability": self.probability,
                        "probabilities": {str(k): v for k, v in self.probabilities.items()}})
        if self.reason is not None:
            out["error" if self.status == "error" else "reason"] = self.reason
        if self.prepared is not None:
            out["prepared"] = self.prepared
        return out

    def line(self) -> str:
        if self.status == "ok":
            return f"{self.file}: {self.label} ({100 * self.probability:.1f}%)"
        if self.status == "uncertain":
            return f"{self.file}: uncertain ({self.reason})"
        return f"{self.file}: {self.reason}"


def load_images(paths: list[str | Path], max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Files -> float32 (N, 1, 28, 28) in [0, 1], MNIST-style; the first bad file raises DataError."""
    if not paths:
        raise DataError("no image files given")
    return torch.from_numpy(np.stack([prepare_file(p, max_pixels) for p in paths])).unsqueeze(1)


def _reason(e: Exception, path: Path) -> str:
    text = str(e)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


class _PreparedWriter:
    """Writes each prepared image as DIR/<file stem>.png (a -2, -3 ... suffix when two files share a stem)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"--save-prepared {self.folder}: exists and is not a folder")
        self.used: set[str] = set()

    def write(self, path: Path, image: np.ndarray) -> str:
        import io

        from PIL import Image

        from mnist_ssl.fileio import atomic_write_bytes

        name, k = f"{path.stem}.png", 1
        while name in self.used:
            k += 1
            name = f"{path.stem}-{k}.png"
        self.used.add(name)
        buf = io.BytesIO()
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buf, format="PNG")
        atomic_write_bytes(self.folder / name, buf.getvalue())
        return str(self.folder / name)


def check_min_confidence(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--min-confidence {value}: must be between 0 and 1 (a probability)")
    return float(value)


@torch.no_grad()
def predict_paths(checkpoint: str | Path, arguments: list[str | Path], *,
                  min_confidence: float = DEFAULT_MIN_CONFIDENCE, max_pixels: int = DEFAULT_MAX_PIXELS,
                  save_prepared: str | Path | None = None, threads: int = 1) -> Iterator[Result]:
    """One :class:`Result` per file, in order (a folder in ``arguments`` stands for its images).

    The checkpoint is loaded before any file is read: a bad checkpoint raises
    (:class:`~mnist_ssl.errors.CheckpointError`); a bad file is that file's
    ``error`` result.
    """
    from mnist_ssl.engine.checkpoint import load_classifier

    check_min_confidence(min_confidence)
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels {max_pixels}: must be at least 1")
    files = image_files(arguments)
    if not files:
        raise DataError("no image files given")
    if threads > 0:
        torch.set_num_threads(threads)
    model, meta = load_classifier(checkpoint)
    classes = [int(c) for c in (meta.get("classes") or range(model.cfg.num_classes))]
    writer = _PreparedWriter(save_prepared) if save_prepared is not None else None

    pending: list[Result | tuple[Path, np.ndarray]] = []

    def flush() -> Iterator[Result]:
        images = [item[1] for item in pending if isinstance(item, tuple)]
        probs = iter(torch.softmax(model(torch.from_numpy(np.stack(images)).unsqueeze(1)).float(), dim=-1)
                     if images else [])
        for item in pending:
            if isinstance(item, Result):
                yield item
                continue
            path, image = item
            p = next(probs)
            i = int(p.argmax())
            top = float(p[i])
            result = Result(str(path), "ok", classes[i], round(top, 6),
                            {c: round(float(q), 6) for c, q in zip(classes, p)})
            if top < min_confidence:
                result.status = "uncertain"
                result.reason = (f"top class {classes[i]} at {100 * top:.1f}%, below --min-confidence "
                                 f"{100 * min_confidence:g}%")
            if writer is not None:
                result.prepared = writer.write(path, image)
            yield result
        pending.clear()

    for path in files:
        try:
            if path.is_dir():
                raise DataError(f"{path}: a folder with no image files")
            pending.append((path, prepare_file(path, max_pixels)))
        except NoDigit as e:
            pending.append(Result(str(path), "uncertain", reason=_reason(e, path)))
        except DataError as e:
            pending.append(Result(str(path), "error", reason=str(e)))
        if sum(isinstance(item, tuple) for item in pending) >= BATCH:
            yield from flush()
    yield from flush()


def predict_files(checkpoint: str | Path, paths: list[str | Path], threads: int = 1, **options) -> list[Result]:
    """:func:`predict_paths` as a list."""
    return list(predict_paths(checkpoint, paths, threads=threads, **options))


# ----- the command ----------------------------------------------------------------
def add_parser(sub) -> None:
    """Register ``mnist-ssl predict`` on the CLI's subparsers (the parser and the command live here)."""
    p = sub.add_parser(
        "predict", help="classify image files or folders (photos, scans; PNG, JPEG, any size)",
        description="Each image is made MNIST-like (paper and lighting removed, the digit found as the main "
                    "connected strokes, a 20x20 box centred by centre of mass in 28x28), then classified. "
                    "One line per file: 'FILE: CLASS (P%)', 'FILE: uncertain (why)', or an error line on "
                    "stderr; exit 2 at the end if any file could not be read.")
    p.add_argument("--checkpoint", required=True, help="a finetuned.safetensors")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders (their images)")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line (JSON Lines) on stdout")
    p.add_argument("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE, metavar="P",
                   help="below this top probability a file is 'uncertain' (default %(default)s, chosen on "
                        "development digits, docs/predict.md; 0 = always give the top class)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images of more pixels, from the header, before decoding "
                        "(default %(default)s; decoding needs up to about 8 bytes per pixel, docs/predict.md)")
    p.add_argument("--save-prepared", default=None, metavar="DIR",
                   help="write the 28x28 image the model saw for each file as DIR/<name>.png")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=command)


def command(args) -> int:
    import json
    import sys

    failed = total = 0
    for result in predict_paths(args.checkpoint, args.images, min_confidence=args.min_confidence,
                                max_pixels=args.max_pixels, save_prepared=args.save_prepared,
                                threads=args.threads or 1):
        total += 1
        if result.status == "error":
            failed += 1
            print(f"mnist-ssl: error: {result.reason}", file=sys.stderr, flush=True)
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        elif result.status != "error":
            print(result.line(), flush=True)
    if failed and total > 1:
        print(f"mnist-ssl: error: {failed} of {total} files could not be read", file=sys.stderr)
    return 2 if failed else 0
