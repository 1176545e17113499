"""Training objectives around the shared encoder, and their registry."""

from mnist_ssl.objectives.base import Objective, ObjectiveOutput
from mnist_ssl.objectives.registry import METHODS, build_objective, get_method, method_names

__all__ = ["METHODS", "Objective", "ObjectiveOutput", "build_objective", "get_method", "method_names"]
