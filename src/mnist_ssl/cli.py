"""The command line: parse, dispatch to the command's module (mnist_ssl.commands), map errors to exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback),
130 interrupted (Ctrl-C / SIGTERM; what finished is kept).
"""

from __future__ import annotations

import argparse
import errno
import gc
import sys
from pathlib import Path

from mnist_ssl import __version__
from mnist_ssl.commands import COMMANDS
from mnist_ssl.commands.common import build_config, parse_count  # noqa: F401 - the library's entry points
from mnist_ssl.engine.callbacks import TrainingInterrupted
from mnist_ssl.errors import MnistSSLError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2), like every other bad input; sub-commands inherit it."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnist-ssl", description="Self-supervised Vision Transformers on MNIST-family images.")
    parser.add_argument("--version", action="version", version=f"mnist-ssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    created = _missing_dirs(getattr(args, "out", None))
    code = EXIT_BAD_INPUT
    try:
        code = _run(args)
        return code
    finally:
        if code != 0:
            _remove_if_empty(created)


def console_main() -> int:
    """The ``mnist-ssl`` program: :func:`main`, then an exit without the interpreter's last
    collections. Python's shutdown runs the cyclic garbage collector over every object that the
    imported libraries made, which took 0.5-1 s after torch and scikit-learn had been imported
    (docs/benchmarks.md, "Process start and exit"); frozen objects are skipped, and every file is
    closed by then (atexit handlers still run)."""
    code = main()
    gc.freeze()
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except TrainingInterrupted as e:
        print(f"mnist-ssl: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MnistSSLError as e:
        print(f"mnist-ssl: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("mnist-ssl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        # A write outside the atomic writers (the log's append, a figure) on a full or read-only disk.
        from mnist_ssl.fileio import write_failed

        print(f"mnist-ssl: error: {write_failed(e.filename or 'a file', e)}", file=sys.stderr)
        return EXIT_BAD_INPUT


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _missing_dirs(path: str | None) -> list[Path]:
    """The folders of ``path`` that do not exist yet, deepest first."""
    if not path:
        return []
    missing = []
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def _remove_if_empty(dirs: list[Path]) -> None:
    """Remove folders this command created and left empty (a failed command leaves nothing behind)."""
    for d in dirs:
        # Folders made inside it before the failure (a job's empty runs/<method>/seed<k>/), deepest first.
        inner = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) \
            if d.is_dir() else []
        try:
            for sub in inner:
                sub.rmdir()
            d.rmdir()
        except OSError:  # a file inside: something was written, keep it all
            return
