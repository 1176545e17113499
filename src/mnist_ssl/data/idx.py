"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the values, big-endian, row-major. The
MNIST files use dtype code ``0x08`` (uint8): images are ``0x00000803``
(N, 28, 28) and labels ``0x00000801`` (N,).

Files may be gzip-compressed; the ``.gz`` suffix says which, and a file whose
name and content disagree is refused rather than guessed at, because a
mislabelled file usually means a broken download.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from mnist_ssl.errors import DataError

# IDX dtype codes -> numpy dtypes (big-endian on disk).
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[str, int] = {dt.newbyteorder("=").str[1:]: code for code, dt in _DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def _is_gz(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def _read_bytes(path: Path) -> bytes:
    """The file's IDX bytes, decompressed when it is named ``.gz``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if not data:
        raise DataError(f"{path}: empty file (0 bytes); delete it and download it again")
    if _is_gz(path):
        if not data.startswith(_GZIP_MAGIC):
            raise DataError(
                f"{path}: named .gz but is not gzip-compressed "
                f"(starts with bytes {data[:4].hex()}); delete it and download it again"
            )
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            # A cut-off download ends the deflate stream early: EOFError.
            raise DataError(f"{path}: corrupt or truncated gzip data: {e}") from None
        if not data:
            raise DataError(f"{path}: empty file (gzip holds 0 bytes)")
    elif data.startswith(_GZIP_MAGIC):
        raise DataError(
            f"{path}: is gzip-compressed but not named .gz; rename it to {path.name}.gz"
        )
    return data


def _dims_text(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw, or gzip when named ``.gz``) into a numpy array.

    Returns a writable array of the declared shape in native byte order, for
    example uint8 (N, 28, 28) for an images file and uint8 (N,) for a labels
    file. Raises :class:`DataError` naming the file for an empty file, a
    ``.gz`` file that is not gzip, an unknown magic number, or a byte count
    that disagrees with the declared sizes (truncated, or trailing bytes).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header (4-byte magic number)")
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file: magic number 0x{magic:08x} "
            f"(expected 0x{IMAGES_MAGIC:08x} for images or 0x{LABELS_MAGIC:08x} for labels)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated IDX header: magic 0x{magic:08x} declares {ndim} sizes "
            f"({header} header bytes), file has {len(data)} bytes"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise DataError(
            f"{path}: truncated IDX file: header declares {_dims_text(dims)} = {expected} bytes, "
            f"found {found}"
        )
    if found > expected:
        raise DataError(
            f"{path}: {found - expected} unexpected bytes after the data: header declares "
            f"{_dims_text(dims)} = {expected} bytes, found {found} (wrong sizes or trailing garbage)"
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    # astype copies: the result is writable (torch.from_numpy wants that) and native-endian.
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` (any shape with ndim >= 1) as an IDX file; gzip when ``path`` ends in ``.gz``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64. The file is
    written to a temporary name in the same folder and renamed into place, so a
    reader never sees half a file. Returns the path written.
    """
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in _CODES:
        raise DataError(
            f"{path}: cannot write dtype {array.dtype} as IDX "
            "(supported: uint8, int8, int16, int32, float32, float64)"
        )
    if array.ndim < 1 or array.ndim > 255:
        raise DataError(f"{path}: cannot write a {array.ndim}-D array as IDX (need 1 to 255 dims)")
    if any(d >= 2**32 for d in array.shape):
        raise DataError(f"{path}: dimension {max(array.shape)} does not fit an IDX header")
    code = _CODES[key]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    if _is_gz(path):
        # mtime=0: the same array always gives the same bytes (stable checksums).
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
