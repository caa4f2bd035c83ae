"""oneDNN convolutions for XLA:CPU, called through the XLA FFI.

XLA's CPU backend runs 3x3 convolutions at about half the speed of oneDNN, PyTorch's CPU
convolution library (measured on the UNet's layers: ``benchmarks/conv_layers.py``), and its
convolution gradients are far slower still inside ``lax.scan`` (:mod:`jaxdiff.kernels`).
:func:`conv2d_onednn` is a 'SAME' stride-1 convolution whose forward pass, input gradient and
kernel gradient are each one oneDNN primitive (``jaxdiff/kernels/csrc/onednn_conv.cc``),
joined by a ``jax.custom_vjp``; :func:`conv2d_fast_onednn` sends the large kernels to the
Fourier path instead. The library is built and loaded by :mod:`jaxdiff.kernels.native`; this
module never compiles anything.

bfloat16 inputs are convolved natively where the CPU has bf16 instructions
(:func:`jaxdiff.kernels.native.native_bf16`); elsewhere in float32 (the casts fuse into the
neighbouring XLA ops) and the result is rounded back to bf16, which is at least as accurate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.kernels.conv import DEFAULT_CHUNK, SMALL_KERNEL_TAPS, _check_shapes, conv2d_fourier
from jaxdiff.kernels.native import _require, native_bf16

#: ``"fast-onednn"`` sends large kernels with at most this many input channels to oneDNN
#: too: the Fourier path's transforms of the output channels dominate when there are few
#: input channels to mix. Measured (7x7, 28x28, batch 128, fp32, AVX2 host; Fourier against
#: oneDNN, forward / forward + backward, ms): cin 1 -> 16: 8.8 / 29.6 against 1.8 / 16.7;
#: cin 8: 14.5 / 36.3 against 10.5 / 24.0; cin 16: 17.0 / 47.4 against 18.4 / 56.9.
ONEDNN_MAX_CIN = 8


def _call(name: str, out: jax.ShapeDtypeStruct, *args: jax.Array) -> jax.Array:
    return jax.ffi.ffi_call(f"jaxdiff_onednn_conv_{name}", out, vmap_method="sequential")(*args)


@jax.custom_vjp
def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _call("fwd", jax.ShapeDtypeStruct((*x.shape[:3], kernel.shape[3]), x.dtype), x, kernel)


def _conv_fwd(x, kernel):
    return _conv(x, kernel), (x, kernel)


def _conv_bwd(res, dy):
    x, kernel = res
    dy = dy.astype(x.dtype)
    dx = _call("bwd_data", jax.ShapeDtypeStruct(x.shape, x.dtype), dy, kernel)
    dk = _call("bwd_weights", jax.ShapeDtypeStruct(kernel.shape, jnp.float32), x, dy)
    return dx, dk.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d_onednn(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'SAME' stride-1 cross-correlation (NHWC x HWIO) by oneDNN, with oneDNN gradients.

    Same contract as :func:`jaxdiff.kernels.conv.conv2d_reference`. The forward pass, the
    input gradient and the kernel gradient (accumulated in ``float32``) are each one oneDNN
    primitive, built once per shape and cached. ``bfloat16`` inputs are convolved natively
    where the CPU has bf16 instructions (:func:`jaxdiff.kernels.native.native_bf16`), else in
    ``float32`` and rounded back.

    Args:
        x: Input ``(B, H, W, Cin)``, ``float32`` or ``bfloat16``.
        kernel: Kernel ``(kh, kw, Cin, Cout)``, odd sizes, same dtype as ``x``.

    Returns:
        Output ``(B, H, W, Cout)`` in ``x.dtype``.

    Raises:
        jaxdiff.kernels.native.OneDNNUnavailable: Where the native kernels are not available
            (the message says why and what to use; :func:`jaxdiff.kernels.get_conv` falls
            back instead).
        ValueError: For other dtypes (only ``float32`` and ``bfloat16``).
    """
    _check_shapes(x.shape, kernel.shape, "NHWC")
    _require()
    if x.dtype not in (jnp.float32, jnp.bfloat16) or kernel.dtype != x.dtype:
        raise ValueError(
            f"conv2d_onednn takes float32 or bfloat16 x and a kernel of the same dtype, got "
            f"{x.dtype} and {kernel.dtype}."
        )
    if x.dtype == jnp.bfloat16 and not native_bf16():
        return _conv(x.astype(jnp.float32), kernel.astype(jnp.float32)).astype(x.dtype)
    return _conv(x, kernel)


def conv2d_fast_onednn(x: jax.Array, kernel: jax.Array, chunk: int = DEFAULT_CHUNK) -> jax.Array:
    """:func:`jaxdiff.kernels.conv.conv2d_fourier` with oneDNN for the small kernels.

    Kernels of at most :data:`jaxdiff.kernels.conv.SMALL_KERNEL_TAPS` taps (the UNet's 3x3,
    the classifier's 5x5) go to :func:`conv2d_onednn`, about 2x faster than XLA's own
    convolution forward and backward at the UNet's shapes (``benchmarks/conv_layers.py``), and
    so do larger kernels on at most :data:`ONEDNN_MAX_CIN` input channels (the starter's first
    7x7 layer, 1 -> 16: 4.9x faster forward, 1.8x forward + backward); the other large ones
    (the starter's 16- and 32-channel 7x7 layers) to the Fourier path, which beats both there.

    Args:
        x: Input ``(B, H, W, Cin)``, ``float32`` or ``bfloat16``.
        kernel: Kernel ``(kh, kw, Cin, Cout)``, odd sizes.
        chunk: Images per block of the Fourier path (positive).

    Returns:
        Output ``(B, H, W, Cout)`` in ``x.dtype``.

    Raises:
        ValueError: For wrong ranks, even kernels, mismatched channels or a bad chunk.
        jaxdiff.kernels.native.OneDNNUnavailable: For a small kernel where the native kernels
            are not available.
    """
    _check_shapes(x.shape, kernel.shape, "NHWC")
    kh, kw, cin, _ = kernel.shape
    if kh * kw <= SMALL_KERNEL_TAPS or cin <= ONEDNN_MAX_CIN:
        return conv2d_onednn(x, kernel)
    return conv2d_fourier(x, kernel, chunk)
