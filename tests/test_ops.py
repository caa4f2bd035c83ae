"""The fast (Fourier-as-matmul) convolution equals XLA's reference convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import ops
from jaxdiff.config import ModelConfig
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
    kx, kk, kg = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (b, h, w, cin), jnp.float32)
    kernel = jax.random.normal(kk, (k, k, cin, cout), jnp.float32) / np.sqrt(k * k * cin)
    cot = jax.random.normal(kg, (b, h, w, cout), jnp.float32)
    return x, kernel, cot


def _value_and_grads(conv, x, kernel, cot, dtype):
    """Output and (d x, d kernel) of <conv(x, kernel), cot>, computed in ``dtype``."""

    def f(x, kernel):
        y = conv(x.astype(dtype), kernel.astype(dtype)).astype(jnp.float32)
        return jnp.sum(y * cot), y

    (_, y), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, kernel)
    return y, grads


def _rel_err(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fast_equals_reference_fp32(shape):
    x, kernel, cot = _inputs(*shape)

    @jax.jit
    def both(x, kernel, cot):
        return (
            _value_and_grads(ops.conv2d_reference, x, kernel, cot, jnp.float32),
            _value_and_grads(ops.conv2d_fourier, x, kernel, cot, jnp.float32),
        )

    (y_ref, (gx_ref, gk_ref)), (y, (gx, gk)) = both(x, kernel, cot)
    assert y.shape == y_ref.shape and y.dtype == jnp.float32
    assert _rel_err(y, y_ref) < 2e-5
    assert _rel_err(gx, gx_ref) < 2e-5
    assert _rel_err(gk, gk_ref) < 2e-5


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
def test_fast_equals_reference_bf16(shape):
    x, kernel, cot = _inputs(*shape, seed=1)
    # Truth: fp32 maths on the bf16-rounded inputs. Both bf16 paths must be near it.
    xr = x.astype(jnp.bfloat16).astype(jnp.float32)
    kr = kernel.astype(jnp.bfloat16).astype(jnp.float32)

    @jax.jit
    def three(x, kernel, xr, kr, cot):
        return (
            _value_and_grads(ops.conv2d_reference, xr, kr, cot, jnp.float32),
            _value_and_grads(ops.conv2d_fourier, x, kernel, cot, jnp.bfloat16),
            _value_and_grads(ops.conv2d_reference, x, kernel, cot, jnp.bfloat16),
        )

    (y32, (gx32, gk32)), (y, (gx, gk)), (y_ref, (gx_ref, gk_ref)) = three(x, kernel, xr, kr, cot)
    out_dtype = jax.eval_shape(
        ops.conv2d_fourier, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    ).dtype
    assert out_dtype == jnp.bfloat16
    for ours, ref, truth in ((y, y_ref, y32), (gx, gx_ref, gx32), (gk, gk_ref, gk32)):
        assert _rel_err(ours, truth) < 3e-2
        # bf16-level error, of the same order as XLA's own bf16 convolution.
        assert _rel_err(ours, truth) < 4 * _rel_err(ref, truth) + 1e-2


def test_hwbc_entry_matches_nhwc():
    x, kernel, _ = _inputs(2, 12, 11, 3, 4, 5)
    y_nhwc = ops.conv2d_fourier(x, kernel)
    y_hwbc = ops.conv2d_fourier_hwbc(x.transpose(1, 2, 0, 3), kernel)
    np.testing.assert_allclose(y_hwbc.transpose(2, 0, 1, 3), y_nhwc, rtol=1e-6, atol=1e-6)


def test_fast_is_linear_and_jits():
    x, kernel, _ = _inputs(2, 10, 10, 3, 2, 3)
    f = jax.jit(ops.conv2d_fourier)
    np.testing.assert_allclose(f(2 * x, kernel), 2 * f(x, kernel), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f(x, kernel), ops.conv2d_fourier(x, kernel), rtol=1e-6, atol=1e-6)


def test_fast_rejects_bad_shapes():
    x = jnp.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="odd"):
        ops.conv2d_fourier(x, jnp.zeros((4, 4, 3, 2)))
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d_fourier(x, jnp.zeros((3, 3, 5, 2)))
    with pytest.raises(ValueError, match="4-D"):
        ops.conv2d_fourier(jnp.zeros((8, 8, 3)), jnp.zeros((3, 3, 3, 2)))


def test_registry():
    assert ops.get_conv("xla") is ops.conv2d_reference
    assert ops.get_conv("fast") is ops.conv2d_fourier
    assert {"xla", "fast"} <= set(ops.available_convs())
    with pytest.raises(ValueError, match="known"):
        ops.get_conv("nope")


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("bf16", 5e-2)])
def test_cnn_fast_equals_xla(precision, tol):
    m_xla = build_model(ModelConfig(conv_impl="xla", precision=precision))
    m_fast = build_model(ModelConfig(conv_impl="fast", precision=precision))
    kx, kt, kp, ke = jax.random.split(jax.random.key(3), 4)
    x = jax.random.normal(kx, (4, 28, 28, 1))
    t = jax.random.uniform(kt, (4,))
    eps = jax.random.normal(ke, x.shape)
    params = m_xla.init(kp, x, t)

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
    scale = max(float(jnp.max(jnp.abs(v))) for v in flat_xla)
    for a, b in zip(flat_fast, flat_xla, strict=True):
        err = float(jnp.max(jnp.abs(a - b)))
        # Conv biases feeding a LayerNorm have (mathematically) zero gradient, so those
        # are rounding noise on both paths: measure every leaf against the overall scale,
        # and the leaves that carry signal also against their own.
        assert err / scale < tol
        own = float(jnp.max(jnp.abs(b)))
        if own > 0.05 * scale:
            assert err / own < tol
