import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.config import ModelConfig
from jaxdiff.models import build_model
from jaxdiff.models.unet import UNet, timestep_embedding

# Compilation dominates the cost of these tests on a small CPU (a UNet ``init`` takes several
# seconds to compile or to run eagerly the first time), so one small network with attention is
# shared, with its jitted apply, filled with NumPy random parameters of the shapes ``init`` gives.
SMALL = dict(hidden=(8, 16, 16), num_groups=4)
M_ATT = UNet(**SMALL, attention=True, zero_init=False)
APPLY = jax.jit(M_ATT.apply)
KEY = jax.random.PRNGKey(0)


def _n_params(p):
    return sum(x.size for x in jax.tree.leaves(p))


def _inputs(b=3, seed=0):
    kx, kt = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, (b, 28, 28, 1)), jax.random.uniform(kt, (b,))


def _expected_count(hidden, attention=False, skip="add", blocks=1):
    """Independent count of the UNet's parameters from its layer shapes."""
    c0 = hidden[0]
    d = 4 * c0

    def res(cin, c):
        n = 2 * cin + (9 * cin * c + c) + (d * c + c) + 2 * c + (9 * c * c + c)
        return n + (cin * c + c if cin != c else 0)

    n = (c0 * d + d) + (d * d + d)  # time MLP on c0 sinusoidal features
    n += 9 * c0 + c0  # stem conv
    cin = c0
    for c in hidden[:-1]:
        n += res(cin, c) + (blocks - 1) * res(c, c)
        cin = c
    n += res(cin, hidden[-1]) + res(hidden[-1], hidden[-1])
    if attention:
        c = hidden[-1]
        n += 2 * c + (c * 3 * c + 3 * c) + (c * c + c)
    cin = hidden[-1]
    for c in reversed(hidden[:-1]):
        if skip == "add":
            n += (cin * c + c) + res(c, c)  # 1x1 projection, then a block at width c
        else:
            n += res(cin + c, c)
        n += (blocks - 1) * res(c, c)
        cin = c
    return n + 2 * c0 + 9 * c0 + 1  # final GroupNorm and conv


