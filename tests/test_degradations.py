"""Tests for jaxdiff.degradations: identities, severity, batching, jit, registry."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import degradations as dg
from jaxdiff.data import load_mnist, normalize
from jaxdiff.schedules import make_schedule, q_sample

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(dg.DEGRADATIONS)
T_SMALL = 12


def _data_dir() -> Path:
    return Path(os.environ.get("JAXDIFF_DATA_DIR", ROOT / ".." / "shared" / "data" / "mnist"))


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    try:
        imgs, labels = load_mnist("test", data_dir=_data_dir(), fetch=False)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"MNIST not available: {err}")
    idx = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    return normalize(imgs[idx])  # (10, 28, 28, 1), one of each digit


@functools.cache
def _batched(d: dg.Degradation):
    """One compiled ``jit(vmap(d))`` per degradation, shared by the tests."""
    return jax.jit(jax.vmap(d))


def _call(d: dg.Degradation, x, t, key=None):
    """Batched call: one key per example for stochastic degradations."""
    t = jnp.asarray(t, jnp.int32)
    if d.stochastic:
        keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, x.shape[0])
        return _batched(d)(x, t, keys)
    return _batched(d)(x, t)


def _strip(d: dg.Degradation, x) -> np.ndarray:
    return np.asarray(dg.degradation_strip(d, x, np.arange(d.T + 1), key=jax.random.PRNGKey(1)))


@pytest.mark.parametrize("name", NAMES)
def test_identity_at_t0(name, digits):
    d = dg.get_degradation(name, T_SMALL)
    out = _call(d, jnp.asarray(digits), np.zeros(10))
    assert np.array_equal(np.asarray(out), digits)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_equals_loop_and_jit_equals_eager(name, digits):
    d = dg.get_degradation(name, T_SMALL)
    x = jnp.asarray(digits)
    t = jnp.asarray([0, 1, 2, 3, 5, 7, 8, 10, 11, T_SMALL], jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(0), 10)  # the keys _call uses
    args = (x, t, keys) if d.stochastic else (x, t)
    batched = np.asarray(_call(d, x, t))
    per_example = jax.jit(d)  # traced t: no Python branching on t
    loop = np.stack([np.asarray(per_example(*(a[i] for a in args))) for i in range(10)])
    np.testing.assert_allclose(batched, loop, atol=2e-5)
    eager = np.asarray(d(*(a[4] for a in args)))  # op by op, no jit
    np.testing.assert_allclose(eager, batched[4], atol=2e-5)


def test_noise_is_the_ddpm_forward_process(digits):
    d = dg.get_degradation("noise")
    assert d.T == 1000 and d.stochastic and not d.linear
    sched = make_schedule("linear", 1000)
    key = jax.random.PRNGKey(7)
    x0 = jnp.asarray(digits[0])
    eps = jax.random.normal(key, x0.shape)
    for t in (1, 10, 500, 1000):
        np.testing.assert_allclose(
            np.asarray(d(x0, t, key)), np.asarray(q_sample(sched, x0, t, eps)), atol=1e-6
        )
    # Same key, same draw; another key, another draw.
    assert np.array_equal(np.asarray(d(x0, 300, key)), np.asarray(d(x0, 300, key)))
    assert not np.allclose(
        np.asarray(d(x0, 300, key)), np.asarray(d(x0, 300, jax.random.PRNGKey(8)))
    )
    # Severity: the signal coefficient falls and the noise coefficient rises.
    ab = np.asarray(sched.alpha_bar)
    assert np.all(np.diff(ab[1:]) < 0)


def test_blur_variance_falls_and_mean_is_kept(digits):
    d = dg.get_degradation("blur")
    s = _strip(d, digits)[..., 0]  # (10, T + 1, 28, 28)
    var = s.reshape(10, d.T + 1, -1).var(-1)
    assert np.all(np.diff(var, axis=1) < 0)
    np.testing.assert_allclose(
        s.mean((2, 3)), s[:, :1].mean((2, 3)) * np.ones((1, d.T + 1)), atol=1e-5
    )
    # Fully degraded: nearly flat (the residual blob is < 10% of the digit's contrast).
    assert np.all(s[:, -1].std((1, 2)) < 0.1 * s[:, 0].std((1, 2)))


def test_blur_matches_direct_gaussian_with_reflecting_edges():
    """The DCT operator equals convolution with a sampled Gaussian on the mirrored image."""
    sigma = float(dg.blur_sigmas(50)[20])
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (28, 28, 1)).astype(np.float32)
    out = np.asarray(dg.get_degradation("blur")(jnp.asarray(x), 20))
    n = 28
    # Sum the Gaussian over the images of the reflected, 2n-periodic extension.
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    k = np.zeros((n, n))
    for m in range(-6, 7):
        for src in (j + 2 * n * m, -1 - j + 2 * n * m):
            k += np.exp(-((i - src) ** 2) / (2 * sigma**2))
    k /= np.sqrt(2 * np.pi) * sigma
    ref = np.einsum("ij,jk,lk->il", k, x[..., 0], k)
    np.testing.assert_allclose(out[..., 0], ref, atol=2e-3)


def test_fade_removes_ink_monotonically(digits):
    d = dg.get_degradation("fade")
    s = _strip(d, digits)
    ink = (s + 0.5).sum((2, 3, 4))
    assert np.all(np.diff(ink, axis=1) < 0)
    assert np.all(ink[:, -1] < 0.01 * ink[:, 0])
    assert s.min() >= -0.5 - 1e-6


def test_pixelate_variance_never_rises_and_ends_in_blocks(digits):
    d = dg.get_degradation("pixelate")
    s = _strip(d, digits)[..., 0]
    var = s.reshape(10, d.T + 1, -1).var(-1)
    assert np.all(np.diff(var, axis=1) <= 1e-6)
    assert np.all(var[:, -1] < 0.5 * var[:, 0])
    np.testing.assert_allclose(
        s.sum((2, 3)), s[:, :1].sum((2, 3)) * np.ones((1, d.T + 1)), atol=1e-3
    )
    # The end state is constant on the 4 x 4 blocks with edges at 0, 6, 14, 22, 28.
    edges = [0, 6, 14, 22, 28]
    end = s[:, -1]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        for c, e in zip(edges[:-1], edges[1:], strict=True):
            block = end[:, a:b, c:e]
            assert np.ptp(block, axis=(1, 2)).max() < 1e-5


def test_sediment_conserves_column_ink_and_sinks_linearly(digits):
    d = dg.get_degradation("sediment")
    assert not d.linear and not d.stochastic and d.T == 50
    s = _strip(d, digits)[..., 0] + 0.5  # ink (10, T + 1, 28, 28)
    assert s.min() >= -1e-6 and s.max() <= 1 + 1e-5
    np.testing.assert_allclose(
        s.sum(2), np.broadcast_to(s[:, :1].sum(2), s.sum(2).shape), atol=1e-4
    )
    rows = np.arange(28) + 0.5
    depth = (s * rows[None, None, :, None]).sum((2, 3)) / s.sum((2, 3))
    assert np.all(np.diff(depth, axis=1) > 0)
    frac = np.arange(d.T + 1) / d.T
    linear = depth[:, :1] + (depth[:, -1:] - depth[:, :1]) * frac[None]
    assert np.abs(depth - linear).max() < 0.1  # pixel-centre rounding only
    # End state: solid piles (each column non-decreasing downwards), and settled stays settled.
    end = s[:, -1]
    assert np.diff(end, axis=1).min() > -1e-4
    again = np.asarray(_call(d, jnp.asarray(end[..., None] - 0.5), np.full(10, d.T)))[..., 0] + 0.5
    np.testing.assert_allclose(again, end, atol=1e-4)


def test_sediment_strokes_stay_sharp():
    """A solid horizontal bar falls as a solid bar: no blur, values stay 0 or 1."""
    x = np.full((28, 28, 1), -0.5, np.float32)
    x[3:6, 8:20] = 0.5
    d = dg.get_degradation("sediment", T=25)
    out = np.asarray(d(jnp.asarray(x), 10))[..., 0] + 0.5
    # Bar of height 3 moves from rows 3..6 to rows 25..28; at s = 0.4 its top is at 3 + 0.4 * 22.
    col = out[:, 10]
    np.testing.assert_allclose(col.sum(), 3.0, atol=1e-5)
    top = 3 + 0.4 * 22  # 11.8
    expected = np.clip(
        np.minimum(np.arange(28) + 1, top + 3) - np.maximum(np.arange(28), top), 0, 1
    )
    np.testing.assert_allclose(col, expected, atol=1e-5)
    np.testing.assert_allclose(out[:, :8], 0.0, atol=1e-6)


def test_melt_is_sediment_then_blur_and_keeps_the_ink(digits):
    d = dg.get_degradation("melt")
    assert not d.linear and not d.stochastic and d.T == 50
    sed, bl = dg.get_degradation("sediment"), dg.blur(50, sigma_min=0.3, sigma_max=4.0)
    x = jnp.asarray(digits)
    for t in (1, 17, 50):
        tt = np.full(10, t)
        composed = np.asarray(_call(bl, _call(sed, x, tt), tt))
        np.testing.assert_allclose(np.asarray(_call(d, x, tt)), composed, atol=1e-5)
    s = _strip(d, digits)[..., 0] + 0.5  # ink (10, T + 1, 28, 28)
    # Total ink is conserved exactly (settling keeps column mass, the heat kernel the mean).
    np.testing.assert_allclose(
        s.sum((2, 3)), s[:, :1].sum((2, 3)) * np.ones((1, d.T + 1)), rtol=1e-4
    )
    rows = np.arange(28) + 0.5
    depth = (s * rows[None, None, :, None]).sum((2, 3)) / s.sum((2, 3))
    assert np.all(depth[:, -1] > depth[:, 0] + 4)  # the ink ends low: a dune on the floor
    # The end state is smooth: the settled skyline blurred (no sharp pile tops left).
    assert np.abs(np.diff(s[:, -1], axis=1)).max() < 0.2
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        dg.get_degradation("melt", sigma_max=0.1)


def test_identity_is_the_image_at_every_t(digits):
    d = dg.get_degradation("identity")
    t = jnp.asarray([0, 1, 7, 25, 49, 50, 50, 3, 2, 1], jnp.int32)
    assert np.array_equal(np.asarray(_call(d, jnp.asarray(digits), t)), digits)
    assert d.linear and not d.stochastic and d.T == 50


@pytest.mark.parametrize("name", NAMES)
def test_linear_flag_is_honest(name, digits):
    d = dg.get_degradation(name, T_SMALL)
    x = jnp.asarray(digits)
    y = jnp.roll(x, 1, axis=0)
    t = jnp.full((10,), T_SMALL // 2, jnp.int32)
    a = 0.3
    lhs = np.asarray(_call(d, a * x + (1 - a) * y, t))
    rhs = a * np.asarray(_call(d, x, t)) + (1 - a) * np.asarray(_call(d, y, t))
    gap = np.abs(lhs - rhs).max()
    if d.linear or d.stochastic:  # noise is affine for a fixed key
        assert gap < 1e-5
    else:
        assert gap > 1e-2


def test_registry_and_errors():
    assert set(NAMES) == {"noise", "identity", "blur", "fade", "pixelate", "sediment", "melt"}
    assert {n: dg.default_T(n) for n in NAMES} == dg.DEFAULT_T
    assert dg.get_degradation("blur").T == dg.default_T("blur")
    assert dg.get_degradation("blur", 7).T == 7
    assert dg.DEFAULT_DEGRADATION in dg.DEGRADATIONS
    with pytest.raises(ValueError, match="unknown degradation 'swirl'.*blur.*sediment"):
        dg.get_degradation("swirl")
    with pytest.raises(ValueError, match="unknown degradation"):
        dg.default_T("nope")
    with pytest.raises(ValueError, match="no option.*sigma"):
        dg.get_degradation("sediment", sigma=3.0)
    with pytest.raises(ValueError, match="positive integer"):
        dg.get_degradation("blur", 0)
    with pytest.raises(ValueError, match="kappa"):
        dg.get_degradation("fade", kappa=1.5)
    with pytest.raises(ValueError, match="levels"):
        dg.get_degradation("pixelate", levels=0)
    with pytest.raises(ValueError, match="blocks of 32 px"):
        dg.get_degradation("pixelate", levels=5)(jnp.zeros((28, 28, 1)), 3)


def test_call_errors():
    d = dg.get_degradation("blur")
    with pytest.raises(ValueError, match="one image"):
        d(jnp.zeros((4, 28, 28, 1)), 3)
    with pytest.raises(ValueError, match="integer scalar"):
        d(jnp.zeros((28, 28, 1)), 0.5)
    with pytest.raises(ValueError, match="float image"):
        d(jnp.zeros((28, 28, 1), jnp.uint8), 1)
    with pytest.raises(ValueError, match="stochastic"):
        dg.get_degradation("noise")(jnp.zeros((28, 28, 1)), 3)
    # Out-of-range t is clipped into 0..T.
    x = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (28, 28, 1)), jnp.float32)
    assert np.array_equal(np.asarray(d(x, 99)), np.asarray(d(x, d.T)))


def test_equality_hash_and_strip(digits):
    a, b = dg.get_degradation("blur"), dg.get_degradation("blur")
    assert a == b and hash(a) == hash(b)
    assert a != dg.get_degradation("blur", 49)
    assert a != dg.get_degradation("blur", sigma_max=10.0)
    assert "blur" in repr(a) and a.end_state
    s = np.asarray(dg.degradation_strip(a, digits[:3], [0, 10, 50]))
    assert s.shape == (3, 3, 28, 28, 1)
    np.testing.assert_allclose(s[2, 1], np.asarray(a(jnp.asarray(digits[2]), 10)), atol=1e-6)
    with pytest.raises(ValueError, match="stochastic"):
        dg.degradation_strip(dg.get_degradation("noise"), digits[:2], [0, 5])


def test_degradation_options_round_trip_through_the_config_and_build():
    import json

    from jaxdiff.config import Config, ProcessConfig
    from jaxdiff.pipeline import build

    opts = (("sigma_max", 4.0), ("sigma_min", 0.3))
    cfg = Config(
        process=ProcessConfig(kind="cold", T=50, degradation="blur", degradation_options=opts)
    )
    back = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and hash(back) == hash(cfg)
    assert build(back, 10).degrade == dg.blur(50, sigma_min=0.3, sigma_max=4.0)
    # a config written before the setting loads with the factory's defaults
    old = cfg.to_dict()
    del old["process"]["degradation_options"]
    assert build(Config.from_dict(old), 10).degrade == dg.get_degradation("blur", 50)


# -- a user's own degradation: plug-in factories and the contract check ------------------------

EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture()
def plugins(monkeypatch):
    """docs/examples (the documented example) on sys.path."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_builtins_keep_the_contract_and_identity_is_flagged_as_a_control():
    for name in ("blur", "fade", "pixelate", "sediment", "melt"):
        assert dg.check(dg.get_degradation(name, T_SMALL)).name == name
    dg.check(dg.get_degradation("noise", 50))
    with pytest.raises(dg.DegradationContractError, match=r"breaks 1 property") as err:
        dg.check(dg.get_degradation("identity"))
    assert "D(x0, T) equals x0" in str(err.value)


