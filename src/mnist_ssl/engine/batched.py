"""K fine-tuning runs of one shape trained as one model: weights with a leading model dimension.

A fine-tuning step at the default size (batch 8, width 64) is bound by per-step overhead
(Python, dispatch, many small kernels), not by arithmetic. The seeds of one method are the
same program on other samples and initialisations, so K of them can share each step: every
weight gets a leading model dimension (K, ...), every linear layer becomes one batched matrix
product (``torch.baddbmm``), and one backward pass and one optimiser step serve all K.

What stays per model, so that model k's run does not depend on which models share its step:

- its sample (images, labels) and initialisation (the classifier it was given, LP-FT head included);
- its random draws: batch order, augmentation and dropout masks come from model k's own
  ``torch.Generator``, drawn outside the batched forward pass and passed in. The generator is
  seeded as the one-model engine seeds torch's global RNG (``seed + 1``) and draws in the same
  order with the same functions, so model k sees the numbers the one-model run sees;
- its loss (the losses are summed: model k's gradient is that of its own loss alone), its
  gradient clipping (the norm over model k's gradients only), and Adam/AdamW (elementwise,
  so one optimiser over stacked weights is K optimisers);
- its log records and its resumable state, written per run folder in the one-model format
  (engine/resume.py): a batched job can be resumed batched or one model at a time.

The schedule and the hyper-parameters are shared: the models of one step must have the same
OptimConfig, shapes and sample size (the same method on other seeds). What differs from the
one-model engine is only rounding: batched matrix products and this forward pass's LayerNorm
add in another order than ``F.linear``/``conv2d``/fused LayerNorm (docs/benchmarks.md states
the measured bound). Dropout on the attention weights (drawn inside SDPA) is not supported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from mnist_ssl.config import AugmentConfig, OptimConfig
from mnist_ssl.data.augment import Augmenter
from mnist_ssl.engine.loop import TrainState
from mnist_ssl.engine.optim import make_optimizer, make_schedule, param_groups
from mnist_ssl.errors import TrainingDiverged
from mnist_ssl.models.vit import ViTClassifier
from mnist_ssl.objectives.supervised import Supervised

PHASE = "finetune"


# ----- per-model random draws ---------------------------------------------------
def _mask_shapes(cfg, batch: int) -> list[tuple[int, ...]]:
    """The shapes of one model's dropout masks for one step, in the order its encoder draws
    them: the token dropout, then per block the attention output's, the feed-forward hidden
    layer's and its output's."""
    tokens = 1 + cfg.num_patches
    hidden = int(cfg.dim * cfg.mlp_ratio)
    shapes = [(batch, tokens, cfg.dim)]
    for _ in range(cfg.depth):
        shapes += [(batch, tokens, cfg.dim), (batch, tokens, hidden), (batch, tokens, cfg.dim)]
    return shapes


def dropout_masks(cfg, batch: int, generators: list[torch.Generator]) -> list[torch.Tensor] | None:
    """The K models' dropout masks for one step, each stacked to (K, *shape); None when dropout
    is off (the encoder draws nothing then). Model k's random words come from generators[k] in
    one draw: the words each of its masks would draw in turn (``random_`` fills serially, so one
    long draw gives the same words as the encoder's consecutive ones)."""
    p = cfg.dropout
    if p == 0.0:
        return None
    shapes = _mask_shapes(cfg, batch)
    K = len(generators)
    if p >= 1.0:
        return [torch.zeros(K, *s) for s in shapes]
    sizes = [torch.Size(s).numel() for s in shapes]
    words_per = [(n + 3) // 4 for n in sizes]
    words = torch.empty(K, sum(words_per), dtype=torch.int64)
    for k, g in enumerate(generators):
        words[k].random_(-(2**63), None, generator=g)
    bits = words.view(torch.int16)  # (K, 4 * words)
    dropped = round(p * 65536)
    scale = 65536 / (65536 - dropped)
    out, start = [], 0
    for s, n, w in zip(shapes, sizes, words_per):
        # Compared slice by slice: each mask is written once, contiguous, with no copy of the bits.
        keep = bits[:, 4 * start:4 * start + n] >= dropped - 32768
        out.append(keep.view(K, *s).float().mul_(scale) if keep.is_contiguous() else
                   keep.reshape(K, *s).float().mul_(scale))
        start += w
    return out


class PerModelAugmenter(Augmenter):
    """The fine-tuning augmentation of K models' batches in one call on their concatenation
    (K * B images, model-major): every random tensor is drawn per model from that model's
    generator, B images each, in the order the one-model Augmenter draws, so model k's images
    get the numbers they would get alone; the arithmetic runs once for all."""

    def __init__(self, cfg: AugmentConfig, generators: list[torch.Generator]) -> None:
        super().__init__(cfg)
        self.generators = generators

    def _rand(self, shape: tuple[int, ...], device: torch.device, normal: bool = False) -> torch.Tensor:
        K = len(self.generators)
        draw = torch.randn if normal else torch.rand
        per = (shape[0] // K, *shape[1:])
        return torch.cat([draw(per, generator=g) for g in self.generators]).to(device)


# ----- the batched forward pass ---------------------------------------------------
def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (K, ..., in), w (K, out, in), b (K, out) -> (K, ..., out): one batched product."""
    K = x.shape[0]
    lead = x.shape[1:-1]
    y = torch.baddbmm(b.unsqueeze(1), x.reshape(K, -1, x.shape[-1]), w.transpose(1, 2))
    return y.view(K, *lead, w.shape[1])


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension with per-model affine weights w, b (K, D)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return torch.addcmul(b.view(shape), F.layer_norm(x, x.shape[-1:], eps=eps), w.view(shape))


def forward_batched(template: ViTClassifier, params: dict[str, torch.Tensor], x: torch.Tensor,
                    masks: list[torch.Tensor] | None) -> torch.Tensor:
    """Logits (K, B, num_classes) of K classifiers shaped like ``template`` on images x (K, B, C, H, W).

    params: the classifiers' weights stacked, ``template.named_parameters()`` names, shapes (K, ...);
    the position table comes from ``template`` when it is fixed (sin-cos, a buffer).
    masks: the dropout masks of :func:`dropout_masks`, each stacked to (K, ...), or None.
    The maths of ViTClassifier.forward: patch embedding, CLS, positions, pre-norm blocks, norm, head.
    """
    enc = template.encoder
    c = enc.cfg
    K, B = x.shape[:2]
    P = params
    pe = "encoder.patch_embed.proj."
    x = (x.reshape(K * B, *x.shape[2:]) - c.pixel_mean) / c.pixel_std
    patches = enc.patchify(x).view(K, B, c.num_patches, -1)  # features ordered (t, p, p, C)
    w = P[pe + "weight"]  # (K, D, C, t, p, p) -> (K, D, t*p*p*C)
    w = w.permute(0, 1, 3, 4, 5, 2).reshape(K, c.dim, -1)
    tokens = _linear(patches, w, P[pe + "bias"])
    if "encoder.pos_embed.spatial" in P:
        pos = P["encoder.pos_embed.spatial"]  # (K, N_s, D)
        if enc.pos_embed.time_steps > 1:
            t = P["encoder.pos_embed.temporal"]
            pos = (t[:, :, None, :] + pos[:, None, :, :]).reshape(K, -1, c.dim)
        tokens = tokens + pos.unsqueeze(1)
    else:
        tokens = tokens + enc.pos_embed()
    cls = P["encoder.cls_token"].view(K, 1, 1, c.dim).expand(K, B, 1, c.dim)
    h = torch.cat([cls, tokens], dim=2)  # (K, B, 1 + N, D)
    m = iter(masks) if masks is not None else None
    if m is not None:
        h = h * next(m)
    heads, N1, D = c.heads, h.shape[2], c.dim
    for i in range(c.depth):
        b = f"encoder.blocks.{i}."
        y = _layer_norm(h, P[b + "norm1.weight"], P[b + "norm1.bias"])
        qkv = _linear(y, P[b + "attn.qkv.weight"], P[b + "attn.qkv.bias"])
        qkv = qkv.reshape(K * B, N1, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(K, B, N1, D)
        a = _linear(a, P[b + "attn.proj.weight"], P[b + "attn.proj.bias"])
        h = h + (a * next(m) if m is not None else a)
        y = _layer_norm(h, P[b + "norm2.weight"], P[b + "norm2.bias"])
        y = F.gelu(_linear(y, P[b + "mlp.fc1.weight"], P[b + "mlp.fc1.bias"]))
        if m is not None:
            y = y * next(m)
        y = _linear(y, P[b + "mlp.fc2.weight"], P[b + "mlp.fc2.bias"])
        h = h + (y * next(m) if m is not None else y)
    h = _layer_norm(h, P["encoder.norm.weight"], P["encoder.norm.bias"])
    return _linear(h[:, :, 0], P["head.weight"], P["head.bias"])


def forward_vmap(template: ViTClassifier, params: dict[str, torch.Tensor], x: torch.Tensor,
                 masks: list[torch.Tensor] | None) -> torch.Tensor:
    """The same logits through ``torch.func.vmap`` over ``functional_call`` of one model's
    maths (the ensembling recipe); kept to measure against :func:`forward_batched`."""
    from torch.func import vmap

    def one(p, xi, mi):
        batched = {k: v.unsqueeze(0) for k, v in p.items()}
        return forward_batched(template, batched, xi.unsqueeze(0),
                               None if mi is None else [t.unsqueeze(0) for t in mi])[0]

    return vmap(one)(params, x, masks)


FORWARDS = {"bmm": forward_batched, "vmap": forward_vmap}


# ----- stacking -----------------------------------------------------------------
# Each model's slice of a stacked weight is padded to a multiple of this many floats (the
# widest CPU vector, AVX512). The fused Adam kernel runs full vectors, then a scalar tail that
# rounds differently: without padding, a 3-element head bias is all tail when trained alone
# and mostly vector when stacked with others, and model k's weights would depend on K.
ALIGN = 16


class StackedParams:
    """The trainable weights of K same-shaped classifiers, one leaf tensor (K, padded numel) per
    parameter name; ``views()`` gives them as (K, *shape) tensors that autograd traces back."""

    def __init__(self, classifiers: list[ViTClassifier]) -> None:
        per_model = [dict(c.named_parameters()) for c in classifiers]
        self.shapes = {n: tuple(p.shape) for n, p in classifiers[0].named_parameters() if p.requires_grad}
        self.store: dict[str, torch.Tensor] = {}
        for n, shape in self.shapes.items():
            numel = per_model[0][n].numel()
            padded = -(-numel // ALIGN) * ALIGN
            store = torch.zeros(len(classifiers), padded, device=per_model[0][n].device)
            for k, pm in enumerate(per_model):
                store[k, :numel] = pm[n].detach().reshape(-1)
            self.store[n] = store.requires_grad_(True)

    def views(self) -> dict[str, torch.Tensor]:
        return {n: self.of(self.store[n], n) for n in self.shapes}

    def of(self, stacked: torch.Tensor, name: str) -> torch.Tensor:
        """A (K, padded) tensor of ``name`` (the weight, a gradient, an Adam moment) as (K, *shape)."""
        shape = self.shapes[name]
        numel = 1
        for s in shape:
            numel *= s
        return stacked[:, :numel].view(stacked.shape[0], *shape)

    @torch.no_grad()
    def unstack_into(self, k: int, classifier: ViTClassifier) -> None:
        """Copy model k's slice into ``classifier``."""
        own = dict(classifier.named_parameters())
        for n, store in self.store.items():
            own[n].copy_(self.of(store, n)[k])

    @torch.no_grad()
    def load_model(self, k: int, classifier: ViTClassifier) -> None:
        """Copy ``classifier``'s weights into model k's slice."""
        for n, p in classifier.named_parameters():
            self.of(self.store[n], n)[k].copy_(p)


def _optimizer(template: ViTClassifier, params: StackedParams, cfg: OptimConfig,
               device: torch.device) -> torch.optim.Optimizer:
    """The engine's optimiser (optim.make_optimizer: the same groups, rates, decay, fused kernel)
    over the stacked weights: groups are made on one model, each parameter swapped for its stack
    (which parameters decay is decided on one model's shapes, not the stacked ones)."""
    wrapped = Supervised(template)
    name_of = {id(p): n[len("classifier."):] for n, p in wrapped.named_parameters()}
    single = make_optimizer(wrapped, cfg, device)
    groups = []
    for g in single.param_groups:
        groups.append({**{k: v for k, v in g.items() if k != "params"},
                       "params": [params.store[name_of[id(p)]] for p in g["params"]]})
    cls = type(single)
    defaults = {k: v for k, v in single.defaults.items() if k in ("lr", "fused")}
    return cls(groups, **defaults)


@torch.no_grad()
def clip_per_model(params: dict[str, torch.Tensor], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for each model separately: model k's gradients scaled by
    min(1, max_norm / (||g_k|| + 1e-6)), ||g_k|| over its own gradients only.
    params: name -> leaf tensor (K, ...) (padding holds zero gradients). Returns the K norms."""
    grads = [p.grad for p in params.values() if p.grad is not None]
    K = grads[0].shape[0]
    # As clip_grad_norm_: one norm per tensor, then the norm of those; each on model k's own
    # rows, so the reductions (and their rounding) do not depend on K.
    norms = torch._foreach_norm([g[k] for k in range(K) for g in grads])
    P = len(grads)
    total = torch.stack([torch.linalg.vector_norm(torch.stack(norms[k * P:(k + 1) * P])) for k in range(K)])
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return total


# ----- one model's view of the batched run: its TrainState, for callbacks and resume ----
@dataclass
class _Model:
    classifier: ViTClassifier
    images: torch.Tensor
    labels: torch.Tensor
    generator: torch.Generator
    callbacks: list
    history: list


def _model_state(run: "BatchedFinetune", k: int) -> TrainState:
    """Model k alone as the one-model engine's TrainState: its weights copied into its classifier,
    an optimiser over them holding its slice of the moments, the schedule at the same step."""
    mdl = run.models[k]
    run.params.unstack_into(k, mdl.classifier)
    module = Supervised(mdl.classifier, run.label_smoothing)
    opt = make_optimizer(module, run.cfg, run.device)
    sched = make_schedule(opt, run.cfg, run.steps_per_epoch)
    name_of = {id(p): n[len("classifier."):] for n, p in module.named_parameters()}
    for g, sg in zip(opt.param_groups, run.optimizer.param_groups):
        g.update({key: v for key, v in sg.items() if key != "params"})
        for p in g["params"]:
            name = name_of[id(p)]
            stacked = run.optimizer.state.get(run.params.store[name])
            if stacked:
                opt.state[p] = {key: (run.params.of(v, name)[k].clone() if torch.is_tensor(v) and v.dim() > 0
                                      else (v.clone() if torch.is_tensor(v) else v)) for key, v in stacked.items()}
    sched.load_state_dict(run.scheduler.state_dict())
    return TrainState(PHASE, module, opt, sched, run.cfg.epochs, run.steps_per_epoch,
                      epoch=run.epoch, step=run.step, history=mdl.history)


def _restore_model(run: "BatchedFinetune", k: int, saved: dict) -> None:
    """Load model k's resume state (engine/resume.py format) into its slices and its generator."""
    from mnist_ssl.engine.resume import restore_train_state

    state = _model_state(run, k)
    outer = torch.get_rng_state()
    restore_train_state(state, saved)  # sets torch's global RNG to the model's saved state
    run.models[k].generator.set_state(torch.get_rng_state())
    torch.set_rng_state(outer)
    module = state.module
    run.params.load_model(k, module.classifier)
    name_of = {id(p): n[len("classifier."):] for n, p in module.named_parameters()}
    for g in state.optimizer.param_groups:
        for p in g["params"]:
            own = state.optimizer.state.get(p)
            if not own:
                continue
            name = name_of[id(p)]
            target = run.params.store[name]
            stacked = run.optimizer.state.setdefault(target, {})
            for key, v in own.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    if key not in stacked:
                        stacked[key] = torch.zeros_like(target, memory_format=torch.preserve_format)
                    run.params.of(stacked[key], name)[k].copy_(v)
                else:
                    stacked[key] = v.clone() if torch.is_tensor(v) else v
    for g, sg in zip(state.optimizer.param_groups, run.optimizer.param_groups):  # the rates at that step
        sg.update({key: v for key, v in g.items() if key not in ("params", "fused")})
    run.models[k].history[:] = state.history
    run.epoch, run.step = state.epoch, state.step
    run.scheduler.load_state_dict(state.scheduler.state_dict())


class BatchedFinetune:
    """Fine-tuning of K classifiers of one shape in one batched step (see the module doc).

    classifiers: K ViTClassifiers (LP-FT head already fitted where the recipe asks); images:
    K uint8 (N, C, H, W) samples of one size N; labels: K (N,) class-index tensors; seeds: the
    runs' seeds (model k's generator starts at ``seed + 1``, as the engine seeds fine-tuning);
    cfg: the shared fine-tuning OptimConfig; augment: the fine-tuning AugmentConfig;
    clip: the clip builder ``f(x, generator)`` of video models, or None; callbacks: per model,
    the engine's callbacks (JSONL log, printer, ResumeWriter), called with model k's TrainState.
    """

    def __init__(self, classifiers: list[ViTClassifier], images: list[torch.Tensor], labels: list[torch.Tensor],
                 seeds: list[int], cfg: OptimConfig, augment: AugmentConfig, *, label_smoothing: float = 0.0,
                 clip: Callable | None = None, callbacks: list[list] | None = None,
                 forward: str = "bmm") -> None:
        if not classifiers:
            raise ValueError("BatchedFinetune needs at least one classifier")
        sizes = {len(x) for x in images}
        if len(sizes) != 1:
            raise ValueError(f"the batched models need samples of one size, got {sorted(sizes)}")
        template = classifiers[0]
        if template.cfg.attn_dropout > 0:
            raise ValueError("batched fine-tuning does not support model.attn_dropout > 0 (drawn inside SDPA)")
        shapes = [[tuple(p.shape) for p in c.parameters()] for c in classifiers]
        if any(s != shapes[0] for s in shapes) or any(c.cfg != template.cfg for c in classifiers):
            raise ValueError("the batched models must have the same architecture")
        self.template = template
        self.cfg = cfg
        self.label_smoothing = label_smoothing
        self.device = images[0].device
        self.n = sizes.pop()
        self.steps_per_epoch = -(-self.n // cfg.batch_size)
        self.models = [
            _Model(c, x, y, torch.Generator().manual_seed(s + 1), list(cbs), [])
            for c, x, y, s, cbs in zip(classifiers, images, labels, seeds,
                                       callbacks or [[] for _ in classifiers])
        ]
        self.augment = (PerModelAugmenter(augment, [m.generator for m in self.models])
                        if augment.enabled else None)
        self.clip = clip
        self.params = StackedParams(classifiers)
        self.optimizer = _optimizer(template, self.params, cfg, self.device)
        self.scheduler = make_schedule(self.optimizer, cfg, self.steps_per_epoch)
        self.forward = FORWARDS[forward]
        self.epoch = 0
        self.step = 0

    @property
    def K(self) -> int:
        return len(self.models)

    def resume(self, saved: list[dict | None]) -> None:
        """Continue from per-model resume states (engine/resume.py ``load_train_state``), all at
        one epoch, or all None (start afresh)."""
        given = [s for s in saved if s is not None]
        if not given:
            return
        epochs = {s["meta"].get("epoch") for s in saved if s is not None}
        if len(given) != len(saved) or len(epochs) != 1:
            raise ValueError("batched resume needs every model saved at the same epoch; "
                             f"got epochs {[None if s is None else s['meta'].get('epoch') for s in saved]}")
        for k, s in enumerate(saved):
            _restore_model(self, k, s)

    # ----- one step ---------------------------------------------------------------
    def _views(self, idx: list[torch.Tensor]) -> tuple[torch.Tensor, list | None, torch.Tensor]:
        """Per model, in its generator's order: the augmented batch, then the dropout masks."""
        K, B = self.K, len(idx[0])
        x = torch.cat([m.images[i] for m, i in zip(self.models, idx)]).float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        if self.clip is not None:
            x = torch.cat([self.clip(part, m.generator) for part, m in zip(x.split(B), self.models)])
        masks = dropout_masks(self.template.cfg, B, [m.generator for m in self.models])
        if masks is not None:
            masks = [t.to(self.device) for t in masks]
        y = torch.stack([m.labels[i] for m, i in zip(self.models, idx)])
        return x.view(K, B, *x.shape[1:]), masks, y

    def train_step(self, idx: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of all K models on batch indices idx[k]; returns per-model (loss, train accuracy)."""
        x, masks, y = self._views(idx)
        logits = self.forward(self.template, self.params.views(), x, masks)  # (K, B, classes)
        K, B, C = logits.shape
        loss = F.cross_entropy(logits.reshape(K * B, C), y.reshape(K * B), reduction="none",
                               label_smoothing=self.label_smoothing).view(K, B).mean(1)
        if not bool(torch.isfinite(loss).all()):
            bad = [k for k in range(K) if not torch.isfinite(loss[k])]
            raise TrainingDiverged(
                f"{PHASE}: loss became {loss[bad[0]].item()} for batched model {bad[0]} at epoch {self.epoch + 1}, "
                f"step {self.step % self.steps_per_epoch + 1}; training stopped, and only what finished epochs "
                f"wrote is kept; try a lower learning rate or --set {PHASE}.grad_clip=1.0")
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # model k's weights get the gradient of its own loss only
        if self.cfg.grad_clip > 0:
            clip_per_model(self.params.store, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        acc = (logits.detach().argmax(-1) == y).float().mean(1)
        return loss.detach(), acc

    def train(self, stop_requested: Callable[[], bool] = lambda: False) -> list[TrainState]:
        """Train to ``cfg.epochs``; writes each model's weights into its classifier at the end.
        Returns each model's TrainState (history: the engine's per-epoch records)."""
        from mnist_ssl.engine.callbacks import TrainingInterrupted

        for epoch in range(self.epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            orders = [torch.randperm(self.n, generator=m.generator).to(self.device).split(self.cfg.batch_size)
                      for m in self.models]
            loss_sum = torch.zeros(self.K)
            acc_sum = torch.zeros(self.K)
            for step_in_epoch in range(self.steps_per_epoch):
                if stop_requested():
                    raise TrainingInterrupted(PHASE, epoch + 1)
                idx = [o[step_in_epoch] for o in orders]
                loss, acc = self.train_step(idx)
                b = idx[0].numel()
                loss_sum += loss * b
                acc_sum += acc * b
                for k, m in enumerate(self.models):
                    for cb in m.callbacks:
                        if hasattr(cb, "on_step"):
                            cb.on_step(None)
            self.epoch = epoch + 1
            elapsed = round(time.perf_counter() - t0, 4)
            for k, m in enumerate(self.models):
                record = {"phase": PHASE, "epoch": self.epoch, "epochs": self.cfg.epochs,
                          "loss": (loss_sum[k] / self.n).item(),
                          "terms": {"ce": (loss_sum[k] / self.n).item(), "train_acc": (acc_sum[k] / self.n).item()},
                          "lr": self.optimizer.param_groups[0]["lr"], "time_s": elapsed, "batched_models": self.K}
                m.history.append(record)
                if m.callbacks:
                    self._epoch_callbacks(k, record)
        states = []
        for k, m in enumerate(self.models):
            self.params.unstack_into(k, m.classifier)
            m.classifier.eval()
            states.append(TrainState(PHASE, Supervised(m.classifier, self.label_smoothing), self.optimizer,
                                     self.scheduler, self.cfg.epochs, self.steps_per_epoch,
                                     epoch=self.epoch, step=self.step, history=m.history))
        return states

    def _epoch_callbacks(self, k: int, record: dict) -> None:
        """Model k's callbacks, with its TrainState and its generator as torch's global RNG (which
        is what the one-model engine's resume state saves)."""
        state = _model_state(self, k)
        outer = torch.get_rng_state()
        torch.set_rng_state(self.models[k].generator.get_state())
        try:
            for cb in self.models[k].callbacks:
                cb.on_epoch_end(state, record)
        finally:
            torch.set_rng_state(outer)


# ----- from run configs ---------------------------------------------------------
def why_not_batched(cfgs: list) -> str | None:
    """Why the fine-tuning of these runs (RunConfigs) cannot share steps, or None when it can:
    one method's seeds with the same recipe, model and augmentation, no torch.compile and no
    attention dropout."""
    first = cfgs[0]
    if len(cfgs) < 2:
        return "only one run"
    for name in ("method", "finetune", "finetune_augment", "model", "data", "compile"):
        if any(getattr(c, name) != getattr(first, name) for c in cfgs):
            return f"the runs differ in {name}"
    if first.compile:
        return "torch.compile runs one model at a time"
    if first.model.attn_dropout > 0:
        return "attention dropout is drawn inside SDPA"
    return None


def from_runs(cfgs: list, classifiers: list[ViTClassifier], images: list[torch.Tensor],
              labels: list[torch.Tensor], callbacks: list[list] | None = None,
              ft: OptimConfig | None = None) -> BatchedFinetune:
    """The batched fine-tuning of runs ``cfgs`` (RunConfigs accepted by :func:`why_not_batched`),
    as the one-model fine-tuning of each would run: its recipe (or ``ft``, e.g. label-efficiency's
    budget), augmentation, clips, seed."""
    first = cfgs[0]
    ft = ft or first.finetune
    clip = None
    if first.model.frames > 1:
        from mnist_ssl.data.clips import make_clips

        frames, mode = first.model.frames, first.videomae.clip_mode

        def clip(x, generator):
            return make_clips(x, frames, mode, generator=generator)

    return BatchedFinetune(classifiers, images, labels, [c.seed for c in cfgs], ft,
                           first.finetune_augment, label_smoothing=ft.label_smoothing,
                           clip=clip, callbacks=callbacks)
