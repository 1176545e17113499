"""Photo-like test images made from MNIST digits with scripts/render_photos.py's renderer, and crafted files."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _load_renderer():
    spec = importlib.util.spec_from_file_location("render_photos", ROOT / "scripts" / "render_photos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


renderer = _load_renderer()


def condition(name: str, **changes) -> dict:
    """One of the renderer's conditions, with some fields changed (smaller frames keep tests fast)."""
    return {**renderer.CONDITIONS[name], **changes}


def write_photo(path_stem: Path, digit: np.ndarray, cond: dict, seed: int = 0) -> Path:
    data, suffix = renderer.render_photo(digit, cond, np.random.default_rng(seed))
    path = path_stem.with_suffix(suffix)
    path.write_bytes(data)
    return path


def write_junk(path_stem: Path, name: str, seed: int = 0, **changes) -> Path:
    data, suffix = renderer.render_junk({**renderer.JUNK[name], **changes}, np.random.default_rng(seed))
    path = path_stem.with_suffix(suffix)
    path.write_bytes(data)
    return path


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height 8-bit grey pixels, with almost no pixel data:
    what a decompression bomb looks like before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def shift_correlation(a: np.ndarray, b: np.ndarray, reach: int = 1) -> float:
    """The best correlation of two 28 x 28 images over shifts of up to ``reach`` pixels."""
    best = -1.0
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            s = np.roll(np.roll(b, dy, 0), dx, 1)
            best = max(best, float(np.corrcoef(a.ravel(), s.ravel())[0, 1]))
    return best