def test_a_users_factory_loads_by_module_path_with_options(plugins):
    d = dg.check(dg.get_degradation("wipe:wipe", softness=2.0))
    assert (d.name, d.T, d.linear, d.options) == ("wipe:wipe", 28, True, (("softness", 2.0),))
    assert dg.default_T("wipe:wipe") == 28 and dg.get_degradation("wipe:wipe", 10).T == 10
    plain = dg.check(dg.get_degradation("wipe:wipe_plain"))  # a bare function is wrapped
    assert (plain.T, plain.linear, plain.stochastic) == (dg.PLUGIN_DEFAULT_T, False, False)
    with pytest.raises(ValueError, match="cannot import 'nowhere'"):
        dg.get_degradation("nowhere:wipe")
    with pytest.raises(ValueError, match="has no callable 'nothing'"):
        dg.get_degradation("wipe:nothing")
    with pytest.raises(ValueError, match="factory takes"):
        dg.get_degradation("wipe:wipe", radius=3)


def _broken(fn, linear=False, stochastic=False, T=8):  # noqa: N803
    return dg.Degradation("broken", T, fn, linear=linear, stochastic=stochastic)


def _fade(x0, t, T=8):  # noqa: N803 - a good degradation to break in one way at a time
    return x0 + (t / T) * (-0.5 - x0)


