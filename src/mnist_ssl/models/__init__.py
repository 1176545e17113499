"""The shared ViT encoder, its building blocks and heads."""

from mnist_ssl.models.layers import Attention, Block, FeedForward
from mnist_ssl.models.patch_embed import PatchEmbed
from mnist_ssl.models.vit import ViTClassifier, ViTEncoder

__all__ = ["Attention", "Block", "FeedForward", "PatchEmbed", "ViTClassifier", "ViTEncoder"]
