"""The one ViT encoder every method shares, and the classifier built on it.

Objectives use only the public API below (``patchify``, ``unpatchify``,
``as_clip``, ``encode``, ``forward``, ``num_patches``, ``patch_dim``, ``dim``),
never the encoder's submodules, so the encoder can change without breaking them.
"""

from __future__ import annotations

import torch
from torch import nn

from mnist_ssl.config import ModelConfig
from mnist_ssl.models.layers import Attention, Block, Dropout, init_weights
from mnist_ssl.models.patch_embed import PatchEmbed, PositionEmbedding


class ViTEncoder(nn.Module):
    """Conv patch embedding + CLS token + position embedding + pre-norm blocks + LayerNorm.

    Inputs are images (B, C, H, W) or clips (B, C, T, H, W); an image given to a
    model of ``frames`` > 1 is replicated into that many frames (the source
    document's clip construction), so evaluation needs no clip code.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.dim = cfg.dim
        self.num_patches = cfg.num_patches
        self.patch_dim = cfg.patch_dim
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.dim, cfg.patch_size, cfg.tubelet)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = PositionEmbedding(cfg.dim, cfg.grid, cfg.frames // cfg.tubelet, cfg.pos_embed)
        self.pos_drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.attn_dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.apply(init_weights)
        nn.init.normal_(self.cls_token, std=0.02)

    def set_dropout(self, dropout: float, attn_dropout: float) -> None:
        """Change the dropout rates of a built (e.g. loaded) encoder; they hold no weights,
        so fine-tuning may use other rates than pretraining did."""
        for module in self.modules():
            if isinstance(module, Dropout):
                module.p = dropout
            elif isinstance(module, Attention):
                module.attn_dropout = attn_dropout
        self.cfg.dropout, self.cfg.attn_dropout = dropout, attn_dropout

    # ----- inputs --------------------------------------------------------
    def as_clip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (B, C, T, H, W) -> (B, C, T, H, W) with T = cfg.frames."""
        c = self.cfg
        if x.dim() == 4:
            x = x.unsqueeze(2).expand(-1, -1, c.frames, -1, -1)
        if x.dim() != 5 or x.shape[1:] != (c.in_chans, c.frames, c.image_size, c.image_size):
            raise ValueError(
                f"expected images (B, {c.in_chans}, {c.image_size}, {c.image_size}) or clips "
                f"(B, {c.in_chans}, {c.frames}, {c.image_size}, {c.image_size}), got {tuple(x.shape)}"
            )
        return x

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Images or clips -> patches (B, N, t*p*p*C), in token order (time, row, col)."""
        c = self.cfg
        x = self.as_clip(x)
        B, C, T, H, W = x.shape
        t, p, g = c.tubelet, c.patch_size, c.grid
        x = x.reshape(B, C, T // t, t, g, p, g, p)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # B, T', gh, gw, t, p, p, C
        return x.reshape(B, (T // t) * g * g, t * p * p * C)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`: (B, N, t*p*p*C) -> (B, C, T, H, W), or (B, C, H, W) for one frame."""
        c = self.cfg
        B = patches.shape[0]
        t, p, g, C = c.tubelet, c.patch_size, c.grid, c.in_chans
        x = patches.reshape(B, c.frames // t, g, g, t, p, p, C)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(B, C, c.frames, g * p, g * p)
        return x[:, :, 0] if c.frames == 1 else x

    # ----- encoding ------------------------------------------------------
    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None,
               mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens with position embedding, no CLS: (B, N, D). x holds pixels in [0, 1].

        mask: optional (B, N) bool; the embeddings of its True patches are replaced by
        ``mask_token`` (D,) before the positions are added (BEiT's and iBOT's masked input)."""
        x = (self.as_clip(x) - self.cfg.pixel_mean) / self.cfg.pixel_std
        emb = self.patch_embed(x)
        if mask is not None:
            emb = torch.where(mask.unsqueeze(-1), mask_token.to(emb.dtype), emb)
        return emb + self.pos_embed()

    def encode(self, x: torch.Tensor, keep_idx: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Encode images or clips; returns (B, 1 + N_kept, D), CLS first, after the final norm.

        keep_idx: optional (B, N_kept) long tensor of patch indices to keep
        (the MAE paper's visible tokens); the others are never seen by the encoder.
        mask, mask_token: patches whose embedding is a learned token instead (:meth:`tokens`).
        """
        return self.encode_layers(x, 1, keep_idx, mask, mask_token)[0]

    def encode_layers(self, x: torch.Tensor, n: int, keep_idx: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The tokens after each of the last ``n`` blocks (all blocks when the encoder has fewer),
        each through the final norm (DINO's ``get_intermediate_layers``): a list of (B, 1 + N_kept, D),
        the last block's last; ``n=1`` is :meth:`encode`. The other arguments as :meth:`encode`'s."""
        tokens = self.tokens(x, mask, mask_token)
        if keep_idx is not None:
            tokens = torch.gather(tokens, 1, keep_idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        h = self.pos_drop(torch.cat([cls, tokens], dim=1))
        outputs = []
        for block in self.blocks:
            h = block(h)
            outputs.append(h)
        # A blockless encoder (tests strip the blocks) outputs its input sequence.
        return [self.norm(o) for o in (outputs[-n:] if outputs else [h])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """CLS features (B, D): what classifiers, probes and kNN use."""
        return self.encode(x)[:, 0]


class ViTClassifier(nn.Module):
    """Encoder + linear classification head on the CLS token. x -> logits (B, num_classes)."""

    def __init__(self, encoder: ViTEncoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.dim, num_classes)
        nn.init.zeros_(self.head.weight)  # start from uniform predictions
        nn.init.zeros_(self.head.bias)

    @property
    def cfg(self) -> ModelConfig:
        return self.encoder.cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
