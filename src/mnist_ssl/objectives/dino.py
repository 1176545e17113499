"""Self-distillation with no labels (DINO, Caron et al. 2021) around the shared encoder.

A student (the shared encoder + a projection head) and a teacher of the same shape
whose weights are an exponential moving average (EMA) of the student's, never
trained by gradient. Each image is cut into ``global_crops`` large crops and
``local_crops`` small ones; the teacher sees only the global crops, the student
all of them, and the student's distribution over ``out_dim`` prototypes on every
crop is pulled towards the teacher's on every *other* global crop (cross-entropy).
Collapse is avoided by centring the teacher's outputs (subtracting an EMA of their
batch mean, so no prototype dominates) and sharpening them (a low teacher
temperature, warmed up from ``warmup_teacher_temp``, so the output is not uniform).

Crops on 28 x 28 digits. The engine makes ``views = global_crops + local_crops``
independent views with the pretraining augmentation (small rotation, elastic
distortion); this module cuts the crops from them (the crop is part of the method:
which views are global and which local is known only here):

- global crops: a random resized crop of ``global_scale`` of the image area, back
  to 28 x 28 (DINO's (0.4, 1));
- local crops, ``local_mode="window"`` (default): a ``local_window`` x
  ``local_window`` block of patches of the view at native resolution, given to the
  encoder as its only tokens (``encoder.encode(x, keep_idx)``, as MAE's visible
  tokens), each with its true position embedding: no resampling, and about a
  third of the tokens. The encoder has a fixed patch grid and a position table
  with no interpolation, so DINO's small crops at their own resolution are not
  possible as such;
- ``local_mode="resize"``: DINO's local crop, ``local_scale`` of the area (about
  11-18 pixels on a side) resized to 28 x 28; it costs as much as a global crop.

With ``final_encoder="teacher"`` (what DINO evaluates) the shared encoder takes the
teacher's weights after the last optimiser step, so the probes, kNN and fine-tuning
see the teacher; the default keeps the student.

Engine contract: :meth:`DINO.after_step` must be called after every optimiser step
with the number of completed steps and the phase's total; it updates the teacher.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_ssl.errors import ConfigError
from mnist_ssl.models.layers import init_weights
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.base import Objective, ObjectiveOutput, figure_pixels
from mnist_ssl.objectives.infonce import GlobalBatchNorm1d


@dataclass
class DINOConfig:
    """Student/teacher self-distillation with multi-crop (the ``dino`` config section)."""

    out_dim: int = 256  # prototypes: the size of the distributions compared
    hidden_dim: int = 256  # the head's MLP width
    bottleneck_dim: int = 64  # the head's output before the weight-normed last layer
    head_layers: int = 3  # Linear layers of the MLP before the bottleneck's normalisation
    # BatchNorm after each hidden Linear of the head (DINO's use_bn): a random ViT's CLS features of
    # different digits are nearly parallel, and batch statistics spread them before the sharpening.
    head_bn: bool = True
    norm_last_layer: bool = True  # last layer's rows of unit norm (DINO's weight_g fixed to 1)
    global_crops: int = 2
    local_crops: int = 4
    global_scale_min: float = 0.4  # crop area, fraction of the image
    global_scale_max: float = 1.0
    # "window" (a native-size block of patches) or "resize" (a small crop zoomed to 28 x 28, DINO's
    # way): a zoomed 11-18 pixel piece of a digit reads as another stroke pattern (docs/dino.md)
    local_mode: str = "window"
    local_scale_min: float = 0.15
    local_scale_max: float = 0.4
    local_window: int = 4  # patches on a side of a local crop in "window" mode
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup: float = 0.3  # fraction of the pretraining steps for the linear warm-up
    # Teacher EMA momentum at the first step; it follows a cosine to 1 at the last (DINO's
    # schedule). DINO's 0.996 suits 10^5 steps; a run of a few hundred steps needs a faster teacher.
    momentum: float = 0.99
    center_momentum: float = 0.9
    # Which weights the shared encoder keeps after pretraining. DINO evaluates the teacher; over a
    # few hundred steps the teacher lags the student, whose frozen features were the better ones.
    final_encoder: str = "student"

    def validate(self, where: str = "dino") -> None:
        for name in ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers", "global_crops", "local_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be >= 1")
        if self.local_crops < 0:
            raise ConfigError(f"{where}.local_crops={self.local_crops} must be >= 0")
        if self.global_crops + self.local_crops < 2:
            raise ConfigError(f"{where}: global_crops + local_crops must be >= 2 (a crop is compared "
                              "with the teacher's output on another crop)")
        for kind in ("global", "local"):
            lo, hi = getattr(self, f"{kind}_scale_min"), getattr(self, f"{kind}_scale_max")
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"{where}: need 0 < {kind}_scale_min <= {kind}_scale_max <= 1, got {lo}, {hi}")
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be > 0")
        if not 0 <= self.teacher_temp_warmup <= 1:
            raise ConfigError(f"{where}.teacher_temp_warmup={self.teacher_temp_warmup} must be in [0, 1]")
        for name in ("momentum", "center_momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be in [0, 1]")
        if self.local_mode not in ("resize", "window"):
            raise ConfigError(f"{where}.local_mode={self.local_mode!r} is not one of resize, window")
        if self.final_encoder not in ("teacher", "student"):
            raise ConfigError(f"{where}.final_encoder={self.final_encoder!r} is not one of teacher, student")


# RunConfig overrides this method starts from (the registry applies them before the
# user's own): the crops do the translation and zoom, so the engine's views add only a
# small rotation and elastic distortion; DINO clips gradients at norm 3 and warms the
# learning rate up. 100 epochs: at 15 the loss has flattened well above where it goes and
# the frozen kNN stays under raw pixels (docs/dino.md, "Pretraining budget").
AUGMENT: dict = {"enabled": True, "rotate": 10.0, "translate": 0.0, "scale_min": 1.0, "scale_max": 1.0,
                 "shear": 0.0, "elastic": 0.5, "erase": 0.0, "noise": 0.0}
PRESET: dict = {"pretrain_augment": AUGMENT, "pretrain": {"epochs": 100, "grad_clip": 3.0, "warmup_epochs": 10.0}}


# ----- crops ---------------------------------------------------------------------
def random_resized_crop(x: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """One random crop per image, resized to the input size: (B, C, H, W) -> (B, C, H, W).

    The crop covers a fraction of the area uniform in ``scale``, with aspect ratio
    (w / h) log-uniform in ``ratio``, each side clipped to the image, and lies fully
    inside it. One batched ``grid_sample`` (bilinear). Randomness from ``generator``
    (drawn on the CPU) or else torch's global RNG.
    """
    B = x.shape[0]
    where = "cpu" if generator is not None else x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(B, generator=generator, device=where)).to(x.device, x.dtype)

    area = uniform(*scale)
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = (area * aspect).sqrt().clamp(max=1.0)  # side lengths as fractions of the image's
    h = (area / aspect).sqrt().clamp(max=1.0)
    # In normalised coordinates the outer pixel centres lie at +-(1 - 1/size) and the crop's
    # sampling points at centre +- side * (1 - 1/size): this range of centres keeps every
    # point between pixel centres, so no crop blends in the zero padding.
    H, W = x.shape[-2:]
    cx = (1 - w) * (1 - 1 / W) * (2 * uniform(0.0, 1.0) - 1)
    cy = (1 - h) * (1 - 1 / H) * (2 * uniform(0.0, 1.0) - 1)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w, zero, cx], -1), torch.stack([zero, h, cy], -1)], -2)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def window_indices(batch: int, grid: int, window: int, device: torch.device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, window**2) token indices of one random window x window block of a grid x grid
    patch grid per image, row-major (the encoder's token order for one frame)."""
    where = "cpu" if generator is not None else device
    top = torch.randint(0, grid - window + 1, (batch, 1), generator=generator, device=where).to(device)
    left = torch.randint(0, grid - window + 1, (batch, 1), generator=generator, device=where).to(device)
    offs = torch.arange(window, device=device)
    rows = (top + offs).unsqueeze(-1)  # (B, w, 1)
    cols = (left + offs).unsqueeze(1)  # (B, 1, w)
    return (rows * grid + cols).reshape(batch, window * window)


