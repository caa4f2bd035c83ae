"""The fast (Fourier-as-matmul) convolution equals XLA's reference convolution."""

import platform
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import kernels
from jaxdiff.app import allocator
from jaxdiff.config import ModelConfig
from jaxdiff.kernels import conv, fused, native
from jaxdiff.models import build_model

# (batch, height, width, c_in, c_out, kernel): the starter's layers plus odd shapes.
SHAPES = [
    (3, 28, 28, 1, 16, 7),
    (2, 28, 28, 16, 32, 7),
    (4, 28, 28, 16, 1, 3),
    (2, 9, 13, 5, 3, 3),
    (3, 14, 10, 4, 6, 7),
]


def _inputs(b, h, w, cin, cout, k, seed=0):
    # numpy draws: no per-shape compilation of random ops (keeps this file fast).
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((b, h, w, cin)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
    cot = jnp.asarray(rng.standard_normal((b, h, w, cout)), jnp.float32)
    return x, kernel, cot


def _value_and_grads(conv, x, kernel, cot, dtype):
    """Output and (d x, d kernel) of <conv(x, kernel), cot>, computed in ``dtype``."""

    def f(x, kernel):
        y = conv(x.astype(dtype), kernel.astype(dtype)).astype(jnp.float32)
        return jnp.sum(y * cot), y

    (_, y), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, kernel)
    return y, grads


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fast_equals_reference_fp32(shape):
    x, kernel, cot = _inputs(*shape)

    @jax.jit
    def both(x, kernel, cot):
        return (
            _value_and_grads(conv.conv2d_reference, x, kernel, cot, jnp.float32),
            _value_and_grads(conv.conv2d_fourier, x, kernel, cot, jnp.float32),
        )

    (y_ref, (gx_ref, gk_ref)), (y, (gx, gk)) = both(x, kernel, cot)
    assert y.shape == y_ref.shape and y.dtype == jnp.float32
    assert _rel_err(y, y_ref) < 2e-5
    assert _rel_err(gx, gx_ref) < 2e-5
    assert _rel_err(gk, gk_ref) < 2e-5


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2]], ids=lambda s: "x".join(map(str, s)))
def test_fast_equals_reference_bf16(shape):
    x, kernel, cot = _inputs(*shape, seed=1)
    # Truth: fp32 maths on the bf16-rounded inputs. Both bf16 paths must be near it.
    xr, kr = (jnp.asarray(np.asarray(a.astype(jnp.bfloat16)), jnp.float32) for a in (x, kernel))

    @jax.jit
    def three(x, kernel, xr, kr, cot):
        return (
            _value_and_grads(conv.conv2d_reference, xr, kr, cot, jnp.float32),
            _value_and_grads(conv.conv2d_fourier, x, kernel, cot, jnp.bfloat16),
            _value_and_grads(conv.conv2d_reference, x, kernel, cot, jnp.bfloat16),
        )

    (y32, (gx32, gk32)), (y, (gx, gk)), (y_ref, (gx_ref, gk_ref)) = three(x, kernel, xr, kr, cot)
    out_dtype = jax.eval_shape(
        conv.conv2d_fourier, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    ).dtype
    assert out_dtype == jnp.bfloat16
    for ours, ref, truth in ((y, y_ref, y32), (gx, gx_ref, gx32), (gk, gk_ref, gk32)):
        assert _rel_err(ours, truth) < 3e-2
        # bf16-level error, of the same order as XLA's own bf16 convolution.
        assert _rel_err(ours, truth) < 4 * _rel_err(ref, truth) + 1e-2


@pytest.mark.parametrize("k", [3, 7])
def test_hwbc_entry_equals_reference_with_grads(k):
    # The layout-native entry always takes the Fourier route, also for 3x3 gradients.
    x, kernel, cot = _inputs(2, 12, 11, 3, 4, k)

    def hwbc(x, kernel):
        return conv.conv2d_fourier_hwbc(x.transpose(1, 2, 0, 3), kernel).transpose(2, 0, 1, 3)

    @jax.jit
    def both(x, kernel, cot):
        return (
            _value_and_grads(conv.conv2d_reference, x, kernel, cot, jnp.float32),
            _value_and_grads(hwbc, x, kernel, cot, jnp.float32),
        )

    (y_ref, g_ref), (y, g) = both(x, kernel, cot)
    assert _rel_err(y, y_ref) < 2e-5
    assert _rel_err(g[0], g_ref[0]) < 2e-5
    assert _rel_err(g[1], g_ref[1]) < 2e-5


@pytest.mark.parametrize("chunk", [16, 8])
def test_chunking_is_exact(chunk):
    # 40 images: 2 chunks of 16 plus a remainder of 8; 5 chunks of 8.
    x, kernel, cot = _inputs(40, 14, 14, 3, 5, 7, seed=2)
    chunked = partial(conv.conv2d_fourier, chunk=chunk)

    @jax.jit
    def both(x, kernel, cot):
        return (
            _value_and_grads(conv.conv2d_reference, x, kernel, cot, jnp.float32),
            _value_and_grads(chunked, x, kernel, cot, jnp.float32),
        )

    (y_ref, g_ref), (y, g) = both(x, kernel, cot)
    assert _rel_err(y, y_ref) < 2e-5
    assert _rel_err(g[0], g_ref[0]) < 2e-5
    assert _rel_err(g[1], g_ref[1]) < 2e-5


