import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.config import ModelConfig
from jaxdiff.models import CNN, build_model
from jaxdiff.models.layers import PlaneLayerNorm, starter_time_features


def _n_params(p):
    return sum(x.size for x in jax.tree.leaves(p))


def test_starter_parameter_count_and_shape():
    m = CNN()
    x = jnp.zeros((3, 28, 28, 1))
    p = m.init(jax.random.PRNGKey(0), x, jnp.zeros(3))
    # convs 800 + 25120 + 50208 + 25104 + 145, four (28,28) LN affines 4 * 1568,
    # time MLP 4224 + 16512 + 16512 + 2064
    assert _n_params(p) == 146961
    y = m.apply(p, x, jnp.zeros(3))
    assert y.shape == (3, 28, 28, 1) and y.dtype == jnp.float32


def test_course_sizes_parameter_counts():
    for hidden, ln_c in [((64, 128, 64), False), ((16, 32, 32, 16), True)]:
        m = CNN(n_hidden=hidden, ln_over_channels=ln_c)
        p = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1))
        convs = sum(49 * a * b + b for a, b in zip((1, *hidden[:-1]), hidden, strict=True))
        ln = sum(2 * 784 * (c if ln_c else 1) for c in hidden)
        mlp = 32 * 128 + 128 + 2 * (128 * 128 + 128) + 128 * hidden[0] + hidden[0]
        assert _n_params(p) == convs + 9 * hidden[-1] + 1 + ln + mlp


def test_time_features_closed_form():
    t = jnp.array([0.0, 0.25, 1.0])
    f = np.array([0.0] + [2 * np.pi * 1.5**i for i in range(15)])
    want = np.concatenate([np.sin(np.outer(t, f)), np.cos(np.outer(t, f)) - 1], axis=1)
    np.testing.assert_allclose(starter_time_features(t), want, atol=2e-4)
    assert np.all(np.asarray(starter_time_features(jnp.zeros(1))) == 0)


def test_plane_layernorm_matches_torch_semantics():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 28, 28, 3)) * 3 + 1
    ln = PlaneLayerNorm()
    p = ln.init(jax.random.PRNGKey(0), x)
    scale = jax.random.normal(jax.random.PRNGKey(2), (28, 28, 1))
    p = {"params": {"scale": scale, "bias": jnp.ones((28, 28, 1))}}
    y = ln.apply(p, x)
    xn = np.asarray(x)
    mu = xn.mean(axis=(1, 2), keepdims=True)
    var = xn.var(axis=(1, 2), keepdims=True)
    want = (xn - mu) / np.sqrt(var + 1e-5) * np.asarray(scale) + 1
    np.testing.assert_allclose(y, want, atol=1e-4)


def test_jit_equals_eager_and_time_matters():
    m = CNN(n_hidden=(8, 8))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
    t = jnp.array([0.1, 0.9])
    p = m.init(jax.random.PRNGKey(0), x, t)
    eager = m.apply(p, x, t)
    jitted = jax.jit(m.apply)(p, x, t)
    np.testing.assert_allclose(eager, jitted, atol=1e-5)
    assert not np.allclose(m.apply(p, x, t), m.apply(p, x, t[::-1]), atol=1e-4)


def test_bf16_close_to_fp32():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
    t = jnp.array([0.3, 0.6])
    m32 = build_model(ModelConfig(hidden=(8, 8)))
    m16 = build_model(ModelConfig(hidden=(8, 8), precision="bf16"))
    p = m32.init(jax.random.PRNGKey(0), x, t)
    a, b = m32.apply(p, x, t), m16.apply(p, x, t)
    assert b.dtype == jnp.float32
    assert float(jnp.abs(a - b).max()) < 0.05 * float(jnp.abs(a).max()) + 0.05


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown precision"):
        build_model(ModelConfig(precision="fp8"))
    with pytest.raises(ValueError, match="unknown model"):
        build_model(ModelConfig(name="mlp"))


def test_fused_layernorm_gelu_equals_unfused_values_and_gradients():
    from jaxdiff.models.layers import gelu

    x = jax.random.normal(jax.random.PRNGKey(3), (2, 28, 28, 4)) * 2 + 0.5
    p = {
        "params": {
            "scale": 1 + 0.1 * jax.random.normal(jax.random.PRNGKey(4), (28, 28, 1)),
            "bias": 0.1 * jax.random.normal(jax.random.PRNGKey(5), (28, 28, 1)),
        }
    }

    def f(fused, p, x):
        y = PlaneLayerNorm(fuse_gelu=fused).apply(p, x)
        return y if fused else gelu(y)

    np.testing.assert_allclose(f(True, p, x), f(False, p, x), atol=1e-5)
    ga = jax.grad(lambda p, x: jnp.sum(jnp.sin(f(True, p, x))), argnums=(0, 1))(p, x)
    gb = jax.grad(lambda p, x: jnp.sum(jnp.sin(f(False, p, x))), argnums=(0, 1))(p, x)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