# ----- head and loss ---------------------------------------------------------------
class NormedLinear(nn.Module):
    """Linear map without bias whose weight rows are scaled to unit norm: DINO's weight-normed
    last layer with its gain fixed to 1 (``norm_last_layer``), or a plain Linear when ``normed`` is False."""

    def __init__(self, dim: int, out: int, normed: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.normed = normed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.weight, dim=1) if self.normed else self.weight
        return x @ w.t()


class DINOHead(nn.Module):
    """CLS features (B, D) -> prototype scores (B, out_dim): an MLP (GELU) to a bottleneck,
    l2-normalised, then the weight-normed last layer."""

    def __init__(self, dim: int, cfg: DINOConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for i in range(cfg.head_layers):
            last = i == cfg.head_layers - 1
            layers.append(nn.Linear(width, cfg.bottleneck_dim if last else cfg.hidden_dim))
            if not last:
                if cfg.head_bn:
                    layers.append(GlobalBatchNorm1d(cfg.hidden_dim))
                layers.append(nn.GELU())
            width = cfg.hidden_dim
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(init_weights)
        self.last_layer = NormedLinear(cfg.bottleneck_dim, cfg.out_dim, cfg.norm_last_layer)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(h), dim=-1))


def dino_loss(student_out: list[torch.Tensor], teacher_out: list[torch.Tensor], center: torch.Tensor,
              student_temp: float, teacher_temp: float) -> torch.Tensor:
    """DINO's cross-entropy between the teacher's and the student's crops.

    student_out: one (B, K) score tensor per crop, the global crops first in the teacher's
    order; teacher_out: one (B, K) per global crop; center: (1, K). The teacher's target on
    crop q is softmax((t_q - center) / teacher_temp), the student's prediction on crop v is
    log_softmax(s_v / student_temp); the loss is the mean over every pair with v != q of
    the batch mean of -sum_k target * prediction.
    """
    targets = [F.softmax((t - center) / teacher_temp, dim=-1).detach() for t in teacher_out]
    preds = [F.log_softmax(s / student_temp, dim=-1) for s in student_out]
    total, pairs = student_out[0].new_zeros(()), 0
    for q, target in enumerate(targets):
        for v, pred in enumerate(preds):
            if v == q:
                continue
            total = total + (-target * pred).sum(-1).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError("dino_loss needs at least one student crop other than the teacher's")
    return total / pairs


