import os

import pytest
import torch

# One thread: the same numbers run after run (and on any CPU at the same kernel level),
# and no OpenMP stalls on a busy CI box.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
