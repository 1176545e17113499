"""The benchmark scripts are run by hand, never timed here; this only checks that their
shared code still builds and steps every objective through the package's current API
(a renamed argument once broke bench_throughput.py without any test noticing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(BENCH))
    try:
        import _common
        yield _common
    finally:
        sys.path.remove(str(BENCH))


def test_every_benchmarked_objective_builds_and_takes_a_step(common):
    for name in common.OBJECTIVES:
        stepper, make_views, cfg = common.ours(name, "default", 4, torch.device("cpu"))
        before = [p.detach().clone() for p in stepper.module.parameters()]
        stepper.step()
        views = make_views()
        assert len(views) == stepper.module.views and views[0].shape[0] == 4
        changed = any(not torch.equal(b, p) for b, p in zip(before, stepper.module.parameters()))
        assert changed, f"{name}: one train step left every parameter unchanged"
        assert common.count_flops(stepper) > 0
