"""The pure-JAX convolutions: XLA's reference, a loop-safe gradient, and the Fourier path.

``"xla"`` (:func:`conv2d_reference`) is the reference path (XLA's convolution); every other
implementation (:mod:`jaxdiff.kernels.registry`) is tested for equivalence against it.
``"loopsafe"`` (:func:`conv2d_loopsafe`) keeps XLA's forward convolution with a gradient that
stays fast inside ``lax.scan``.

``"fast"`` (:func:`conv2d_fourier`) computes the same 'SAME' cross-correlation exactly (up to
float rounding) through the discrete Fourier transform, written entirely as matrix products
that XLA's CPU backend runs at GEMM speed:

* the image is transformed along H (real input, half spectrum) and then along W (complex),
  each transform one (batched) matmul with a small DFT matrix; padding to the transform
  size ``N >= H + k // 2`` is implicit (only the ``H`` real rows enter the product), so no
  wrap-around reaches the kept outputs;
* channels are mixed per frequency: one batched matmul ``(F, 2B, Cin) @ (F, Cin, 2 Cout)``
  (real and imaginary parts stacked) instead of ``k * k`` taps per pixel — for the starter's
  7x7 kernels on 28x28 maps about 5x fewer FLOPs than the direct convolution;
* the inverse transforms are two more matmuls.

Internally activations are laid out ``(H, W, B, C)`` ("HWBC"), where every one of these
products is a plain (batched) row-major GEMM with ``B * C`` columns: no transposes inside.
:func:`conv2d_fourier_hwbc` is that layout's entry point; :func:`conv2d_fourier` takes NHWC
and runs the batch in chunks of :data:`DEFAULT_CHUNK` images, each transposed to HWBC inside
the loop so that the transforms' intermediates stay in the CPU caches (2x faster forward
passes than one block). The backward pass is a hand-written ``jax.custom_vjp``: the input
gradient runs the same transforms in reverse, the kernel gradient is one batched matmul over
the saved input spectrum (``(F, Cin, 2B) @ (F, 2B, 2 Cout)``), mapped back to the ``k x k``
taps by the adjoint of the (tiny) kernel transform. XLA's CPU weight-gradient convolution,
the bottleneck of the reference path, is not used. Kernels of 5x5 and smaller go to XLA's
convolution, which is as fast or faster for them.

Everything here is pure JAX: it runs on every backend and needs no native build. The oneDNN
paths are in :mod:`jaxdiff.kernels.onednn`, the starter block's fused LayerNorm + GELU in
:mod:`jaxdiff.kernels.fused`.
:func:`jaxdiff.app.allocator.configure_cpu_allocator` (called by the training and sampling
entry points, never at import) stops glibc from returning XLA's per-step buffers to the OS,
which otherwise costs a third of a training step in page faults.

Mixed precision: with ``bfloat16`` inputs the transforms and products take ``bfloat16``
operands with ``float32`` accumulation (``preferred_element_type``); the DFT matrices are
rounded to ``bfloat16``, so the result has ``bfloat16``-level relative error, like a direct
``bfloat16`` convolution.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np

ConvFn = Callable[[jax.Array, jax.Array], jax.Array]


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


# --------------------------------------------------------------------------------------
# Fourier convolution as matmuls.


def _check_shapes(x_shape: tuple[int, ...], k_shape: tuple[int, ...], layout: str) -> None:
    if len(x_shape) != 4 or len(k_shape) != 4:
        raise ValueError(
            f"conv expects a 4-D {layout} input and a 4-D HWIO kernel, got shapes "
            f"{tuple(x_shape)} and {tuple(k_shape)}."
        )
    kh, kw, cin, _ = k_shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"conv kernels must have odd sizes for 'SAME' padding, got {kh}x{kw}.")
    if x_shape[-1] != cin:
        raise ValueError(
            f"input has {x_shape[-1]} channels but the kernel expects {cin} (kernel {k_shape})."
        )


@cache
def _dft_mats(h: int, w: int, kh: int, kw: int) -> dict[str, np.ndarray]:
    """DFT matrices of the Fourier convolution for an ``h x w`` map and a ``kh x kw`` kernel.

    The H axis uses the half spectrum of a length-``nh`` real transform (``nh >= h + kh//2``),
    the W axis the full spectrum of a length-``nw`` complex transform. Real and imaginary
    parts are stacked into real block matrices (index ``a`` = 0 real, 1 imaginary).
    """
    ph, pw = kh // 2, kw // 2
    nh, nw = h + ph, w + pw
    uh = nh // 2 + 1
    u, hh, v, ww = np.arange(uh), np.arange(h), np.arange(nw), np.arange(w)
    th = 2 * np.pi * np.outer(u, hh) / nh  # (uh, h)
    tw = 2 * np.pi * np.outer(v, ww) / nw  # (nw, w)
    cw, sw = np.cos(tw), np.sin(tw)
    # Forward along H, real -> complex: rows (u, a), cols h.
    m1 = np.stack([np.cos(th), -np.sin(th)], 1).reshape(2 * uh, h)
    # Forward along W, complex -> complex: rows (v, a'), cols (a, w).
    m2 = np.stack([np.concatenate([cw, sw], 1), np.concatenate([-sw, cw], 1)], 1).reshape(
        2 * nw, 2 * w
    )
    # Inverse along W (kept outputs w < W): rows (a, w), cols (v, a').
    m4 = np.concatenate(
        [
            np.stack([cw.T, -sw.T], 2).reshape(w, 2 * nw),
            np.stack([sw.T, cw.T], 2).reshape(w, 2 * nw),
        ],
        0,
    )
    # Inverse along H, half spectrum -> real (kept outputs h < H): rows h, cols (u, a).
    wt = np.where((u == 0) | ((nh % 2 == 0) & (u == nh // 2)), 1.0, 2.0)
    m5 = np.stack([np.cos(th).T * wt, -np.sin(th).T * wt], 2).reshape(h, 2 * uh) / (nh * nw)
    # Kernel transform: tap p sits at (ph - p) mod n (cross-correlation, 'SAME').
    eu = np.exp(-2j * np.pi * np.outer(u, ph - np.arange(kh)) / nh)  # (uh, kh)
    ev = np.exp(-2j * np.pi * np.outer(v, pw - np.arange(kw)) / nw)  # (nw, kw)
    ek = np.einsum("up,vq->uvpq", eu, ev).reshape(uh * nw, kh * kw)  # (F, taps)
    return {
        "m1": m1,
        "m2": m2,
        "m4": m4,
        "m5": m5,
        "ker": np.stack([ek.real, ek.imag]).astype(np.float32),
        "uh": uh,
        "nw": nw,
    }


def _kernel_spectrum(kernel: jax.Array, m: dict) -> jax.Array:
    """Kernel ``(kh, kw, Cin, Cout)`` -> ``(F, Cin, 2 Cout)`` = ``[Re K | Im K]`` per frequency."""
    kh, kw, cin, cout = kernel.shape
    e = jnp.asarray(m["ker"])  # (2, F, taps)
    k = kernel.astype(jnp.float32).reshape(kh * kw, cin * cout)
    f = e.shape[1]
    kr = jnp.dot(e[0], k).reshape(f, cin, cout)
    ki = jnp.dot(e[1], k).reshape(f, cin, cout)
    return jnp.concatenate([kr, ki], axis=2)


def _kernel_spectrum_adjoint(dks: jax.Array, m: dict, shape: tuple[int, ...]) -> jax.Array:
    """Adjoint of :func:`_kernel_spectrum`: ``(F, Cin, 2 Cout)`` -> ``(kh, kw, Cin, Cout)``."""
    kh, kw, cin, cout = shape
    e = jnp.asarray(m["ker"])
    f = e.shape[1]
    dr = dks[:, :, :cout].reshape(f, cin * cout)
    di = dks[:, :, cout:].reshape(f, cin * cout)
    return (jnp.dot(e[0].T, dr) + jnp.dot(e[1].T, di)).reshape(shape)


def _dot(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """``a @ b`` (2-D) with operands in ``dtype`` and a ``float32`` result."""
    return jax.lax.dot_general(
        a.astype(dtype),
        b.astype(dtype),
        (((1,), (0,)), ((), ())),
        preferred_element_type=jnp.float32,
    )


def _bmm(a: jax.Array, b: jax.Array, dtype, contract_a: int = 2, contract_b: int = 1) -> jax.Array:
    """Batched matmul over the leading axis, operands in ``dtype``, ``float32`` result."""
    return jax.lax.dot_general(
        a.astype(dtype),
        b.astype(dtype),
        (((contract_a,), (contract_b,)), ((0,), (0,))),
        preferred_element_type=jnp.float32,
    )


def _spectrum(x: jax.Array, m: dict, dtype) -> jax.Array:
    """HWBC ``x`` -> spectrum ``(F, 2B, C)`` (rows: real parts of the batch, then imaginary)."""
    h, w, b, c = x.shape
    uh, nw = m["uh"], m["nw"]
    x1 = _dot(jnp.asarray(m["m1"]), x.reshape(h, w * b * c), dtype)  # (2uh, w b c)
    x1 = x1.reshape(uh, 2 * w, b * c)
    m2 = jnp.broadcast_to(jnp.asarray(m["m2"]), (uh, 2 * nw, 2 * w))
    x2 = _bmm(m2, x1, dtype)  # (uh, 2nw, b c) = (u, v, a, b, c)
    return x2.reshape(uh * nw, 2 * b, c)


def _spectrum_adjoint(g: jax.Array, m: dict, shape: tuple[int, ...], dtype) -> jax.Array:
    """Adjoint of :func:`_spectrum`: ``(F, 2B, C)`` -> HWBC."""
    h, w, b, c = shape
    uh, nw = m["uh"], m["nw"]
    m2t = jnp.broadcast_to(jnp.asarray(m["m2"].T), (uh, 2 * w, 2 * nw))
    g1 = _bmm(m2t, g.reshape(uh, 2 * nw, b * c), dtype)  # (uh, 2w, b c)
    g0 = _dot(jnp.asarray(m["m1"].T), g1.reshape(2 * uh, w * b * c), dtype)
    return g0.reshape(h, w, b, c)


def _synthesis(y: jax.Array, m: dict, h: int, w: int, dtype) -> jax.Array:
    """Spectrum ``(F, 2B, O)`` -> HWBC output (the kept ``h x w`` part of the inverse DFT)."""
    f, b2, o = y.shape
    b = b2 // 2
    uh, nw = m["uh"], m["nw"]
    m4 = jnp.broadcast_to(jnp.asarray(m["m4"]), (uh, 2 * w, 2 * nw))
    z = _bmm(m4, y.reshape(uh, 2 * nw, b * o), dtype)  # (uh, 2w, b o) = (u, a, w, b, o)
    out = _dot(jnp.asarray(m["m5"]), z.reshape(2 * uh, w * b * o), dtype)
    return out.reshape(h, w, b, o)


def _synthesis_adjoint(g: jax.Array, m: dict, dtype) -> jax.Array:
    """Adjoint of :func:`_synthesis`: HWBC ``(H, W, B, O)`` -> ``(F, 2B, O)``."""
    h, w, b, o = g.shape
    uh, nw = m["uh"], m["nw"]
    z = _dot(jnp.asarray(m["m5"].T), g.reshape(h, w * b * o), dtype)  # (2uh, w b o)
    m4t = jnp.broadcast_to(jnp.asarray(m["m4"].T), (uh, 2 * nw, 2 * w))
    y = _bmm(m4t, z.reshape(uh, 2 * w, b * o), dtype)  # (uh, 2nw, b o)
    return y.reshape(uh * nw, 2 * b, o)


def _complex_mix(xs: jax.Array, ks: jax.Array, dtype) -> jax.Array:
    """Per-frequency complex product ``Y = X K``.

    Args:
        xs: ``(F, 2B, C)`` with rows ``[Re X; Im X]``.
        ks: ``(F, C, 2O)`` with columns ``[Re K | Im K]``.
        dtype: Operand dtype.

    Returns:
        ``(F, 2B, O)`` with rows ``[Re Y; Im Y]``.
    """
    f, b2, _ = xs.shape
    b, o = b2 // 2, ks.shape[2] // 2
    p = _bmm(xs, ks, dtype).reshape(f, 2, b, 2, o)
    yr = p[:, 0, :, 0] - p[:, 1, :, 1]
    yi = p[:, 0, :, 1] + p[:, 1, :, 0]
    return jnp.stack([yr, yi], 1).reshape(f, b2, o)


def _kernel_blocks_t(ks: jax.Array) -> jax.Array:
    """``(F, C, 2O)`` = ``[Kr | Ki]`` -> ``(F, O, 2C)`` = ``[Kr^T | Ki^T]``."""
    o = ks.shape[2] // 2
    return jnp.concatenate([ks[:, :, :o].transpose(0, 2, 1), ks[:, :, o:].transpose(0, 2, 1)], 2)


def _mix_grad_input(gy: jax.Array, kt: jax.Array, dtype) -> jax.Array:
    """Gradient of :func:`_complex_mix` with respect to ``xs``: ``(F, 2B, C)``."""
    f, b2, _ = gy.shape
    b, c = b2 // 2, kt.shape[2] // 2
    # Re: gYr Kr^T + gYi Ki^T ; Im: -gYr Ki^T + gYi Kr^T, via rows [gYr; gYi] @ [Kr^T | Ki^T].
    q = _bmm(gy, kt, dtype).reshape(f, 2, b, 2, c)
    dxr = q[:, 0, :, 0] + q[:, 1, :, 1]
    dxi = q[:, 1, :, 0] - q[:, 0, :, 1]
    return jnp.stack([dxr, dxi], 1).reshape(f, b2, c)


def _mix_grad_kernel_operand(gy: jax.Array) -> jax.Array:
    """``(F, 2B, 2O)`` such that ``d ks = xs^T @ it`` (contracting the ``2B`` rows).

    ``d Kr = Xr^T gYr + Xi^T gYi`` and ``d Ki = Xr^T gYi - Xi^T gYr``.
    """
    f, b2, o = gy.shape
    g = gy.reshape(f, 2, b2 // 2, o)
    swapped = jnp.stack([g[:, 1], -g[:, 0]], 1).reshape(f, b2, o)
    return jnp.concatenate([gy, swapped], axis=2)


def _complex_mix_grads(xs, ks, gy, dtype):
    """Gradients of :func:`_complex_mix` with respect to ``xs`` and ``ks``."""
    dxs = _mix_grad_input(gy, _kernel_blocks_t(ks), dtype)
    dks = _bmm(xs, _mix_grad_kernel_operand(gy), dtype, contract_a=1, contract_b=1)
    return dxs, dks


def _compute_dtype(dtype) -> jnp.dtype:
    return jnp.bfloat16 if dtype == jnp.bfloat16 else jnp.float32


def _conv_hwbc(x: jax.Array, ks: jax.Array, m: dict, dtype) -> jax.Array:
    """Fourier convolution of one HWBC block with a precomputed kernel spectrum."""
    h, w, _, _ = x.shape
    return _synthesis(_complex_mix(_spectrum(x, m, dtype), ks, dtype), m, h, w, dtype)


def _conv_hwbc_grads(x: jax.Array, ks: jax.Array, g: jax.Array, m: dict, dtype):
    """Input gradient and kernel-spectrum gradient of :func:`_conv_hwbc` for one block."""
    xs = _spectrum(x, m, dtype)
    gy = _synthesis_adjoint(g, m, dtype)
    dxs, dks = _complex_mix_grads(xs, ks, gy, dtype)
    return _spectrum_adjoint(dxs, m, x.shape, dtype), dks


def _chunks(n: int, chunk: int) -> tuple[int, int, int]:
    """Split ``n`` images into ``count`` chunks of ``size`` plus a remainder ``rest``."""
    size = max(1, min(chunk, n))
    return n // size, size, n % size


def _to_bits(a: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(a, jnp.uint16) if a.dtype == jnp.bfloat16 else a


def _from_bits(a: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(a, jnp.bfloat16) if a.dtype == jnp.uint16 else a


def _nhwc_map(fn, chunk: int, *arrays: jax.Array):
    """Apply ``fn(*blocks_hwbc) -> (y_hwbc, extra)`` over batch chunks of NHWC ``arrays``.

    Each chunk is transposed to HWBC inside the loop, so its intermediates stay in cache.

    Returns:
        ``(y, parts)``: the NHWC concatenation of the ``y`` blocks, and a list of the
        ``extra`` pytrees stacked over chunks (one entry for the full chunks, one more for
        a last partial chunk).
    """
    n = arrays[0].shape[0]
    count, size, rest = _chunks(n, chunk)

    def one(args):
        y, extra = fn(*(a.transpose(1, 2, 0, 3) for a in args))
        return y.transpose(2, 0, 1, 3), extra

    def one_bits(args):
        return jax.tree.map(_to_bits, one(args))

    head = [a[: count * size].reshape(count, size, *a.shape[1:]) for a in arrays]
    if count == 1:
        y, extra = one([a[0] for a in head])
        ys, extras = y[None], jax.tree.map(lambda e: e[None], extra)
    else:
        # bfloat16 loop outputs travel as uint16 bits: XLA's CPU backend would otherwise
        # widen the whole stacked output buffer to float32 and back on every iteration.
        ys, extras = jax.tree.map(_from_bits, jax.lax.map(one_bits, tuple(head)))
    y = ys.reshape(count * size, *ys.shape[2:])
    parts = [extras]
    if rest:
        y_rest, extra_rest = one([a[count * size :] for a in arrays])
        y = jnp.concatenate([y, y_rest], axis=0)
        parts.append(jax.tree.map(lambda e: e[None], extra_rest))
    return y, parts


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _fourier_nhwc(x: jax.Array, kernel: jax.Array, chunk: int) -> jax.Array:
    return _fourier_nhwc_fwd(x, kernel, chunk)[0]


def _fourier_nhwc_fwd(x, kernel, chunk):
    _, h, w, _ = x.shape
    kh, kw, _, _ = kernel.shape
    dtype = _compute_dtype(x.dtype)
    m = _dft_mats(h, w, kh, kw)
    ks = _kernel_spectrum(kernel, m)

    def fn(xb):
        xs = _spectrum(xb, m, dtype)
        y = _synthesis(_complex_mix(xs, ks, dtype), m, h, w, dtype).astype(x.dtype)
        return y, xs.astype(dtype)  # each chunk's spectrum, kept for the kernel gradient

    y, xs_parts = _nhwc_map(fn, chunk, x)
    return y, (xs_parts, ks, kernel)


def _fourier_nhwc_bwd(chunk, res, g):
    xs_parts, ks, kernel = res
    _, h, w, _ = g.shape
    kh, kw, c, _ = kernel.shape
    dtype = _compute_dtype(g.dtype)
    m = _dft_mats(h, w, kh, kw)
    kt = _kernel_blocks_t(ks)

    def fn(gb):
        gy = _synthesis_adjoint(gb.astype(jnp.float32), m, dtype)
        dxs = _mix_grad_input(gy, kt, dtype)
        dx = _spectrum_adjoint(dxs, m, (h, w, gb.shape[2], c), dtype)
        return dx.astype(g.dtype), _mix_grad_kernel_operand(gy).astype(dtype)

    dx, gk_parts = _nhwc_map(fn, chunk, g)
    # The kernel gradient is one product per frequency over all chunks and images:
    # contract (chunk, row) of the saved spectra with the matching gradient operands.
    dks = sum(
        jax.lax.dot_general(
            xs, gk, (((0, 2), (0, 2)), ((1,), (1,))), preferred_element_type=jnp.float32
        )
        for xs, gk in zip(xs_parts, gk_parts, strict=True)
    )
    dk = _kernel_spectrum_adjoint(dks, m, kernel.shape)
    return dx, dk.astype(kernel.dtype)


_fourier_nhwc.defvjp(_fourier_nhwc_fwd, _fourier_nhwc_bwd)


@jax.custom_vjp
def _fourier_hwbc(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _fourier_hwbc_fwd(x, kernel)[0]


def _fourier_hwbc_fwd(x, kernel):
    h, w, _, _ = x.shape
    kh, kw, _, _ = kernel.shape
    m = _dft_mats(h, w, kh, kw)
    ks = _kernel_spectrum(kernel, m)
    return _conv_hwbc(x, ks, m, _compute_dtype(x.dtype)).astype(x.dtype), (x, ks, kernel)


def _fourier_hwbc_bwd(res, g):
    x, ks, kernel = res
    h, w, _, _ = x.shape
    kh, kw, _, _ = kernel.shape
    m = _dft_mats(h, w, kh, kw)
    dtype = _compute_dtype(x.dtype)
    dx, dks = _conv_hwbc_grads(x, ks, g.astype(jnp.float32), m, dtype)
    dk = _kernel_spectrum_adjoint(dks, m, kernel.shape)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_fourier_hwbc.defvjp(_fourier_hwbc_fwd, _fourier_hwbc_bwd)


@jax.custom_vjp
def conv2d_loopsafe(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's 'SAME' convolution with a gradient that stays fast inside ``lax.scan``.

    On XLA:CPU the convolutions JAX derives for a convolution's gradient run one to two
    orders of magnitude slower in a loop body than outside one (jax-ml/jax#12868; measured
    here: a UNet train step inside the epoch scan at ~3 images/s). This keeps XLA's forward
    convolution and writes the backward pass as a forward convolution of the cotangent with
    the flipped, in/out-swapped kernel (input gradient) and an im2col contraction with
    ``float32`` accumulation (kernel gradient). Same contract as :func:`conv2d_reference`.

    Args:
        x: Input ``(B, H, W, Cin)``, ``float32`` or ``bfloat16``.
        kernel: Kernel ``(kh, kw, Cin, Cout)``, odd sizes, same dtype as ``x``.

    Returns:
        Output ``(B, H, W, Cout)``.
    """
    return conv2d_reference(x, kernel)


def _loopsafe_fwd(x, kernel):
    return conv2d_reference(x, kernel), (x, kernel)


def _loopsafe_bwd(res, dy):
    x, kernel = res
    kh, kw = kernel.shape[:2]
    rh, rw = kh // 2, kw // 2
    _, h, w, _ = x.shape
    dx = conv2d_reference(dy.astype(x.dtype), jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    xp = jnp.pad(x, ((0, 0), (rh, rh), (rw, rw), (0, 0)))
    cols = jnp.stack([xp[:, i : i + h, j : j + w] for i in range(kh) for j in range(kw)], 3)
    dk = jnp.einsum("bhwpc,bhwo->pco", cols, dy.astype(x.dtype), preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


conv2d_loopsafe.defvjp(_loopsafe_fwd, _loopsafe_bwd)


#: Kernels with at most this many taps (5x5, 3x3, 1x1) go to the loop-safe XLA convolution
#: in :func:`conv2d_fourier`: for them the Fourier route is no faster overall (measured with
#: ``benchmarks/conv_layers.py``: 3x3 0.6x-1.6x forward, 0.9x-1.0x forward + backward; the
#: classifier's 5x5 1->32 layer 0.3x forward, 0.96x forward + backward against
#: ``loopsafe``). From 7x7 on the Fourier route wins (1.1x-3x forward, 3.5x-18x forward +
#: backward against ``loopsafe``).
SMALL_KERNEL_TAPS = 25

#: Images per block of the NHWC Fourier convolution (see :func:`conv2d_fourier`).
DEFAULT_CHUNK = 16


def conv2d_fourier_hwbc(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'SAME' stride-1 cross-correlation of an ``(H, W, B, C)`` input via matmul DFTs.

    The whole batch is one block (no chunking); for layout-native callers.

    Args:
        x: Input ``(H, W, B, Cin)``, ``float32`` or ``bfloat16``.
        kernel: Kernel ``(kh, kw, Cin, Cout)``, odd sizes.

    Returns:
        Output ``(H, W, B, Cout)`` in ``x.dtype`` (``float32`` accumulation).

    Raises:
        ValueError: For wrong ranks, even kernels or mismatched channels.
    """
    _check_shapes(x.shape, kernel.shape, "HWBC")
    return _fourier_hwbc(x, kernel)


def conv2d_fourier(x: jax.Array, kernel: jax.Array, chunk: int = DEFAULT_CHUNK) -> jax.Array:
    """'SAME' stride-1 cross-correlation (NHWC x HWIO) through matmul DFTs, in batch chunks.

    Same contract as :func:`conv2d_reference`. The batch is processed ``chunk`` images at a
    time (a ``lax.map``; a last partial chunk is handled separately), each chunk transposed
    to HWBC so that the transforms' intermediates stay in the CPU caches; the kernel spectrum
    is computed once per call. The forward pass keeps each chunk's input spectrum; the
    backward pass loops over the same chunks for the input gradient and then computes the
    kernel gradient as one product per frequency contracting over all chunks and images
    (short per-chunk contractions run far below GEMM speed). Kernels of at most
    :data:`SMALL_KERNEL_TAPS` taps (5x5, 3x3, 1x1) go to :func:`conv2d_loopsafe` (XLA's
    convolution, which is as fast or faster for them, with a loop-friendly gradient).

    Args:
        x: Input ``(B, H, W, Cin)``, ``float32`` or ``bfloat16``.
        kernel: Kernel ``(kh, kw, Cin, Cout)``, odd sizes.
        chunk: Images per block (positive).

    Returns:
        Output ``(B, H, W, Cout)`` in ``x.dtype``.

    Raises:
        ValueError: For wrong ranks, even kernels, mismatched channels or a bad chunk.
    """
    _check_shapes(x.shape, kernel.shape, "NHWC")
    if not (isinstance(chunk, int) and chunk > 0):
        raise ValueError(f"chunk must be a positive int, got {chunk!r}.")
    if kernel.shape[0] * kernel.shape[1] <= SMALL_KERNEL_TAPS:
        return conv2d_loopsafe(x, kernel)
    return _fourier_nhwc(x, kernel, chunk)
