"""Parametric ResNet design space: a frozen spec, its builder and its exact analytic complexity."""

from .io import load, save
from .resnet import Complexity, ResNet, build, complexity
from .spec import ArchSpec

__all__ = ["ArchSpec", "Complexity", "ResNet", "build", "complexity", "load", "save"]
