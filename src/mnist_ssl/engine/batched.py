"""K training runs of one shape trained as one model: weights with a leading model dimension.

Fine-tuning (:class:`BatchedFinetune`, every method) and MAE pretraining
(:class:`BatchedMAEPretrain`, either masking) share one trainer, :class:`BatchedTrainer`; what
differs is the task: its loss on the stacked weights and the random draws it makes per model.

A fine-tuning step at the default size (batch 8, width 64) is bound by per-step overhead
(Python, dispatch, many small kernels), not by arithmetic. The seeds of one method are the
same program on other samples and initialisations, so K of them can share each step: every
weight gets a leading model dimension (K, ...), every linear layer becomes one batched matrix
product (``torch.baddbmm``), and one backward pass and one optimiser step serve all K.

What stays per model, so that model k's run does not depend on which models share its step:

- its sample (images, labels) and initialisation (the classifier it was given, LP-FT head included);
- its random draws: batch order, augmentation, MAE's masking noise and dropout masks come
  from model k's own ``torch.Generator``, drawn outside the batched forward pass and passed in.
  The generator is seeded as the one-model engine seeds torch's global RNG (``seed + 1`` for
  fine-tuning, ``seed`` for pretraining) and draws in the same order with the same functions,
  so model k sees the numbers the one-model run sees;
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



# ----- per-model random draws ---------------------------------------------------
def _mask_shapes(cfg, batch: int, tokens: int | None = None) -> list[tuple[int, ...]]:
    """The shapes of one model's dropout masks for one step, in the order its encoder draws
    them: the token dropout, then per block the attention output's, the feed-forward hidden
    layer's and its output's. ``tokens``: the sequence length (default: CLS and every patch)."""
    tokens = 1 + cfg.num_patches if tokens is None else tokens
    hidden = int(cfg.dim * cfg.mlp_ratio)
    shapes = [(batch, tokens, cfg.dim)]
    for _ in range(cfg.depth):
        shapes += [(batch, tokens, cfg.dim), (batch, tokens, hidden), (batch, tokens, cfg.dim)]
    return shapes


def dropout_masks(cfg, batch: int, generators: list[torch.Generator],
                  tokens: int | None = None) -> list[torch.Tensor] | None:
    """The K models' dropout masks for one step, each stacked to (K, *shape); None when dropout
    is off (the encoder draws nothing then). Model k's random words come from generators[k] in
    one draw: the words each of its masks would draw in turn (``random_`` fills serially, so one
    long draw gives the same words as the encoder's consecutive ones)."""
    p = cfg.dropout
    if p == 0.0:
        return None
    shapes = _mask_shapes(cfg, batch, tokens)
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


def _patch_tokens(enc, P: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ViTEncoder.tokens for K models: images x (K, B, C, H, W) in [0, 1] -> (K, B, N, D), the
    patch embeddings plus positions (``enc``: one encoder of the shape, for its config and a
    fixed sin-cos table)."""
    c = enc.cfg
    K, B = x.shape[:2]
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
        return tokens + pos.unsqueeze(1)
    return tokens + enc.pos_embed()


def _blocks(P: dict[str, torch.Tensor], h: torch.Tensor, prefix: str, depth: int, heads: int,
            m=None) -> torch.Tensor:
    """Pre-norm transformer blocks ``prefix{i}.`` (models/layers.py Block) on h (K, B, T, D);
    m: an iterator over the dropout masks (each (K, B, T, ...)) in the order Block draws them, or None."""
    K, B, T, D = h.shape
    for i in range(depth):
        b = f"{prefix}{i}."
        y = _layer_norm(h, P[b + "norm1.weight"], P[b + "norm1.bias"])
        qkv = _linear(y, P[b + "attn.qkv.weight"], P[b + "attn.qkv.bias"])
        qkv = qkv.reshape(K * B, T, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(K, B, T, D)
        a = _linear(a, P[b + "attn.proj.weight"], P[b + "attn.proj.bias"])
        h = h + (a * next(m) if m is not None else a)
        y = _layer_norm(h, P[b + "norm2.weight"], P[b + "norm2.bias"])
        y = F.gelu(_linear(y, P[b + "mlp.fc1.weight"], P[b + "mlp.fc1.bias"]))
        if m is not None:
            y = y * next(m)
        y = _linear(y, P[b + "mlp.fc2.weight"], P[b + "mlp.fc2.bias"])
        h = h + (y * next(m) if m is not None else y)
    return h


def _encode(enc, P: dict[str, torch.Tensor], tokens: torch.Tensor, m=None) -> torch.Tensor:
    """ViTEncoder.encode after the tokens: CLS, token dropout, blocks, final norm. (K, B, T, D)."""
    K, B, _, D = tokens.shape
    cls = P["encoder.cls_token"].view(K, 1, 1, D).expand(K, B, 1, D)
    h = torch.cat([cls, tokens], dim=2)  # (K, B, 1 + T, D)
    if m is not None:
        h = h * next(m)
    h = _blocks(P, h, "encoder.blocks.", enc.cfg.depth, enc.cfg.heads, m)
    return _layer_norm(h, P["encoder.norm.weight"], P["encoder.norm.bias"])


def forward_batched(template: ViTClassifier, params: dict[str, torch.Tensor], x: torch.Tensor,
                    masks: list[torch.Tensor] | None) -> torch.Tensor:
    """Logits (K, B, num_classes) of K classifiers shaped like ``template`` on images x (K, B, C, H, W).

    params: the classifiers' weights stacked, ``template.named_parameters()`` names, shapes (K, ...);
    the position table comes from ``template`` when it is fixed (sin-cos, a buffer).
    masks: the dropout masks of :func:`dropout_masks`, each stacked to (K, ...), or None.
    The maths of ViTClassifier.forward: patch embedding, CLS, positions, pre-norm blocks, norm, head.
    """
    enc = template.encoder
    h = _encode(enc, params, _patch_tokens(enc, params, x), iter(masks) if masks is not None else None)
    return _linear(h[:, :, 0], params["head.weight"], params["head.bias"])


def mae_forward_batched(template, params: dict[str, torch.Tensor], x: torch.Tensor, noise: torch.Tensor,
                        masks: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The MAE objective (objectives/mae.py) of K models shaped like ``template`` (an MAE):
    images x (K, B, C, H, W) in [0, 1], masking noise (K, B, N) -> (per-model losses (K,),
    masks (K, B, N)). The maths of MAE.forward: the noise's shuffle keeps the visible patches
    (drop masking: the encoder sees only them, the decoder inserts its mask token) or zeroes
    the others (the document's zero masking, a linear reconstruction of every token)."""
    from mnist_ssl.objectives.mae import masked_reconstruction_loss, masking_from_noise, patch_targets

    enc, cfg = template.encoder, template.cfg
    K, B = x.shape[:2]
    N = enc.num_patches
    keep_idx, mask, restore_idx = masking_from_noise(noise.reshape(K * B, N), template.num_keep)
    m = iter(masks) if masks is not None else None
    if template.zero_masking:
        flat = x.reshape(K * B, *x.shape[2:])
        visible = enc.unpatchify(enc.patchify(flat) * (1 - mask).unsqueeze(-1)).view_as(x)
        latent = _encode(enc, params, _patch_tokens(enc, params, visible), m)
        pred = _linear(latent[:, :, 1:], params["decoder.weight"], params["decoder.bias"])
    else:
        tokens = _patch_tokens(enc, params, x)
        keep = keep_idx.view(K, B, -1)
        tokens = torch.gather(tokens, 2, keep.unsqueeze(-1).expand(-1, -1, -1, tokens.shape[-1]))
        latent = _encode(enc, params, tokens, m)
        dec = template.decoder
        y = _linear(latent, params["decoder.embed.weight"], params["decoder.embed.bias"])
        Dd = y.shape[-1]
        cls, vis = y[:, :, :1], y[:, :, 1:]
        fill = params["decoder.mask_token"].view(K, 1, 1, Dd).expand(K, B, N - vis.shape[2], Dd)
        y = torch.cat([vis, fill], dim=2)
        y = torch.gather(y, 2, restore_idx.view(K, B, N, 1).expand(-1, -1, -1, Dd))
        y = torch.cat([cls, y + dec.pos_embed()], dim=2)
        y = _blocks(params, y, "decoder.blocks.", len(dec.blocks), cfg.decoder_heads)
        y = _layer_norm(y, params["decoder.norm.weight"], params["decoder.norm.bias"])
        pred = _linear(y, params["decoder.pred.weight"], params["decoder.pred.bias"])[:, :, 1:]
    target = patch_targets(enc.patchify(x.reshape(K * B, *x.shape[2:])), template.norm_pix)
    mask = mask.view(K, B, N)
    losses = torch.stack([masked_reconstruction_loss(pred[k], target.view(K, B, N, -1)[k], mask[k], cfg.loss)
                          for k in range(K)])
    return losses, mask


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
    """The trainable weights of K same-shaped networks (classifiers, MAE objectives), one leaf
    tensor (K, padded numel) per parameter name; ``views()`` gives them as (K, *shape) tensors
    that autograd traces back."""

    def __init__(self, classifiers: list[torch.nn.Module]) -> None:
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


def _optimizer(task, template: torch.nn.Module, params: StackedParams, cfg: OptimConfig,
               device: torch.device) -> torch.optim.Optimizer:
    """The engine's optimiser (optim.make_optimizer: the same groups, rates, decay, fused kernel)
    over the stacked weights: groups are made on one model's objective, each parameter swapped
    for its stack (which parameters decay is decided on one model's shapes, not the stacked ones)."""
    wrapped = task.objective(template)
    name_of = {id(p): n[len(task.prefix):] for n, p in wrapped.named_parameters()}
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


# ----- what is trained: the phase's objective, batched -------------------------------
class FinetuneTask:
    """Fine-tuning: cross-entropy of K classifiers (Supervised), dropout masks drawn per model."""

    phase = "finetune"
    prefix = "classifier."  # Supervised's parameter names over the classifier's
    generator_offset = 1  # the engine seeds fine-tuning with seed + 1

    def __init__(self, template: ViTClassifier, label_smoothing: float = 0.0, forward: str = "bmm") -> None:
        if template.cfg.attn_dropout > 0:
            raise ValueError("batched training does not support model.attn_dropout > 0 (drawn inside SDPA)")
        self.template = template
        self.label_smoothing = label_smoothing
        self.forward = FORWARDS[forward]

    def objective(self, net: ViTClassifier):
        return Supervised(net, self.label_smoothing)

    def net(self, objective) -> ViTClassifier:
        return objective.classifier

    def draws(self, batch: int, generators: list[torch.Generator]) -> dict:
        return {"masks": dropout_masks(self.template.cfg, batch, generators)}

    def loss(self, params: dict, x: torch.Tensor, y: torch.Tensor, draws: dict):
        """-> (per-model losses (K,), per-model terms {name: (K,)})."""
        logits = self.forward(self.template, params, x, draws["masks"])  # (K, B, classes)
        K, B, C = logits.shape
        loss = F.cross_entropy(logits.reshape(K * B, C), y.reshape(K * B), reduction="none",
                               label_smoothing=self.label_smoothing).view(K, B).mean(1)
        acc = (logits.detach().argmax(-1) == y).float().mean(1)
        return loss, {"ce": loss.detach(), "train_acc": acc}


class MAEPretrainTask:
    """MAE pretraining (objectives/mae.py, either masking) of K objectives: per model, its masking
    noise, then its encoder's dropout masks (over the visible tokens), as MAE.forward draws them."""

    phase = "pretrain"
    prefix = ""  # the stacked networks are the objectives themselves
    generator_offset = 0  # the engine seeds pretraining with the run's seed

    def __init__(self, template) -> None:
        from mnist_ssl.objectives.mae import MAE

        if type(template) is not MAE:
            raise ValueError(f"batched pretraining is written for MAE only, not {type(template).__name__}")
        if template.encoder.cfg.attn_dropout > 0:
            raise ValueError("batched training does not support model.attn_dropout > 0 (drawn inside SDPA)")
        self.template = template

    def objective(self, net):
        return net

    def net(self, objective):
        return objective

    def draws(self, batch: int, generators: list[torch.Generator]) -> dict:
        enc = self.template.encoder
        noise = torch.stack([torch.rand(batch, enc.num_patches, generator=g) for g in generators])
        tokens = 1 + (enc.num_patches if self.template.zero_masking else self.template.num_keep)
        return {"noise": noise, "masks": dropout_masks(enc.cfg, batch, generators, tokens)}

    def loss(self, params: dict, x: torch.Tensor, y, draws: dict):
        loss, _ = mae_forward_batched(self.template, params, x, draws["noise"].to(x.device), draws["masks"])
        return loss, {"mae": loss.detach()}


# ----- one model's view of the batched run: its TrainState, for callbacks and resume ----
@dataclass
class _Model:
    net: torch.nn.Module  # a classifier (fine-tuning) or an objective (pretraining)
    images: torch.Tensor
    labels: torch.Tensor | None
    generator: torch.Generator
    callbacks: list
    history: list

    @property
    def classifier(self) -> torch.nn.Module:  # the name fine-tuning's callers know it by
        return self.net


def _model_state(run: "BatchedTrainer", k: int) -> TrainState:
    """Model k alone as the one-model engine's TrainState: its weights copied into its network,
    an optimiser over them holding its slice of the moments, the schedule at the same step."""
    mdl = run.models[k]
    run.params.unstack_into(k, mdl.net)
    module = run.task.objective(mdl.net)
    opt = make_optimizer(module, run.cfg, run.device)
    sched = make_schedule(opt, run.cfg, run.steps_per_epoch)
    name_of = {id(p): n[len(run.task.prefix):] for n, p in module.named_parameters()}
    for g, sg in zip(opt.param_groups, run.optimizer.param_groups):
        g.update({key: v for key, v in sg.items() if key != "params"})
        for p in g["params"]:
            name = name_of[id(p)]
            stacked = run.optimizer.state.get(run.params.store[name])
            if stacked:
                opt.state[p] = {key: (run.params.of(v, name)[k].clone() if torch.is_tensor(v) and v.dim() > 0
                                      else (v.clone() if torch.is_tensor(v) else v)) for key, v in stacked.items()}
    sched.load_state_dict(run.scheduler.state_dict())
    return TrainState(run.phase, module, opt, sched, run.cfg.epochs, run.steps_per_epoch,
                      epoch=run.epoch, step=run.step, history=mdl.history)


def _restore_model(run: "BatchedTrainer", k: int, saved: dict) -> None:
    """Load model k's resume state (engine/resume.py format) into its slices and its generator."""
    from mnist_ssl.engine.resume import restore_train_state

    state = _model_state(run, k)
    outer = torch.get_rng_state()
    restore_train_state(state, saved)  # sets torch's global RNG to the model's saved state
    run.models[k].generator.set_state(torch.get_rng_state())
    torch.set_rng_state(outer)
    module = state.module
    run.params.load_model(k, run.task.net(module))
    name_of = {id(p): n[len(run.task.prefix):] for n, p in module.named_parameters()}
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


@dataclass
class _StepState:
    phase: str
    step: int
    stop_requested: Callable[[], bool]


class BatchedTrainer:
    """One training phase of K networks of one shape in one batched step (see the module doc).

    task: what is trained (:class:`FinetuneTask`, :class:`MAEPretrainTask`); nets: the K
    networks the task trains (classifiers, objectives); images: K uint8 (N, C, H, W) samples of
    one size N; labels: K (N,) class-index tensors, or None without labels; seeds: the runs'
    seeds (model k's generator starts where the engine seeds the phase); cfg: the shared
    OptimConfig; augment: the phase's AugmentConfig; clip: the clip builder
    ``f(x, generator)`` of video models, or None; callbacks: per model, the engine's callbacks
    (JSONL log, printer, ResumeWriter), called with model k's TrainState.
    """

    def __init__(self, task, nets: list[torch.nn.Module], images: list[torch.Tensor],
                 labels: list[torch.Tensor] | None, seeds: list[int], cfg: OptimConfig, augment: AugmentConfig, *,
                 clip: Callable | None = None, callbacks: list[list] | None = None) -> None:
        if not nets:
            raise ValueError("batched training needs at least one model")
        sizes = {len(x) for x in images}
        if len(sizes) != 1:
            raise ValueError(f"the batched models need samples of one size, got {sorted(sizes)}")
        shapes = [[tuple(p.shape) for p in c.parameters()] for c in nets]
        cfgs = [(c.encoder.cfg, c.cfg) for c in nets]  # the encoder's, and an objective's own (MAE's ratio, loss)
        if any(s != shapes[0] for s in shapes) or any(c != cfgs[0] for c in cfgs):
            raise ValueError("the batched models must have the same architecture")
        self.task = task
        self.phase = task.phase
        self.template = nets[0]
        self.cfg = cfg
        self.device = images[0].device
        self.n = sizes.pop()
        self.steps_per_epoch = -(-self.n // cfg.batch_size)
        labels = labels if labels is not None else [None] * len(nets)
        self.models = [
            _Model(c, x, y, torch.Generator().manual_seed(s + task.generator_offset), list(cbs), [])
            for c, x, y, s, cbs in zip(nets, images, labels, seeds, callbacks or [[] for _ in nets])
        ]
        self.augment = (PerModelAugmenter(augment, [m.generator for m in self.models])
                        if augment.enabled else None)
        self.clip = clip
        self.params = StackedParams(nets)
        self.optimizer = _optimizer(task, self.template, self.params, cfg, self.device)
        self.scheduler = make_schedule(self.optimizer, cfg, self.steps_per_epoch)
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
    def _views(self, idx: list[torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
        """Per model, in its generator's order: the augmented batch, then the task's draws."""
        K, B = self.K, len(idx[0])
        x = torch.cat([m.images[i] for m, i in zip(self.models, idx)]).float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        if self.clip is not None:
            x = torch.cat([self.clip(part, m.generator) for part, m in zip(x.split(B), self.models)])
        draws = self.task.draws(B, [m.generator for m in self.models])
        if draws.get("masks") is not None:
            draws["masks"] = [t.to(self.device) for t in draws["masks"]]
        y = (torch.stack([m.labels[i] for m, i in zip(self.models, idx)])
             if self.models[0].labels is not None else None)
        return x.view(K, B, *x.shape[1:]), draws, y

    def train_step(self, idx: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """One step of all K models on batch indices idx[k]; returns per-model (loss, terms)."""
        x, draws, y = self._views(idx)
        loss, terms = self.task.loss(self.params.views(), x, y, draws)
        if not bool(torch.isfinite(loss).all()):
            bad = [k for k in range(self.K) if not torch.isfinite(loss[k])]
            raise TrainingDiverged(
                f"{self.phase}: loss became {loss[bad[0]].item()} for batched model {bad[0]} at epoch "
                f"{self.epoch + 1}, step {self.step % self.steps_per_epoch + 1}; training stopped, and only what "
                f"finished epochs wrote is kept; try a lower learning rate or --set {self.phase}.grad_clip=1.0")
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # model k's weights get the gradient of its own loss only
        if self.cfg.grad_clip > 0:
            clip_per_model(self.params.store, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.detach(), terms

    def train(self, stop_requested: Callable[[], bool] = lambda: False) -> list[TrainState]:
        """Train to ``cfg.epochs``; writes each model's weights into its network at the end.
        Returns each model's TrainState (history: the engine's per-epoch records)."""
        from mnist_ssl.engine.callbacks import TrainingInterrupted

        for epoch in range(self.epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            orders = [torch.randperm(self.n, generator=m.generator).to(self.device).split(self.cfg.batch_size)
                      for m in self.models]
            loss_sum = torch.zeros(self.K)
            term_sums: dict[str, torch.Tensor] = {}
            for step_in_epoch in range(self.steps_per_epoch):
                if stop_requested():
                    raise TrainingInterrupted(self.phase, epoch + 1)
                idx = [o[step_in_epoch] for o in orders]
                loss, terms = self.train_step(idx)
                b = idx[0].numel()
                loss_sum += loss * b
                for name, v in terms.items():
                    term_sums[name] = term_sums.get(name, 0) + v.float() * b
                # What a step callback reads of the one-model TrainState (the progress bar counts,
                # ResumeWriter's test hold waits at a phase's step until a stop is requested).
                tick = _StepState(self.phase, self.step, stop_requested)
                for k, m in enumerate(self.models):
                    for cb in m.callbacks:
                        if hasattr(cb, "on_step"):
                            cb.on_step(tick)
            self.epoch = epoch + 1
            elapsed = round(time.perf_counter() - t0, 4)
            for k, m in enumerate(self.models):
                record = {"phase": self.phase, "epoch": self.epoch, "epochs": self.cfg.epochs,
                          "loss": (loss_sum[k] / self.n).item(),
                          "terms": {name: (v[k] / self.n).item() for name, v in term_sums.items()},
                          "lr": self.optimizer.param_groups[0]["lr"], "time_s": elapsed, "batched_models": self.K}
                m.history.append(record)
                if m.callbacks:
                    self._epoch_callbacks(k, record)
        states = []
        for k, m in enumerate(self.models):
            self.params.unstack_into(k, m.net)
            module = self.task.objective(m.net)
            module.eval()
            states.append(TrainState(self.phase, module, self.optimizer, self.scheduler, self.cfg.epochs,
                                     self.steps_per_epoch, epoch=self.epoch, step=self.step, history=m.history))
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


class BatchedFinetune(BatchedTrainer):
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
        task = FinetuneTask(classifiers[0], label_smoothing, forward)
        self.label_smoothing = label_smoothing
        self.forward = task.forward
        super().__init__(task, classifiers, images, labels, seeds, cfg, augment, clip=clip, callbacks=callbacks)


class BatchedMAEPretrain(BatchedTrainer):
    """MAE pretraining of K objectives of one shape in one batched step: model k draws its batch
    order, augmentation, masking noise and dropout masks from its own generator, seeded with its
    run's seed as the engine seeds pretraining, in the engine's order."""

    def __init__(self, objectives: list, images: list[torch.Tensor], seeds: list[int], cfg: OptimConfig,
                 augment: AugmentConfig, *, callbacks: list[list] | None = None) -> None:
        if not objectives:
            raise ValueError("BatchedMAEPretrain needs at least one objective")
        super().__init__(MAEPretrainTask(objectives[0]), objectives, images, None, seeds, cfg, augment,
                         callbacks=callbacks)


# ----- from run configs ---------------------------------------------------------
def why_not_batched(cfgs: list) -> str | None:
    """Why the fine-tuning of these runs (RunConfigs) cannot share steps, or None when it can:
    one method's seeds with the same recipe, model and augmentation, no torch.compile and no
    attention dropout."""
    if len(cfgs) < 2:
        return "only one run"
    return _why_not_shared(cfgs, ("method", "finetune", "finetune_augment", "model", "data", "compile"))


def _why_not_shared(cfgs: list, sections: tuple[str, ...]) -> str | None:
    """What keeps runs from sharing steps whatever the phase: a config section that differs,
    torch.compile, attention dropout (drawn inside SDPA); None when nothing does."""
    first = cfgs[0]
    for name in sections:
        if any(getattr(c, name) != getattr(first, name) for c in cfgs):
            return f"the runs differ in {name}"
    if first.compile:
        return "torch.compile runs one model at a time"
    if first.model.attn_dropout > 0:
        return "attention dropout is drawn inside SDPA"
    return None


def why_not_batched_pretraining(cfgs: list) -> str | None:
    """Why the pretraining of these runs (RunConfigs) cannot share steps, or None when it can:
    MAE's seeds (either masking) with the same recipe, model, augmentation and data, no
    torch.compile and no attention dropout. The other objectives pretrain one model a step.
    A lone run is accepted too: a group's seeds pretrain batched in parts (one per worker), and
    model k's numbers do not depend on how many share its steps."""
    if cfgs[0].method != "mae":
        return f"batched pretraining is written for MAE only, not {cfgs[0].method}"
    return _why_not_shared(cfgs, ("method", "pretrain", "pretrain_augment", "mae", "model", "data", "compile"))


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
