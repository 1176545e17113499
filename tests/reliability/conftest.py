"""Fixtures shared by the reliability tests (see helpers.py for the tiny job)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_ssl.cli import main

from .helpers import JOB, SignalledJobs

_signalled: SignalledJobs | None = None


def pytest_collection_finish(session):
    """Start the signalled subprocess jobs as soon as the tests that need them are selected,
    so that they run while the other tests do."""
    global _signalled
    if _signalled is None and any("signalled_jobs" in getattr(item, "fixturenames", ())
                                  for item in session.items):
        _signalled = SignalledJobs()


@pytest.fixture(scope="session")
def signalled_jobs() -> dict:
    global _signalled
    if _signalled is None:
        _signalled = SignalledJobs()
    try:
        yield _signalled.results()
    finally:
        _signalled.close()


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Path:
    """The tiny job run once, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["reproduce", "--out", str(out), *JOB]) == 0
    return out


def pytest_sessionfinish(session, exitstatus):
    """Stop the jobs and remove their folder even when their tests never ran (-x, Ctrl-C)."""
    if _signalled is not None:
        _signalled.close()
