"""Parametric ResNet design space: a frozen spec, its builder and its exact analytic complexity."""

from .resnet import Complexity, ResNet, build, complexity
from .spec import ArchSpec

__all__ = ["ArchSpec", "Complexity", "ResNet", "build", "complexity"]
