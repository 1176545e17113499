"""Downloading the official MNIST / Fashion-MNIST files, checked against their MD5s.

Files go to ``root/<Name>/raw`` (torchvision's layout), where
:func:`mnist_ssl.data.sources.find_idx_files` looks. Each file is streamed into
a temporary file in that folder, its MD5 checked, and only then renamed into
place: an interrupted or tampered download never leaves a file under the
official name, and a file that fails its checksum is deleted. Only ``urllib``
is used, so no extra dependency is needed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from mnist_ssl.data.sources import DATASET_DIRS
from mnist_ssl.errors import ConfigError, DownloadError

_CHUNK = 1 << 16

# progress(file name, bytes received so far, total bytes or None when the server does not say)
Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class RemoteDataset:
    """Where a dataset's four official files live and what they must hash to."""

    folder: str  # sub-folder under root, as torchvision names it; files go in root/<folder>/raw
    files: Mapping[str, str]  # file name (.gz) -> MD5 of the compressed file
    mirrors: tuple[str, ...]  # base URLs, tried in order


# MD5s of the .gz files as published (the same as torchvision's datasets/mnist.py).
DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        folder=DATASET_DIRS["mnist"],
        files={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": RemoteDataset(
        folder=DATASET_DIRS["fashion-mnist"],
        files={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            # The project's own repository holds the same files.
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
    ),
}


def _remote(dataset: str) -> RemoteDataset:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[dataset]


def dataset_folder(dataset: str, root: str | os.PathLike) -> Path:
    """The folder :func:`download` writes ``dataset`` to: ``root/<Name>/raw``."""
    return Path(root) / _remote(dataset).folder / "raw"


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, folder: Path, name: str, md5: str, timeout: float, progress: Progress | None) -> Path:
    """Stream ``url`` into a temporary file in ``folder``; return it if its MD5 is ``md5``.

    Raises OSError (urllib's errors included), HTTPException or ValueError; the
    temporary file is removed whatever happens.
    """
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": "mnist-ssl"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(name, done, total)
        got = digest.hexdigest()
        if got != md5:
            raise ValueError(f"MD5 {got} does not match the expected {md5}; file rejected")
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"{e.reason}"
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


def download(
    dataset: str,
    root: str | os.PathLike,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30,
    progress: Progress | None = None,
    files: Mapping[str, str] | None = None,
) -> list[Path]:
    """Download ``dataset``'s four files into ``root/<Name>/raw``; return their paths.

    mirrors: base URLs tried in order for each file (default: the dataset's
        official mirrors); a file's URL is ``mirror + name``.
    timeout: seconds for connecting and for each read.
    progress: called as ``progress(name, bytes_done, bytes_total_or_None)``
        after each chunk.
    files: name -> MD5 to fetch instead of the official list (for private
        mirrors and tests).

    A file already present with the right MD5 is not fetched again. A file
    whose MD5 does not match is deleted and the next mirror tried. Raises
    :class:`DownloadError` naming the file and each mirror's failure when no
    mirror delivers a good copy.
    """
    remote = _remote(dataset)
    files = dict(remote.files if files is None else files)
    mirrors = list(remote.mirrors if mirrors is None else mirrors)
    if not mirrors:
        raise ConfigError("no mirror to download from: give at least one URL")
    folder = dataset_folder(dataset, root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create {folder}: {e.strerror or e}") from None
    done: list[Path] = []
    for name, md5 in files.items():
        dest = folder / name
        stale = None
        if dest.is_file():
            got = md5sum(dest)
            if got == md5:
                done.append(dest)
                continue
            stale = got
        failures = []
        for mirror in mirrors:
            url = mirror if mirror.endswith("/") else mirror + "/"
            url += name
            try:
                tmp = _fetch(url, folder, name, md5, timeout, progress)
            except (OSError, ValueError, http.client.HTTPException) as e:
                # urllib's errors are OSErrors; a connection cut mid-body is an HTTPException.
                failures.append(f"{url}: {_reason(e)}")
                continue
            os.replace(tmp, dest)  # atomic: readers see the old file or the whole new one
            done.append(dest)
            break
        else:
            message = f"could not download {name} into {folder}: " + "; ".join(failures)
            if stale is not None:
                # A file with the wrong checksum must not be read as the dataset.
                dest.unlink(missing_ok=True)
                message += f" (the copy already there had MD5 {stale}, expected {md5}, and was deleted)"
            raise DownloadError(message)
    return done


def verify(dataset: str, root: str | os.PathLike, files: Mapping[str, str] | None = None) -> list[Path]:
    """Check that ``root/<Name>/raw`` holds ``dataset``'s four files with the official MD5s.

    Returns their paths; raises :class:`DownloadError` listing every file that
    is missing or differs. (Debian's /usr/share/datasets/fashion-mnist files
    are recompressed, so their .gz MD5s differ from the official ones: see
    docs/data.md.)
    """
    remote = _remote(dataset)
    files = dict(remote.files if files is None else files)
    folder = dataset_folder(dataset, root)
    problems, ok = [], []
    for name, md5 in files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        got = md5sum(path)
        if got != md5:
            problems.append(f"{name} has MD5 {got}, expected {md5}")
        else:
            ok.append(path)
    if problems:
        raise DownloadError(f"{folder}: " + "; ".join(problems))
    return ok