def test_one_by_one_kernel():
    x, kernel, _ = _inputs(3, 6, 5, 4, 2, 1)
    y, y_ref = jax.jit(lambda x, k: (conv.conv2d_fourier(x, k), conv.conv2d_reference(x, k)))(
        x, kernel
    )
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)


def test_fast_rejects_bad_shapes():
    x = jnp.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="odd"):
        conv.conv2d_fourier(x, jnp.zeros((4, 4, 3, 2)))
    with pytest.raises(ValueError, match="channels"):
        conv.conv2d_fourier(x, jnp.zeros((3, 3, 5, 2)))
    with pytest.raises(ValueError, match="4-D"):
        conv.conv2d_fourier(jnp.zeros((8, 8, 3)), jnp.zeros((3, 3, 3, 2)))
    with pytest.raises(ValueError, match="chunk"):
        conv.conv2d_fourier(x, jnp.zeros((3, 3, 3, 2)), chunk=0)


def test_registry():
    assert kernels.get_conv("xla") is conv.conv2d_reference
    assert kernels.get_conv("fast") is conv.conv2d_fourier
    assert {"xla", "fast"} <= set(kernels.available_convs())
    with pytest.raises(ValueError, match="known"):
        kernels.get_conv("nope")


def _cnn_setup(precision):
    m_xla = build_model(ModelConfig(conv_impl="xla", precision=precision))
    m_fast = build_model(ModelConfig(conv_impl="fast", precision=precision))
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((4, 28, 28, 1)), jnp.float32)
    t = jnp.asarray(rng.uniform(size=(4,)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    params = jax.jit(m_xla.init)(jax.random.key(3), x, t)
    return m_xla, m_fast, x, t, eps, params


def test_cnn_fast_equals_xla_fp32():
    m_xla, m_fast, x, t, eps, params = _cnn_setup("fp32")
    tol = 1e-4

    def loss(params, model):
        return jnp.mean(jnp.square(model.apply(params, x, t) - eps))

    @jax.jit
    def both(params):
        return (
            m_xla.apply(params, x, t),
            m_fast.apply(params, x, t),
            jax.grad(loss)(params, m_xla),
            jax.grad(loss)(params, m_fast),
        )

    y_xla, y_fast, g_xla, g_fast = both(params)
    assert _rel_err(y_fast, y_xla) < tol
    flat_xla, flat_fast = jax.tree.leaves(g_xla), jax.tree.leaves(g_fast)
    assert len(flat_xla) == len(flat_fast)
    flat_xla = [np.asarray(v, np.float64) for v in flat_xla]
    flat_fast = [np.asarray(v, np.float64) for v in flat_fast]
    scale = max(float(np.max(np.abs(v))) for v in flat_xla)
    for a, b in zip(flat_fast, flat_xla, strict=True):
        err = float(np.max(np.abs(a - b)))
        # Conv biases feeding a LayerNorm have (mathematically) zero gradient, so those
        # are rounding noise on both paths: measure every leaf against the overall scale,
        # and the leaves that carry signal also against their own.
        assert err / scale < tol
        own = float(np.max(np.abs(b)))
        if own > 0.05 * scale:
            assert err / own < tol


def test_cnn_fast_equals_xla_bf16_output():
    m_xla, m_fast, x, t, _, params = _cnn_setup("bf16")
    m_32 = build_model(ModelConfig(conv_impl="xla", precision="fp32"))
    y_32, y_xla, y_fast = jax.jit(
        lambda p: (m_32.apply(p, x, t), m_xla.apply(p, x, t), m_fast.apply(p, x, t))
    )(params)
    assert y_fast.dtype == jnp.float32
    # Both bf16 paths are near the fp32 network, with errors of the same order.
    assert _rel_err(y_fast, y_32) < 5e-2
    assert _rel_err(y_fast, y_32) < 3 * _rel_err(y_xla, y_32) + 1e-2


def test_allocator_tuning_opt_out(monkeypatch):
    monkeypatch.setenv("JAXDIFF_MALLOC_TUNING", "0")
    assert allocator.configure_cpu_allocator() is False
    monkeypatch.delenv("JAXDIFF_MALLOC_TUNING")
    applied = allocator.configure_cpu_allocator()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied
    assert set(allocator.MALLOC_ENV) == {
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_ARENA_MAX",
    }


def _ln_gelu_reference(x, scale, bias, axes, eps=1e-5):
    xf = x.astype(jnp.float32)
    mean = xf.mean(axis=axes, keepdims=True)
    var = jnp.square(xf - mean).mean(axis=axes, keepdims=True)
    z = (xf - mean) / jnp.sqrt(var + eps) * scale + bias
    return jax.nn.gelu(z, approximate=False).astype(x.dtype)


@pytest.mark.parametrize(
    "axes,pshape,dtype,tol",
    [
        ((1, 2), (9, 7, 1), jnp.float32, 1e-5),
        ((1, 2, 3), (9, 7, 5), jnp.float32, 1e-5),
        ((1, 2), (9, 7, 1), jnp.bfloat16, 3e-2),
    ],
)
def test_layer_norm_gelu_equals_reference(axes, pshape, dtype, tol):
    rng = np.random.default_rng(4)
    x = jnp.asarray(3.0 * rng.standard_normal((3, 9, 7, 5)) + 1.0, jnp.float32)
    scale = jnp.asarray(1.0 + 0.3 * rng.standard_normal(pshape), jnp.float32)
    bias = jnp.asarray(0.3 * rng.standard_normal(pshape), jnp.float32)
    cot = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

    def run(fn):
        def f(x, scale, bias):
            y = fn(x.astype(dtype), scale, bias, axes).astype(jnp.float32)
            return jnp.sum(y * cot), y

        return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(x, scale, bias)

    (_, y), grads = jax.jit(lambda: run(fused.layer_norm_gelu))()
    (_, y_ref), grads_ref = jax.jit(lambda: run(_ln_gelu_reference))()
    assert _rel_err(y, y_ref) < tol
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert g.shape == g_ref.shape
        assert _rel_err(g, g_ref) < tol


def test_layer_norm_gelu_rejects_bad_params():
    x = jnp.zeros((2, 4, 4, 3))
    with pytest.raises(ValueError, match="broadcast"):
        fused.layer_norm_gelu(x, jnp.ones((5, 4, 1)), jnp.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="axes"):
        fused.layer_norm_gelu(x, jnp.ones((4, 4, 1)), jnp.zeros((4, 4, 1)), axes=(1, 1))


def test_gelu_erf_equals_jax_gelu():
    x = jnp.linspace(-8.0, 8.0, 2001)
    np.testing.assert_allclose(
        fused.gelu_erf(x), jax.nn.gelu(x, approximate=False), rtol=1e-6, atol=1e-6
    )
    g = jax.vmap(jax.grad(fused.gelu_erf))(x)
    g_ref = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k, cin, cout", [(3, 4, 8), (1, 8, 4), (3, 16, 1)])
def test_loopsafe_conv_matches_reference_in_a_scan(k, cin, cout):
    from jaxdiff.kernels.conv import conv2d_loopsafe, conv2d_reference

    kx, kk, kg = jax.random.split(jax.random.PRNGKey(k * cin + cout), 3)
    x = jax.random.normal(kx, (3, 12, 12, cin))
    w = jax.random.normal(kk, (k, k, cin, cout)) * 0.2
    g = jax.random.normal(kg, (3, 12, 12, cout))

    def loss(conv, x, w):
        return jnp.sum(conv(x, w) * g)

    def scanned(conv):  # gradients taken inside a lax.scan body, where it matters
        def body(c, _):
            return c, jax.grad(partial(loss, conv), argnums=(0, 1))(x, w)

        return jax.jit(lambda: jax.lax.scan(body, 0, None, length=2)[1])()

    (dx_a, dw_a), (dx_b, dw_b) = scanned(conv2d_loopsafe), scanned(conv2d_reference)
    np.testing.assert_allclose(conv2d_loopsafe(x, w), conv2d_reference(x, w), atol=1e-5)
    np.testing.assert_allclose(dx_a, dx_b, atol=1e-4)
    np.testing.assert_allclose(dw_a, dw_b, atol=1e-3, rtol=1e-4)
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    da = jax.grad(partial(loss, conv2d_loopsafe), argnums=1)(xb, wb).astype(jnp.float32)
    db = jax.grad(partial(loss, conv2d_reference), argnums=1)(x, w)
    assert float(jnp.abs(da - db).max()) < 0.05 * float(jnp.abs(db).max())


def test_auto_resolves_per_backend_and_rejects_unknown_names():
    if not native.available():
        expected = "fast"
    elif native.has_isa("avx512_core_amx"):
        expected = "onednn"
    else:
        expected = "fast-onednn"
    assert kernels.resolve_conv_impl("auto", "cpu") == expected
    assert kernels.resolve_conv_impl("auto", "gpu") == "xla"
    assert kernels.resolve_conv_impl("auto", "tpu") == "xla"
    assert kernels.resolve_conv_impl("loopsafe", "gpu") == "loopsafe"  # explicit names stay
    assert kernels.get_conv("auto") is kernels.get_conv(kernels.resolve_conv_impl("auto"))
    assert "auto" in kernels.available_convs()
    with pytest.raises(ValueError, match=r"unknown conv impl 'fft'; choose from \['auto'"):
        kernels.get_conv("fft")


@pytest.mark.parametrize("k", [5, 3])
def test_fast_sends_small_kernels_to_the_loopsafe_path(k):
    x, kernel, _ = _inputs(2, 10, 10, 1, 4, k)
    jaxpr = str(jax.make_jaxpr(conv.conv2d_fourier)(x, kernel))
    assert "conv_general_dilated" in jaxpr and "dot_general" not in jaxpr
    x7, kernel7, _ = _inputs(2, 10, 10, 1, 4, 7)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(conv.conv2d_fourier)(x7, kernel7))