_RNG = np.random.default_rng(0)  # impure on purpose: a new draw at every (eager) call
BROKEN = {
    "shape/dtype": _broken(lambda x0, t: _fade(x0, t).astype(jnp.float16)),
    "finite": _broken(lambda x0, t: jnp.where(t == 8, jnp.nan, _fade(x0, t))),
    "pure under jit and vmap": _broken(lambda x0, t: _fade(x0, t) + 0.01 * _RNG.random() * t),
    "severity grows": _broken(lambda x0, t: x0 + jnp.sin(jnp.pi * t / 10) * (-0.5 - x0)),
    "key: declared stochastic": _broken(lambda x0, t, key: _fade(x0, t), stochastic=True),
    "linear: declared affine": _broken(lambda x0, t: _fade(x0, t) + t / 8 * x0**2, linear=True),
    "identity at t = 0": _broken(lambda x0, t: jnp.where(t == 0, -0.5, _fade(x0, t))),
}


@pytest.mark.parametrize("prop", sorted(BROKEN))
def test_check_names_the_one_property_a_broken_degradation_fails(prop):
    with pytest.raises(dg.DegradationContractError) as err:
        dg.check(BROKEN[prop])
    msg = str(err.value)
    assert prop in msg and "breaks 1 property" in msg, msg


def test_check_reports_every_failure_and_refuses_non_degradations():
    both = _broken(lambda x0, t: _fade(x0, t) + t / 8 * (x0**2 + 0.01 * _RNG.random()), linear=True)
    with pytest.raises(dg.DegradationContractError, match="breaks 2 properties"):
        dg.check(both)
    with pytest.raises(TypeError, match="wrap a function as Degradation"):
        dg.check(_fade)
