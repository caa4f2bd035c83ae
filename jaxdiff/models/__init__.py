"""Denoising and restoration networks (stateless Flax Linen modules)."""

from jaxdiff.models.cnn import CNN
from jaxdiff.models.factory import build_model

__all__ = ["CNN", "build_model"]
