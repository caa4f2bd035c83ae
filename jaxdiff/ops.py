"""Convolution kernels behind :class:`jaxdiff.models.layers.Conv`.

``"xla"`` is the reference path (XLA's convolution). Faster implementations register here
under their own names and are tested for equivalence against it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax



def conv2d_reference(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'SAME' stride-1 2-D convolution (cross-correlation, as PyTorch), NHWC x HWIO.

    Args:
        x: Input ``(B, H, W, Cin)``.
        kernel: Kernel ``(kh, kw, Cin, Cout)`` with odd ``kh, kw``.

    Returns:
        Output ``(B, H, W, Cout)`` (XLA's convolution; the reference path).
    """
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

ConvFn = Callable[[jax.Array, jax.Array], jax.Array]

_CONVS: dict[str, ConvFn] = {"xla": conv2d_reference}


def register_conv(name: str, fn: ConvFn) -> None:
    """Register a convolution implementation ``fn(x_nhwc, kernel_hwio) -> y_nhwc``.

    Args:
        name: Name used by ``Conv(impl=name)``.
        fn: 'SAME', stride-1 convolution equivalent to :func:`conv2d_reference`.
    """
    _CONVS[name] = fn


def get_conv(name: str) -> ConvFn:
    """Look up a registered convolution implementation.

    Args:
        name: A registered name, e.g. ``"xla"``.

    Returns:
        The convolution function.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    try:
        return _CONVS[name]
    except KeyError:
        raise ValueError(f"unknown conv impl {name!r}; known: {sorted(_CONVS)}.") from None


def available_convs() -> list[str]:
    """Names of the registered convolution implementations."""
    return sorted(_CONVS)
