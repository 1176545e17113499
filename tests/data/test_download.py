"""download() and verify() against an HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from pathlib import Path

import pytest

from mnist_ssl.data import DATASETS, download, find_idx_files, load_idx_split, verify
from mnist_ssl.errors import DownloadError

from . import balanced_labels, write_split


class _Server:
    """Serves ``routes[path] = (status, body)``; records every path requested."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.hits.append(self.path)
                status, body = server.routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def mirror(self, name: str, files: dict[str, bytes], status: int = 200) -> str:
        """Serve ``files`` under /name/ with ``status``; return the mirror's base URL."""
        for fname, body in files.items():
            self.routes[f"/{name}/{fname}"] = (status, body)
        return f"{self.url}/{name}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> dict[str, bytes]:
    """The four official file names holding tiny, valid, gzip-compressed IDX data."""
    folder = tmp_path_factory.mktemp("payload")
    write_split(folder, "train", balanced_labels(3))
    write_split(folder, "t10k", balanced_labels(2))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(body).hexdigest() for name, body in files.items()}


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_dataset_table():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    names = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    for remote in DATASETS.values():
        assert set(remote.files) == names
        assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for md5 in remote.files.values())
        assert remote.mirrors and all(m.endswith("/") for m in remote.mirrors)
    assert DATASETS["mnist"].files["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert DATASETS["fashion-mnist"].files["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"


def test_download_good(server, payload, tmp_path):
    mirror = server.mirror("m1", payload)
    seen = []
    paths = download("mnist", tmp_path, mirrors=[mirror], files=_md5s(payload),
                     progress=lambda name, done, total: seen.append((name, done, total)))
    raw = tmp_path / "MNIST" / "raw"
    assert sorted(p.name for p in paths) == sorted(payload)
    assert _listing(raw) == sorted(payload)  # nothing else: no temp files
    for p in paths:
        assert p.read_bytes() == payload[p.name]
    assert {name for name, _, _ in seen} == set(payload)
    assert all(total == len(payload[name]) for name, _, total in seen)
    # the loader finds what download wrote
    assert find_idx_files(tmp_path, "mnist", "test")[0] == raw / "t10k-images-idx3-ubyte.gz"
    assert len(load_idx_split(tmp_path, "mnist", "train")) == 30
    assert verify("mnist", tmp_path, files=_md5s(payload)) == [raw / name for name in _md5s(payload)]


def test_mirror_without_trailing_slash(server, payload, tmp_path):
    mirror = server.mirror("m1", payload).rstrip("/")
    download("fashion-mnist", tmp_path, mirrors=[mirror], files=_md5s(payload))
    assert _listing(tmp_path / "FashionMNIST" / "raw") == sorted(payload)


def test_tampered_file_rejected_and_next_mirror_used(server, payload, tmp_path):
    tampered = {name: body[:-1] + bytes([body[-1] ^ 1]) for name, body in payload.items()}
    bad = server.mirror("bad", tampered)
    good = server.mirror("good", payload)
    paths = download("mnist", tmp_path, mirrors=[bad, good], files=_md5s(payload))
    assert all(p.read_bytes() == payload[p.name] for p in paths)
    assert _listing(tmp_path / "MNIST" / "raw") == sorted(payload)


def test_tampered_file_never_left_behind(server, payload, tmp_path):
    name = "t10k-images-idx3-ubyte.gz"
    bad = server.mirror("bad", {name: payload[name] + b"extra"})
    with pytest.raises(DownloadError) as e:
        download("mnist", tmp_path, mirrors=[bad], files={name: hashlib.md5(payload[name]).hexdigest()})
    msg = str(e.value)
    assert msg.startswith(f"could not download {name} into {tmp_path / 'MNIST' / 'raw'}: ")
    assert f"{bad}{name}: MD5 " in msg and "file rejected" in msg
    assert _listing(tmp_path / "MNIST" / "raw") == []  # no partial, temp or rejected file


@pytest.mark.parametrize("status", [404, 500])
def test_server_error_falls_back(server, payload, tmp_path, status):
    first = server.mirror("first", payload, status=status)
    second = server.mirror("second", payload)
    paths = download("mnist", tmp_path, mirrors=[first, second], files=_md5s(payload))
    assert len(paths) == 4 and _listing(tmp_path / "MNIST" / "raw") == sorted(payload)
    assert sum(h.startswith("/first/") for h in server.hits) == 4


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_mirrors_fail(server, payload, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    m404 = f"{server.url}/nothing/"
    m500 = server.mirror("broken", {name: b"oops"}, status=500)
    refused = f"http://127.0.0.1:{_closed_port()}/"
    with pytest.raises(DownloadError) as e:
        download("mnist", tmp_path, mirrors=[m404, m500, refused], files={name: _md5s(payload)[name]},
                 timeout=60)
    msg = str(e.value)
    assert f"could not download {name}" in msg
    assert f"{m404}{name}: HTTP 404" in msg
    assert f"{m500}{name}: HTTP 500" in msg
    assert f"{refused}{name}: " in msg
    assert _listing(tmp_path / "MNIST" / "raw") == []


def test_present_and_valid_files_are_skipped(server, payload, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, body in payload.items():
        (raw / name).write_bytes(body)
    mirror = server.mirror("m1", payload)
    paths = download("mnist", tmp_path, mirrors=[mirror], files=_md5s(payload))
    assert len(paths) == 4
    assert server.hits == []  # the server was never contacted


def test_present_but_wrong_file_is_replaced(server, payload, tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / name).write_bytes(b"stale")
    mirror = server.mirror("m1", payload)
    download("mnist", tmp_path, mirrors=[mirror], files={name: _md5s(payload)[name]})
    assert (raw / name).read_bytes() == payload[name]


def test_present_but_wrong_file_removed_when_download_fails(server, payload, tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / name).write_bytes(b"stale")
    with pytest.raises(DownloadError, match="already there had MD5 .* was deleted"):
        download("mnist", tmp_path, mirrors=[f"{server.url}/none/"], files={name: _md5s(payload)[name]})
    assert _listing(raw) == []


def test_verify_reports_every_problem(payload, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"wrong")
    with pytest.raises(DownloadError) as e:
        verify("mnist", tmp_path, files=_md5s(payload))
    msg = str(e.value)
    assert msg.startswith(f"{raw}: ")
    assert "train-images-idx3-ubyte.gz has MD5 " in msg
    assert "t10k-labels-idx1-ubyte.gz is missing" in msg
    # the official list by default
    with pytest.raises(DownloadError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        verify("mnist", tmp_path)
