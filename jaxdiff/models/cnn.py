"""The course's starter denoiser, reproduced faithfully as a stateless Linen module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.models.layers import Conv, Dense, PlaneLayerNorm, gelu, starter_time_features


class CNNBlock(nn.Module):
    """Conv(k, same) -> LayerNorm -> GELU, as the starter's ``CNNBlock``.

    Attributes:
        features: Output channels.
        kernel_size: Convolution kernel size.
        ln_over_channels: Use the (C, H, W) LayerNorm variant instead of the template's.
        dtype: Compute dtype.
        conv_impl: Convolution implementation name.
    """

    features: int
    kernel_size: int = 7
    ln_over_channels: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to ``x`` of shape ``(B, H, W, C)``."""
        x = Conv(self.features, self.kernel_size, dtype=self.dtype, impl=self.conv_impl)(x)
        return PlaneLayerNorm(over_channels=self.ln_over_channels, fuse_gelu=True)(x)


class CNN(nn.Module):
    """The starter ``CNN``: a stack of full-resolution conv blocks plus a time MLP.

    ``CNN(n_hidden=(16, 32, 32, 16), kernel_size=7, last_kernel_size=3)`` with the time
    embedding (32 sinusoidal features -> 128 -> 128 -> 128 -> ``n_hidden[0]``, GELU between)
    broadcast-added to the output of the first block; no skips, no resampling.

    Attributes:
        n_hidden: Channels of each block.
        kernel_size: Kernel of the blocks.
        last_kernel_size: Kernel of the final (linear) convolution.
        out_channels: Output channels (1 for MNIST).
        ln_over_channels: LayerNorm over (C, H, W) instead of the template's (H, W).
        dtype: Compute dtype (``bfloat16`` for mixed precision); parameters stay ``float32``.
        conv_impl: Convolution implementation (see :mod:`jaxdiff.kernels.registry`).
    """

    n_hidden: Sequence[int] = (16, 32, 32, 16)
    kernel_size: int = 7
    last_kernel_size: int = 3
    out_channels: int = 1
    ln_over_channels: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Predict noise (or a clean image) from ``x`` ``(B, 28, 28, C)`` and ``t`` ``(B,)``.

        Args:
            x: Noisy images, NHWC.
            t: Times as fractions ``t / T`` in [0, 1].

        Returns:
            Output ``(B, 28, 28, out_channels)`` in ``float32``.
        """
        kw = dict(
            kernel_size=self.kernel_size,
            ln_over_channels=self.ln_over_channels,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
        )
        h = CNNBlock(self.n_hidden[0], **kw)(x)
        emb = starter_time_features(t)
        for width in (128, 128, 128):
            emb = gelu(Dense(width, dtype=self.dtype)(emb))
        emb = Dense(self.n_hidden[0], dtype=self.dtype)(emb)
        h = h + emb[:, None, None, :].astype(h.dtype)
        for width in self.n_hidden[1:]:
            h = CNNBlock(width, **kw)(h)
        out = Conv(self.out_channels, self.last_kernel_size, dtype=self.dtype, impl=self.conv_impl)(
            h
        )
        return out.astype(jnp.float32)
