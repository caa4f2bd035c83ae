"""The starter block's LayerNorm + exact GELU, fused, with a hand-written backward pass.

:func:`layer_norm_gelu` computes ``GELU(LayerNorm(x) * scale + bias)`` as one
``jax.custom_vjp`` and :func:`gelu_erf` the exact GELU through ``erf``, both cheaper on
XLA:CPU than their unfused autodiff forms (measured ~10% of a starter training step each).
:class:`jaxdiff.models.layers.PlaneLayerNorm` uses them; the values are those of
``nn.LayerNorm`` followed by ``nn.GELU()``.

XLA compiles this block well enough: a native C++ LayerNorm + GELU kernel (one pass forward,
one backward, through the XLA FFI) measured slower in an interleaved A/B of a bf16 starter
training step (489.8 against 577.3 img/s, ``docs/benchmarks.md``) and was removed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

_SQRT_HALF = float(np.sqrt(0.5))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


def gelu_erf(x: jax.Array) -> jax.Array:
    """Exact GELU ``x * Phi(x)`` written with ``erf`` (PyTorch's ``nn.GELU()``).

    Equal to ``jax.nn.gelu(x, approximate=False)``, which is written with ``erfc``; XLA's
    CPU ``erf`` is a short polynomial while its ``erfc`` needs an ``exp`` and branches, so
    this form is cheaper (measured ~10% of a starter training step).

    Args:
        x: Input.

    Returns:
        ``0.5 * x * (1 + erf(x / sqrt(2)))`` in ``x.dtype``.
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


def _gelu_grad(z: jax.Array) -> jax.Array:
    return 0.5 * (1.0 + jax.lax.erf(z * _SQRT_HALF)) + z * _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)


def _reduce_to(a: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum ``a`` over the axes that ``shape`` (right-aligned) broadcasts."""
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and a.shape[lead + i] != 1
    )
    return jnp.sum(a, axis=axes).reshape(shape)


def _ln_stats(xf: jax.Array, axes: tuple[int, ...], eps: float):
    mean = xf.mean(axis=axes, keepdims=True)
    var = jnp.square(xf - mean).mean(axis=axes, keepdims=True)
    return mean, jax.lax.rsqrt(var + eps)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _ln_gelu(x, scale, bias, axes, eps):
    return _ln_gelu_fwd(x, scale, bias, axes, eps)[0]


def _ln_gelu_fwd(x, scale, bias, axes, eps):
    xf = x.astype(jnp.float32)
    mean, rstd = _ln_stats(xf, axes, eps)
    z = (xf - mean) * rstd * scale + bias
    return gelu_erf(z).astype(x.dtype), (x, mean, rstd, scale, bias)


def _ln_gelu_bwd(axes, eps, res, g):
    x, mean, rstd, scale, bias = res
    xhat = (x.astype(jnp.float32) - mean) * rstd
    gz = g.astype(jnp.float32) * _gelu_grad(xhat * scale + bias)
    d_scale = _reduce_to(gz * xhat, scale.shape)
    d_bias = _reduce_to(gz, bias.shape)
    gx = gz * scale
    m1 = gx.mean(axis=axes, keepdims=True)
    m2 = (gx * xhat).mean(axis=axes, keepdims=True)
    dx = rstd * (gx - m1 - xhat * m2)
    return dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(bias.dtype)


_ln_gelu.defvjp(_ln_gelu_fwd, _ln_gelu_bwd)


def layer_norm_gelu(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    axes: tuple[int, ...] = (1, 2),
    eps: float = 1e-5,
) -> jax.Array:
    """``GELU(LayerNorm(x) * scale + bias)`` fused, with a hand-written backward pass.

    Statistics (mean, biased variance) are taken over ``axes`` in ``float32``; the starter's
    block uses ``axes=(1, 2)`` on NHWC input (each channel over its plane) with a ``(H, W, 1)``
    affine, the common variant ``axes=(1, 2, 3)`` with an ``(H, W, C)`` affine. The backward
    pass recomputes the normalised input from the saved input and statistics and evaluates
    the GELU derivative once (autodiff of the unfused form re-evaluates ``erfc`` in several
    fusions); measured ~10% of a starter training step.

    Args:
        x: Input, e.g. ``(B, H, W, C)``, ``float32`` or ``bfloat16``.
        scale: Affine scale, broadcastable to ``x`` (``float32`` parameters).
        bias: Affine shift, broadcastable to ``x``.
        axes: Normalisation axes of ``x``.
        eps: Variance floor (PyTorch's default 1e-5).

    Returns:
        Output in ``x.dtype``.

    Raises:
        ValueError: If ``scale``/``bias`` do not broadcast to ``x`` or ``axes`` is invalid.
    """
    axes = tuple(int(a) % x.ndim for a in axes)
    if not axes or len(set(axes)) != len(axes):
        raise ValueError(f"axes must be distinct axes of a {x.ndim}-D input, got {axes}.")
    for name, p in (("scale", scale), ("bias", bias)):
        try:
            shape = jnp.broadcast_shapes(p.shape, x.shape)
        except ValueError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"{name} of shape {p.shape} does not broadcast to the input {x.shape}."
            )
    return _ln_gelu(x, scale, bias, axes, float(eps))
