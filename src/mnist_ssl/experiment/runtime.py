"""The process a run executes in: device, seeds, torch threads, deterministic kernels."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from mnist_ssl.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; an unavailable explicit device is refused."""
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if name == "mps" and not (mps and mps.is_available()):
        raise ConfigError("--device mps: no MPS device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_threads(threads: int) -> None:
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def setup_determinism(enabled: bool) -> None:
    """``--deterministic``: deterministic kernels only (an error where torch has none).

    On the CPU runs are already bit-identical for a given seed and thread count;
    this makes CUDA runs so too (cuBLAS workspace, no cuDNN autotuning).
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled


def setup(cfg) -> torch.device:
    """Threads and determinism as ``cfg`` (a RunConfig) says; -> its device."""
    setup_threads(cfg.threads)
    setup_determinism(cfg.deterministic)
    return resolve_device(cfg.device)
