"""mnist-ssl: self-supervised Vision Transformers on MNIST-family images."""

__version__ = "0.1.0"