def _all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over torch.distributed ranks (``x`` itself in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


# ----- the objective ---------------------------------------------------------------
class DINO(Objective):
    """views: ``global_crops + local_crops`` augmented views (B, 1, H, W) of the same images,
    globals first; labels are ignored. See the module docstring."""

    loss_label = "DINO Loss"

    def __init__(self, encoder: ViTEncoder, cfg: DINOConfig,
                 augment_for_figure: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        cfg.validate()
        if encoder.cfg.frames != 1:
            raise ConfigError(f"dino works on images: model.frames={encoder.cfg.frames} must be 1")
        if cfg.local_mode == "window" and cfg.local_window > encoder.cfg.grid:
            raise ConfigError(f"dino.local_window={cfg.local_window} exceeds the {encoder.cfg.grid} x "
                              f"{encoder.cfg.grid} patch grid")
        self.cfg = cfg
        self.views = cfg.global_crops + cfg.local_crops
        self.encoder = encoder
        self.head = self.make_head(encoder.dim, cfg)
        self.teacher_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        # Where training stands, saved with the weights so a resumed run keeps its schedules.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.long))
        self.augment_for_figure = augment_for_figure  # plain attribute: no weights
        self.train()

    def make_head(self, dim: int, cfg: DINOConfig) -> nn.Module:
        """The student's head (the teacher's is a copy of it)."""
        return DINOHead(dim, cfg)

    def train(self, mode: bool = True) -> "DINO":
        # The teacher never trains: no dropout in its targets. Its head's BatchNorm normalises
        # with the batch's statistics, as the student's does (running ones are not averaged).
        super().train(mode)
        self.teacher_encoder.eval()
        self.teacher_head.train(mode)
        return self

    # ----- schedules --------------------------------------------------------------
    def progress(self) -> float:
        """Fraction of the pretraining steps done (0 before the first :meth:`after_step`)."""
        total = int(self.total_steps)
        return int(self.steps_done) / total if total > 0 else 0.0

    def teacher_temperature(self) -> float:
        c, p = self.cfg, self.progress()
        if c.teacher_temp_warmup > 0 and p < c.teacher_temp_warmup:
            return c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * p / c.teacher_temp_warmup
        return c.teacher_temp

    def momentum_at(self, step: int, total_steps: int) -> float:
        """EMA momentum of the update after step ``step`` (1-based) of ``total_steps``: a cosine
        from ``cfg.momentum`` at the first step to 1 at the last."""
        m0 = self.cfg.momentum
        if total_steps <= 1:
            return m0
        return 1.0 - (1.0 - m0) * (math.cos(math.pi * (step - 1) / (total_steps - 1)) + 1.0) / 2.0

    # ----- the method's stages ----------------------------------------------------
    def make_crops(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The global crops and the local views (resized crops, or whole views in "window" mode)."""
        c = self.cfg
        if len(views) != self.views:
            raise ValueError(f"dino expects {self.views} views ({c.global_crops} global + {c.local_crops} local), "
                             f"got {len(views)}")
        globals_ = [random_resized_crop(v, (c.global_scale_min, c.global_scale_max)) for v in views[:c.global_crops]]
        locals_ = views[c.global_crops:]
        if c.local_mode == "resize":
            locals_ = [random_resized_crop(v, (c.local_scale_min, c.local_scale_max)) for v in locals_]
        return globals_, locals_

    def forward_student(self, globals_: list[torch.Tensor], locals_: list[torch.Tensor]) -> list[torch.Tensor]:
        """One (B, out_dim) score tensor per crop, globals first."""
        if self.cfg.local_mode == "resize" or not locals_:
            h = self.encoder(torch.cat(globals_ + locals_))
        else:
            x_local = torch.cat(locals_)
            keep = self.window(x_local)  # drawn before the globals' dropout, as it always was
            h = torch.cat([self.encoder(torch.cat(globals_)), self.local_features(x_local, keep)])
        return list(self.head(h).chunk(len(globals_) + len(locals_)))

    def window(self, x_local: torch.Tensor) -> torch.Tensor | None:
        """The token indices a "window" local crop keeps: one random window of patches per image
        (None in "resize" mode: the whole crop)."""
        if self.cfg.local_mode == "resize":
            return None
        return window_indices(x_local.shape[0], self.encoder.cfg.grid, self.cfg.local_window, x_local.device)

    def local_features(self, x_local: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """The student's CLS features of the local crops: of the tokens ``keep`` (:meth:`window`) only."""
        return self.encoder.encode(x_local, keep)[:, 0]

    @torch.no_grad()
    def forward_teacher(self, globals_: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.teacher_head(self.teacher_encoder(torch.cat(globals_))).chunk(len(globals_)))

    @torch.no_grad()
    def update_center(self, teacher_out: list[torch.Tensor]) -> None:
        """center <- m * center + (1 - m) * (batch mean of the teacher's scores, over every rank)."""
        batch_center = _all_reduce_mean(torch.cat(teacher_out).float().mean(0, keepdim=True))
        m = self.cfg.center_momentum
        self.center.mul_(m).add_(batch_center, alpha=1 - m)

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> ObjectiveOutput:
        globals_, locals_ = self.make_crops(views)
        teacher_out = self.forward_teacher(globals_)
        student_out = self.forward_student(globals_, locals_)
        temp = self.teacher_temperature()
        loss = dino_loss([s.float() for s in student_out], [t.float() for t in teacher_out],
                         self.center, self.cfg.student_temp, temp)
        entropies = self.teacher_entropies(teacher_out, temp)
        if self.training:
            self.update_center(teacher_out)
        return ObjectiveOutput(loss, {"dino": loss.detach(), **entropies})

    @torch.no_grad()
    def teacher_entropies(self, teacher_out: list[torch.Tensor], temp: float) -> dict[str, torch.Tensor]:
        """Collapse diagnostics of the teacher's targets (before this step's centre update): the
        mean entropy of one image's target and the entropy of the batch's mean target. A one-hot
        collapse drives both to 0, a uniform one both to log K."""
        probs = F.softmax((torch.cat(teacher_out).float() - self.center) / temp, dim=-1)
        mean_p = probs.mean(0)
        return {"teacher_entropy": -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean(),
                "teacher_batch_entropy": -(mean_p * mean_p.clamp_min(1e-12).log()).sum()}

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Called by the engine after optimiser step ``step`` (1-based) of ``total_steps``:
        teacher <- m * teacher + (1 - m) * student; after the last step the shared encoder
        takes the teacher's weights when ``final_encoder`` is "teacher"."""
        m = self.momentum_at(step, total_steps)
        for student, teacher in ((self.encoder, self.teacher_encoder), (self.head, self.teacher_head)):
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
        self.steps_done.fill_(step)
        self.total_steps.fill_(total_steps)
        if step >= total_steps and self.cfg.final_encoder == "teacher":
            self.encoder.load_state_dict(self.teacher_encoder.state_dict())

    @torch.no_grad()
    def figure(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """The views figure's arrays, each (B, H, W): the ``original`` images beside one global
        crop (``view1``) and one local crop (``view2``) of each, as the student sees them (in
        "window" mode the local crop's patches outside its window are blanked)."""
        augment = self.augment_for_figure or (lambda x: x)
        globals_, locals_ = self.make_crops([augment(images) for _ in range(self.views)])
        if not locals_:
            local = globals_[-1]
        elif self.cfg.local_mode == "resize":
            local = locals_[0]
        else:
            enc = self.encoder
            keep = window_indices(images.shape[0], enc.cfg.grid, self.cfg.local_window, images.device)
            patches = enc.patchify(locals_[0])
            shown = torch.zeros_like(patches).scatter_(
                1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]),
                torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1])))
            local = enc.unpatchify(shown)
        return {"original": figure_pixels(images), "view1": figure_pixels(globals_[0]),
                "view2": figure_pixels(local)}


def build(encoder: ViTEncoder, cfg) -> DINO:
    from mnist_ssl.data.augment import Augmenter

    augment = Augmenter(cfg.pretrain_augment) if cfg.pretrain_augment.enabled else None
    return DINO(encoder, cfg.dino, augment_for_figure=augment)