def _random_params(module, x, t, seed=0):
    """Parameters of ``module``'s shapes: kernels ~ N(0, 1/fan_in), others ~ 1 or 0 + N(0, 0.1)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if leaf.ndim > 1:
            std = 1.0 / math.sqrt(math.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0, std, leaf.shape), jnp.float32)
        base = 1.0 if "scale" in name else 0.0
        return jnp.asarray(base + rng.normal(0, 0.1, leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(module.init, KEY, x, t))


@pytest.fixture(scope="module")
def small():
    x, t = _inputs()
    return _random_params(M_ATT, x, t), x, t


def test_default_shape_dtype_and_parameter_count():
    m = UNet()
    x, t = _inputs(2)
    p = jax.eval_shape(m.init, KEY, x, t)
    assert m.hidden == (32, 64, 64)
    assert _n_params(p) == 386241 == _expected_count((32, 64, 64))
    for kw, n in [(dict(attention=True), 403009), (dict(skip="concat"), 446913)]:
        assert _n_params(jax.eval_shape(UNet(**kw).init, KEY, x, t)) == n
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p))
    y = jax.eval_shape(m.apply, p, x, t)
    assert y.shape == (2, 28, 28, 1) and y.dtype == jnp.float32
    y16 = jax.eval_shape(UNet(dtype=jnp.bfloat16).apply, p, x, t)
    assert y16.shape == (2, 28, 28, 1) and y16.dtype == jnp.float32


@pytest.mark.parametrize("hidden", [(8, 16, 24), (8, 16), (16,)])
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("skip", ["add", "concat"])
@pytest.mark.parametrize("blocks", [1, 2])
def test_parameter_count_matches_layer_shapes(hidden, attention, skip, blocks):
    m = UNet(hidden=hidden, attention=attention, num_groups=4, skip=skip, num_res_blocks=blocks)
    x, t = _inputs(1)
    shapes = jax.eval_shape(m.init, KEY, x, t)
    assert _n_params(shapes) == _expected_count(hidden, attention, skip, blocks)
    assert jax.eval_shape(m.apply, shapes, x, t).shape == x.shape


def test_zero_init_predicts_zero_but_learns(small):
    p, x, t = small
    # A real init of a tiny network (a cheap random-bit generator keeps its compile short).
    tiny = UNet(hidden=(4, 4), num_groups=2, attention=True)
    real = jax.jit(tiny.init)(jax.random.key(0, impl="unsafe_rbg"), x[:1], t[:1])["params"]
    for leaf in (real["out_conv"], real["attention"]["proj"]):
        assert all(np.all(np.asarray(a) == 0) for a in jax.tree.leaves(leaf))
    assert all(np.any(np.asarray(a) != 0) for a in jax.tree.leaves(real["ResBlock_0"]["Conv_0"]))
    # With a zero output convolution the network predicts exactly zero, yet that
    # convolution gets a non-zero gradient, so training starts.
    zero = jax.tree.map(jnp.zeros_like, p["params"]["out_conv"])
    p = {"params": {**p["params"], "out_conv": zero}}
    assert np.all(np.asarray(APPLY(p, x, t)) == 0.0)
    g = jax.jit(jax.grad(lambda p: jnp.mean(jnp.square(M_ATT.apply(p, x, t) - x))))(p)
    assert float(jnp.abs(g["params"]["out_conv"]["kernel"]).max()) > 0


def test_jit_equals_eager(small):
    p, x, t = small
    eager = M_ATT.apply(p, x, t)
    assert float(jnp.abs(eager).max()) > 1e-3  # a non-trivial output
    np.testing.assert_allclose(APPLY(p, x, t), eager, rtol=1e-5, atol=1e-5)


def test_bf16_close_to_fp32(small):
    p, x, t = small
    m16 = UNet(**SMALL, attention=True, zero_init=False, dtype=jnp.bfloat16)
    a, b = APPLY(p, x, t), jax.jit(m16.apply)(p, x, t)
    assert b.dtype == jnp.float32 and b.shape == a.shape
    rel = float(jnp.sqrt(jnp.mean(jnp.square(a - b)) / jnp.mean(jnp.square(a))))
    assert 0 < rel < 0.03


def test_attention_on_and_off(small):
    p, x, t = small
    assert "attention" in p["params"]
    # The same parameters without the attention block form a valid attention-free network.
    m_off = UNet(**SMALL)
    off = {"params": {k: v for k, v in p["params"].items() if k != "attention"}}
    assert jax.tree.structure(off) == jax.tree.structure(jax.eval_shape(m_off.init, KEY, x, t))
    y_off = jax.jit(m_off.apply)(off, x, t)
    y_on = APPLY(p, x, t)
    for y in (y_on, y_off):
        assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))
    # A random attention block changes the output; one with a zero output projection (its
    # initial state under zero_init) is exactly the identity.
    assert float(jnp.abs(y_on - y_off).max()) > 1e-3
    att = dict(p["params"]["attention"])
    att["proj"] = jax.tree.map(jnp.zeros_like, att["proj"])
    y_id = APPLY({"params": {**p["params"], "attention": att}}, x, t)
    np.testing.assert_allclose(y_id, y_off, atol=1e-5)


def test_time_changes_output(small):
    p, x, t = small
    a = APPLY(p, x, t)
    b = APPLY(p, x, jnp.clip(t + 0.2, 0.0, 1.0))
    assert float(jnp.abs(a - b).max()) > 1e-3
    # ... per example: changing one example's time leaves the others' outputs alone.
    c = APPLY(p, x, t.at[0].set(1.0 - t[0]))
    assert float(jnp.abs(a[0] - c[0]).max()) > 1e-3
    np.testing.assert_allclose(a[1:], c[1:], rtol=1e-5, atol=1e-5)


def test_batch_equals_per_example(small):
    p, x, t = small
    batched = APPLY(p, x, t)
    single = jnp.concatenate([APPLY(p, x[i : i + 1], t[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)


def test_timestep_embedding_closed_form():
    t = jnp.array([0.0, 0.001, 0.5])
    e = timestep_embedding(t, 8)
    w = 10000.0 ** (-np.arange(4) / 4)
    args = 1000.0 * np.outer(np.asarray(t), w)
    np.testing.assert_allclose(e, np.concatenate([np.sin(args), np.cos(args)], 1), atol=1e-4)
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(t, 7)


def test_factory_builds_unet():
    m = build_model(ModelConfig(name="unet", hidden=(8, 16, 16), precision="bf16"))
    assert isinstance(m, UNet) and m.dtype == jnp.bfloat16 and m.hidden == (8, 16, 16)
    deep = build_model(ModelConfig(name="unet", hidden=(8, 16, 16), attention=True, res_blocks=2))
    assert deep.num_res_blocks == 2 and deep.attention


def test_errors():
    x, t = _inputs(2)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="num_groups"):
        jax.eval_shape(UNet(hidden=(12, 16, 16)).init, key, x, t)
    with pytest.raises(ValueError, match="not divisible by 2"):
        jax.eval_shape(UNet(hidden=(8, 8, 8, 8)).init, key, x, t)
    with pytest.raises(ValueError, match="t_frac must have shape"):
        jax.eval_shape(UNet(hidden=(8, 16, 16)).init, key, x, t[:1])
    with pytest.raises(ValueError, match="skip must be"):
        jax.eval_shape(UNet(hidden=(8, 16, 16), skip="sum").init, key, x, t)
    with pytest.raises(ValueError, match="unknown conv impl"):
        jax.eval_shape(UNet(hidden=(8, 16, 16), conv_impl="nope").init, key, x, t)


def test_norm_fp32_keeps_parameters_and_fp32_values_and_is_closer_in_bf16(small):
    p, x, t = small
    kw = dict(**SMALL, attention=True, zero_init=False)
    legacy = UNet(**kw, norm_fp32=False)
    assert jax.tree.structure(legacy.init(jax.random.key(0), x, t)) == jax.tree.structure(p)
    # fp32: the same computation, bitwise
    np.testing.assert_array_equal(jax.jit(legacy.apply)(p, x, t), APPLY(p, x, t))
    # bf16: the fp32 GroupNorm + SiLU moves the result towards the fp32 model, never further
    ref = APPLY(p, x, t)

    def rel(m):
        y = jax.jit(m.apply)(p, x, t)
        return float(jnp.sqrt(jnp.mean(jnp.square(y - ref)) / jnp.mean(jnp.square(ref))))

    r_new = rel(UNet(**kw, dtype=jnp.bfloat16, norm_fp32=True))
    r_old = rel(UNet(**kw, dtype=jnp.bfloat16, norm_fp32=False))
    assert 0 < r_new < 0.03 and 0 < r_old < 0.03
    assert r_new <= 1.1 * r_old


def test_configs_before_norm_fp32_load_with_the_bf16_norm_they_ran_with():
    from jaxdiff.config import Config

    assert Config().model.norm_fp32 is True
    old = Config.from_dict({"model": {"name": "unet", "precision": "bf16"}})
    assert old.model.norm_fp32 is False
    assert Config.from_dict(Config().to_dict()) == Config()
