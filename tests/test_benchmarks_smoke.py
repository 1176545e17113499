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


def _package_imports(path: Path):
    """Every ``from mnist_ssl... import name`` in a file, function bodies included (the
    benchmarks import lazily, so importing the script itself would not notice a moved name)."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_ssl"):
            for alias in node.names:
                yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mnist_ssl"):
                    yield alias.name, None


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_what_a_benchmark_imports_from_the_package_exists(script):
    import importlib
    import importlib.util

    for module, name in _package_imports(BENCH / script):
        mod = importlib.import_module(module)
        assert name is None or hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}"), \
            f"{script}: {module} has no {name}"


def test_the_profile_reads_stages_that_exist():
    """bench_batched.py profile attributes time by (file, function): a renamed stage would read 0 s."""
    import ast

    sys.path.insert(0, str(BENCH))
    try:
        import bench_batched
    finally:
        sys.path.remove(str(BENCH))
    src = Path(__file__).resolve().parent.parent / "src"
    for suffix, function in {**bench_batched.STAGES, **bench_batched.FINETUNE_PARTS}.values():
        if not suffix.startswith("mnist_ssl/"):
            continue  # torch's own functions
        tree = ast.parse((src / suffix).read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert function in defined, f"{suffix} defines no {function}"
