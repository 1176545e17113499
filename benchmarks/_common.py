"""Shared pieces of the benchmark scripts: our objectives and the HF peers at the same sizes,
one train step each, timing, the matmul peak, the machine's load, and the output format.

Never imported by the package; tests/test_benchmarks_smoke.py builds and steps each objective
through it (no timing) so that an API change cannot break the scripts unnoticed.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (method, config overrides (--set style), HF peer)
OBJECTIVES: dict[str, tuple[str, list[str], str]] = {
    "mae-zero": ("mae", ["mae.masking=zero"], "vitmae"),
    "mae-drop": ("mae", ["mae.masking=drop"], "vitmae"),
    "infonce": ("infonce", [], "vitmae"),
    "mae-infonce": ("mae-infonce", [], "vitmae"),
    "videomae": ("videomae", [], "videomae"),
}

# The two sizes of the issue: the default config, and width 192 / depth 6.
SIZES: dict[str, dict] = {
    "default": {"dim": 64, "depth": 4, "heads": 4, "decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4},
    "large": {"dim": 192, "depth": 6, "heads": 3, "decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4},
}


def load() -> list[float]:
    """1, 5 and 15 minute load averages (what ``uptime`` prints)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine(threads: int | None = None) -> dict:
    """The job's machine block (CPU model, vector-kernel level, threads, GPU) plus torch's version
    and the load average. `threads` is the measured processes' thread count where they are
    children started with their own --threads; by default this process's own count."""
    from mnist_ssl.experiment.reproduce import machine as job_machine

    threads = torch.get_num_threads() if threads is None else threads
    return {**job_machine(threads), "torch": torch.__version__, "load_avg": load()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def autocast(device: torch.device):
    """bf16 autocast on CUDA (what the engine does), off elsewhere; for both sides alike."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def matmul_peak_gflops(n: int = 4096, reps: int = 3, device: str = "cpu") -> float:
    """Best of ``reps`` fp32 (n x n) @ (n x n) products, in GFLOP/s, at the current thread count."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = now(dev)
        a @ b
        best = min(best, now(dev) - t0)
    return 2 * n**3 / best / 1e9


def run_config(name: str, size: str, extra: list[str] = ()):
    """The RunConfig of objective ``name`` at ``size`` (the method's preset applied)."""
    import argparse

    from mnist_ssl.cli import build_config

    method, sets, _ = OBJECTIVES[name]
    s = SIZES[size]
    sets = sets + [f"model.dim={s['dim']}", f"model.depth={s['depth']}", f"model.heads={s['heads']}"]
    for part in ("mae", "videomae"):
        sets += [f"{part}.decoder_dim={s['decoder_dim']}", f"{part}.decoder_depth={s['decoder_depth']}",
                 f"{part}.decoder_heads={s['decoder_heads']}"]
    ns = argparse.Namespace(config=None, set=sets + list(extra), data=None, threads=None)
    return build_config(ns, method)


@dataclass
class Stepper:
    """One train step (forward + loss + backward + optimiser), and what it trains on."""

    name: str
    step: Callable[[], None]
    flop_step: Callable[[], None]  # forward + backward only, for FlopCounterMode
    module: torch.nn.Module
    batch: int


def ours(name: str, size: str, batch: int, device: torch.device, compile: bool = False,
         extra: list[str] = ()) -> tuple[Stepper, Callable[[], list[torch.Tensor]], object]:
    """Our objective at ``size`` with the engine's optimiser and schedule, and its view maker.

    Returns (stepper on fixed views, make_views() that augments a fresh batch as the engine does, cfg).
    """
    from mnist_ssl.data import load_embedded
    from mnist_ssl.engine.optim import make_optimizer, make_schedule
    from mnist_ssl.models.vit import ViTEncoder
    from mnist_ssl.objectives.registry import build_objective
    from mnist_ssl.experiment.data import clip_builder, make_view

    cfg = run_config(name, size, extra)
    torch.manual_seed(0)
    objective = build_objective(cfg, ViTEncoder(cfg.model)).to(device)
    objective.train()
    opt = make_optimizer(objective, cfg.pretrain, device)
    sched = make_schedule(opt, cfg.pretrain, 10**6)
    images = load_embedded().images[:batch].to(device)
    view = make_view(cfg.pretrain_augment, clip_builder(cfg))

    def make_views() -> list[torch.Tensor]:
        x = images.float().div_(255.0)
        return [view(x) if view is not None else x for _ in range(objective.views)]

    views = make_views()
    forward = torch.compile(objective) if compile else objective

    def flop_step() -> None:
        with autocast(device):
            out = forward(views, None)
        out.loss.backward()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        flop_step()
        opt.step()
        sched.step()

    return Stepper(name + (" (compiled)" if compile else ""), step, flop_step, objective, batch), make_views, cfg


def hf_peer(kind: str, size: str, batch: int, device: torch.device, frames: int = 3,
            dropout: float = 0.0) -> Stepper:
    """HF ``ViTMAEForPreTraining`` / ``VideoMAEForPreTraining`` at ``size``, AdamW as a user would.

    dropout: HF's ``hidden_dropout_prob`` (its default is 0; our default config's is 0.1).
    """
    s = SIZES[size]
    common = dict(hidden_dropout_prob=dropout, hidden_size=s["dim"], num_hidden_layers=s["depth"], num_attention_heads=s["heads"],
                  intermediate_size=4 * s["dim"], image_size=28, patch_size=4, num_channels=1,
                  decoder_hidden_size=s["decoder_dim"], decoder_num_hidden_layers=s["decoder_depth"],
                  decoder_num_attention_heads=s["decoder_heads"], decoder_intermediate_size=4 * s["decoder_dim"])
    torch.manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, device=device)
    if kind == "vitmae":
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        model = ViTMAEForPreTraining(ViTMAEConfig(**common, mask_ratio=0.75, attn_implementation="sdpa"))
        inputs: dict = {"pixel_values": x}
    else:
        from transformers import VideoMAEConfig, VideoMAEForPreTraining

        # docs/anchors.md: 3 frames need tubelet 1; one channel needs norm_pix_loss=True.
        model = VideoMAEForPreTraining(VideoMAEConfig(**common, num_frames=frames, tubelet_size=1,
                                                      norm_pix_loss=True, attn_implementation="sdpa"))
        grid = 49
        visible = round(grid * 0.25)
        masks = []
        for _ in range(batch):  # tube masking: one spatial mask repeated over the frames
            m = torch.ones(grid, dtype=torch.bool)
            m[torch.randperm(grid)[:visible]] = False
            masks.append(m.repeat(frames))
        inputs = {"pixel_values": x.unsqueeze(1).expand(-1, frames, -1, -1, -1).contiguous(),
                  "bool_masked_pos": torch.stack(masks).to(device)}
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    def flop_step() -> None:
        with autocast(device):
            loss = model(**inputs).loss
        loss.backward()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        flop_step()
        opt.step()

    return Stepper(f"HF {'ViTMAEForPreTraining' if kind == 'vitmae' else 'VideoMAEForPreTraining'}",
                   step, flop_step, model, batch)


def count_flops(stepper: Stepper) -> int:
    """FLOPs of one forward + backward (matmuls, convolutions, attention), by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        stepper.flop_step()
    stepper.module.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def time_steps(stepper: Stepper, n: int, device: torch.device) -> list[float]:
    """Seconds of each of ``n`` steps (the device synchronised around each)."""
    out = []
    for _ in range(n):
        t0 = now(device)
        stepper.step()
        out.append(now(device) - t0)
    return out


def emit(name: str, result: dict, table: str) -> Path:
    """Print the JSON and the markdown table; save the JSON under benchmarks/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    text = json.dumps(result, indent=2)
    path.write_text(text + "\n")
    print(text)
    print()
    print(table)
    print(f"\n(saved {path})")
    return path
