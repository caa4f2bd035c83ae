"""Building blocks shared by the networks: PyTorch-style init, convolution, time embedding."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.kernels import get_conv
from jaxdiff.kernels.fused import gelu_erf, layer_norm_gelu

# PyTorch's default init for Conv2d/Linear: weights and biases ~ U(-1/sqrt(fan_in), +).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """Return PyTorch's default bias init ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    Args:
        fan_in: Number of inputs feeding each output unit.

    Returns:
        A Flax initializer ``(key, shape, dtype) -> array``.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv(nn.Module):
    """Same-padded, stride-1 convolution with PyTorch's init and a selectable kernel.

    Attributes:
        features: Output channels.
        kernel_size: Odd square kernel size (padding ``kernel_size // 2``, as the starter).
        dtype: Compute dtype (``float32`` or ``bfloat16``); parameters stay ``float32``.
        zero_init: Start kernel and bias at zero (e.g. a residual branch's last layer);
            otherwise the ``init`` scheme.
        impl: ``"auto"`` (the fastest for the backend), ``"xla"`` (reference) or another
            name registered in :mod:`jaxdiff.kernels.registry`.
        init: ``"torch"`` (PyTorch's default, the starter's) or ``"lecun"`` (LeCun-normal
            kernel, zero bias: Flax's default, the fidelity classifier's).
    """

    features: int
    kernel_size: int = 3
    dtype: Any = jnp.float32
    zero_init: bool = False
    impl: str = "auto"
    init: str = "torch"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the convolution to ``x`` of shape ``(B, H, W, Cin)``."""
        k = self.kernel_size
        cin = x.shape[-1]
        if self.zero_init:
            kinit, binit = nn.initializers.zeros, nn.initializers.zeros
        elif self.init == "lecun":
            kinit, binit = nn.initializers.lecun_normal(), nn.initializers.zeros
        elif self.init == "torch":
            kinit, binit = torch_kernel_init, torch_bias_init(k * k * cin)
        else:
            raise ValueError(f"unknown init {self.init!r}; use 'torch' or 'lecun'.")
        kernel = self.param("kernel", kinit, (k, k, cin, self.features))
        bias = self.param("bias", binit, (self.features,))
        y = get_conv(self.impl)(x.astype(self.dtype), kernel.astype(self.dtype))
        # float32 bias add: a bf16 bias-gradient reduction is a slow reduce-window on XLA CPU
        return (y.astype(jnp.float32) + bias).astype(y.dtype)


class Dense(nn.Module):
    """Linear layer with PyTorch's default init.

    Attributes:
        features: Output width.
        dtype: Compute dtype; parameters stay ``float32``.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply ``x @ kernel + bias``."""
        fan_in = x.shape[-1]
        return nn.Dense(
            self.features,
            dtype=self.dtype,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(fan_in),
        )(x)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as PyTorch's ``nn.GELU()`` default."""
    return gelu_erf(x)  # the same function; XLA's erfc is slow on CPU


def starter_frequencies() -> np.ndarray:
    """The starter's 16 time frequencies ``[0] + [2 pi 1.5**i for i < 15]`` (``float32``)."""
    return np.concatenate([[0.0], 2 * np.pi * 1.5 ** np.arange(15.0)]).astype(np.float32)


def starter_time_features(t: jax.Array) -> jax.Array:
    """The starter's sinusoidal time features.

    Args:
        t: Times in [0, 1] (``t / T``), shape ``(B,)``.

    Returns:
        ``(B, 32)``: ``[sin(t f), cos(t f) - 1]`` with ``f = [0] + [2 pi 1.5**i, i < 15]``.
    """
    freqs = jnp.asarray(starter_frequencies())
    tf = t[:, None].astype(jnp.float32) * freqs[None, :]
    return jnp.concatenate([jnp.sin(tf), jnp.cos(tf) - 1.0], axis=-1)


class PlaneLayerNorm(nn.Module):
    """The course template's LayerNorm: each channel normalised over its H x W plane.

    Equivalent to PyTorch ``nn.LayerNorm((H, W))`` on NCHW input: statistics per example and
    channel over the plane, and a per-pixel affine of shape ``(H, W)`` shared by channels.
    With ``over_channels=True`` it normalises over ``(H, W, C)`` with a ``(H, W, C)`` affine
    (the variant many course users adopted).

    Attributes:
        over_channels: Normalise over channels too.
        eps: Variance floor (PyTorch's default 1e-5).
        fuse_gelu: Apply exact GELU after the affine, fused with a hand-written backward
            (:func:`jaxdiff.kernels.fused.layer_norm_gelu`); same parameters, same values.
    """

    over_channels: bool = False
    eps: float = 1e-5
    fuse_gelu: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalise ``x`` of shape ``(B, H, W, C)``."""
        axes = (1, 2, 3) if self.over_channels else (1, 2)
        shape = x.shape[1:] if self.over_channels else (*x.shape[1:3], 1)
        if self.fuse_gelu:
            scale = self.param("scale", nn.initializers.ones, shape)
            bias = self.param("bias", nn.initializers.zeros, shape)
            return layer_norm_gelu(x, scale, bias, axes, self.eps)
        xf = x.astype(jnp.float32)
        mean = xf.mean(axis=axes, keepdims=True)
        var = jnp.square(xf - mean).mean(axis=axes, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        scale = self.param("scale", nn.initializers.ones, shape)
        bias = self.param("bias", nn.initializers.zeros, shape)
        return (y * scale + bias).astype(x.dtype)
