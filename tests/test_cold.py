"""Tests for jaxdiff.cold: Bansal Alg. 1 / 2 with oracle restorers, start states, errors."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import cold, start_states
from jaxdiff.data import load_mnist, normalize
from jaxdiff.degradations import get_degradation

ROOT = Path(__file__).resolve().parents[1]
DETERMINISTIC = ["blur", "fade", "pixelate", "sediment"]
AFFINE = ["blur", "fade", "pixelate"]
T = 8


def _data_dir() -> Path:
    return Path(os.environ.get("JAXDIFF_DATA_DIR", ROOT / ".." / "shared" / "data" / "mnist"))


@pytest.fixture(scope="module")
def mnist() -> np.ndarray:
    try:
        imgs, _ = load_mnist("test", data_dir=_data_dir(), fetch=False)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"MNIST not available: {err}")
    return imgs[:400]


@pytest.fixture(scope="module")
def x0(mnist) -> jax.Array:
    return jnp.asarray(normalize(mnist[:6]))


def oracle(params, x, t_frac):
    """A restorer that ignores its input and returns the images held in ``params``."""
    del x, t_frac
    return params


def toy(params, x, t_frac):
    """A small non-trivial restorer that depends on the state and the time."""
    return 0.5 * jnp.tanh(params["w"] * x + params["b"] * t_frac[:, None, None, None])


TOY = {"w": jnp.float32(1.7), "b": jnp.float32(-0.8)}


@functools.cache
def _batched(d):
    return jax.jit(jax.vmap(d))


def _degrade(d, x, t, keys=None):
    tt = jnp.full((x.shape[0],), t, jnp.int32)
    return _batched(d)(x, tt) if keys is None else _batched(d)(x, tt, keys)


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_oracle_recovers_x0_and_walks_the_forward_states(name, algorithm, x0):
    d = get_degradation(name, T)
    x_T = _degrade(d, x0, T)  # noqa: N806
    out, traj = cold.cold_sample(oracle, x0, d, x_T, T, algorithm, keep=3)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-4)
    assert traj.t.tolist() == [8, 4, 0]
    assert traj.x_t.shape == (3, *x0.shape)
    np.testing.assert_allclose(np.asarray(traj.x_t[0]), np.asarray(x_T), atol=1e-6)
    np.testing.assert_allclose(np.asarray(traj.x_t[1]), np.asarray(_degrade(d, x0, 4)), atol=1e-4)
    np.testing.assert_allclose(np.asarray(traj.x0_hat[1]), np.asarray(x0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(traj.x_t[2]), np.asarray(out), atol=1e-6)


@pytest.mark.parametrize("name", AFFINE)
def test_alg2_closed_form_for_affine_degradations(name, x0):
    """Restorer off by a fixed delta: Alg. 2 gives x0 + delta - A_T delta, Alg. 1 x0 + delta."""
    d = get_degradation(name, T)
    delta = 0.05 * jax.random.normal(jax.random.PRNGKey(0), x0.shape)
    x_T = _degrade(d, x0, T)  # noqa: N806
    a_t_delta = _degrade(d, delta, T) - _degrade(d, jnp.zeros_like(delta), T)
    out2 = cold.cold_sample(oracle, x0 + delta, d, x_T, algorithm=2)
    np.testing.assert_allclose(np.asarray(out2), np.asarray(x0 + delta - a_t_delta), atol=1e-4)
    out1 = cold.cold_sample(oracle, x0 + delta, d, x_T, algorithm=1)
    np.testing.assert_allclose(np.asarray(out1), np.asarray(x0 + delta), atol=1e-5)
    # Alg. 2 removes the part of the error that survives full degradation.
    assert float(jnp.abs(out2 - x0).mean()) < float(jnp.abs(out1 - x0).mean())


@pytest.mark.parametrize("algorithm", [1, 2])
def test_noise_oracle_with_fixed_keys(algorithm, x0):
    d = get_degradation("noise", 20)
    key = jax.random.PRNGKey(5)
    out, traj = cold.restore(oracle, x0, d, x0, 20, algorithm=algorithm, keep=(20, 0), key=key)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-4)
    # The start state is the noised input, one key per example, the same keys at every step.
    keys = jax.random.split(key, x0.shape[0])
    np.testing.assert_allclose(
        np.asarray(traj.x_t[0]), np.asarray(_degrade(d, x0, 20, keys)), atol=1e-6
    )
    with pytest.raises(ValueError, match="stochastic"):
        cold.cold_sample(oracle, x0, d, x0)


@pytest.mark.parametrize("algorithm", [1, 2])
def test_scan_matches_python_loop_reference(algorithm, x0):
    d = get_degradation("sediment", 6)
    x = _degrade(d, x0, 6)
    ref = x
    for t in range(6, 0, -1):
        tf = jnp.full((x0.shape[0],), t / 6, jnp.float32)
        x0_hat = toy(TOY, ref, tf)
        if algorithm == 1:
            ref = _degrade(d, x0_hat, t - 1)
        else:
            ref = ref - _degrade(d, x0_hat, t) + _degrade(d, x0_hat, t - 1)
    out = cold.cold_sample(toy, TOY, d, x, algorithm=algorithm)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    # Deterministic: the same inputs give the same output, bit for bit.
    again = cold.cold_sample(toy, TOY, d, x, algorithm=algorithm)
    assert np.array_equal(np.asarray(out), np.asarray(again))


def test_strided_steps_keep_times_and_restore(x0):
    d = get_degradation("blur", 12)
    x_T = _degrade(d, x0, 12)  # noqa: N806
    out, traj = cold.cold_sample(oracle, x0, d, x_T, keep=(12, 6, 0), steps=4)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-4)
    assert traj.t.tolist() == [12, 6, 0]
    np.testing.assert_allclose(np.asarray(traj.x_t[1]), np.asarray(_degrade(d, x0, 6)), atol=1e-5)
    with pytest.raises(ValueError, match="not on this run's time grid"):
        cold.cold_sample(oracle, x0, d, x_T, keep=(5,), steps=4)
    with pytest.raises(ValueError, match="exceeds"):
        cold.cold_sample(oracle, x0, d, x_T, steps=13)
    with pytest.raises(ValueError, match="keep must be >= 0"):
        cold.cold_sample(oracle, x0, d, x_T, keep=-1, steps=4)
    # Asking for more states than the run has keeps them all.
    _, traj = cold.cold_sample(oracle, x0, d, x_T, keep=20, steps=4)
    assert traj.t.tolist() == [12, 9, 6, 3, 0]
    # Conditional restoration from t_start = 5 with the oracle, and with the toy restorer
    # it equals sampling from the degraded input over the grid 5..0.
    np.testing.assert_allclose(
        np.asarray(cold.restore(oracle, x0, d, x0, 5)), np.asarray(x0), atol=1e-4
    )
    r = cold.restore(toy, TOY, d, x0, 5, algorithm=1)
    assert r.shape == x0.shape and bool(jnp.all(jnp.isfinite(r)))


def test_errors(x0):
    d = get_degradation("blur", T)
    x_T = _degrade(d, x0, T)  # noqa: N806
    with pytest.raises(ValueError, match="algorithm must be 1"):
        cold.cold_sample(oracle, x0, d, x_T, algorithm=3)
    with pytest.raises(ValueError, match="does not match the degradation's T=8"):
        cold.cold_sample(oracle, x0, d, x_T, T=1000)
    with pytest.raises(ValueError, match="Degradation"):
        cold.cold_sample(oracle, x0, lambda x, t: x, x_T)
    with pytest.raises(ValueError, match="batch"):
        cold.cold_sample(oracle, x0, d, x_T[0])
    with pytest.raises(ValueError, match="t_start must be in 1..8"):
        cold.restore(oracle, x0, d, x0, 0)
    with pytest.raises(ValueError, match="images must be"):
        start_states.fit_start_distribution(d, np.zeros((5, 28, 28), np.int64), jax.random.key(0))


def test_gmm_em_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    a = rng.normal([-3.0, 0.0], [0.5, 1.0], (300, 2))
    b = rng.normal([4.0, 2.0], [1.0, 0.3], (700, 2))
    w, mu, var = start_states._fit_gmm(np.concatenate([a, b]), 2, rng, 200, 1e-6)
    order = np.argsort(mu[:, 0])
    np.testing.assert_allclose(w[order], [0.3, 0.7], atol=0.02)
    np.testing.assert_allclose(mu[order], [[-3, 0], [4, 2]], atol=0.15)
    np.testing.assert_allclose(np.sqrt(var[order]), [[0.5, 1.0], [1.0, 0.3]], atol=0.1)


def test_start_distribution_sediment(mnist):
    d = get_degradation("sediment")
    key = jax.random.PRNGKey(0)
    dist = start_states.fit_start_distribution(d, mnist, key=key, n_components=4, n_pca=12)
    again = start_states.fit_start_distribution(d, mnist, key=key, n_components=4, n_pca=12)
    for u, v in zip(dist, again, strict=True):
        assert np.array_equal(np.asarray(u), np.asarray(v))
    assert dist.basis.shape == (12, 28, 28, 1) and dist.means.shape == (4, 12)
    np.testing.assert_allclose(float(dist.weights.sum()), 1.0, atol=1e-5)
    basis = np.asarray(dist.basis).reshape(12, -1)
    np.testing.assert_allclose(basis @ basis.T, np.eye(12), atol=1e-4)
    # The mean start state is the mean skyline of the degraded images.
    ends = np.asarray(cold.degrade_batch(d, jnp.asarray(normalize(mnist)), d.T, None))
    np.testing.assert_allclose(np.asarray(dist.mean), ends.mean(0), atol=1e-5)

    k = jax.random.PRNGKey(1)
    s = start_states.sample_start(dist, k, 16, noise_std=0.0)
    assert s.shape == (16, 28, 28, 1)
    assert np.array_equal(np.asarray(s), np.asarray(start_states.sample_start(dist, k, 16, 0.0)))
    assert not np.allclose(
        np.asarray(s), np.asarray(start_states.sample_start(dist, jax.random.PRNGKey(2), 16, 0.0))
    )
    # Without noise a draw lies in mean + span(basis).
    flat = np.asarray(s).reshape(16, -1) - np.asarray(dist.mean).reshape(-1)
    resid = flat - (flat @ basis.T) @ basis
    assert np.abs(resid).max() < 1e-4
    # Re-settled draws are legitimate end states: solid piles, and distinct from each other.
    p = np.asarray(start_states.start_sampler(dist, noise_std=0.0, degrade=d)(k, 16))[..., 0] + 0.5
    assert np.diff(p, axis=1).min() > -1e-4
    assert np.ptp(p.sum((1, 2))) > 1.0
    noisy = start_states.sample_start(dist, k, 16, noise_std=0.05, degrade=d)
    np.testing.assert_allclose((np.asarray(noisy) - (p[..., None] - 0.5)).std(), 0.05, rtol=0.1)


def test_start_distribution_handles_collapsed_end_states(mnist):
    d = get_degradation("fade", T)
    key = jax.random.PRNGKey(0)
    dist = start_states.fit_start_distribution(d, mnist, key=key, n_components=4, n_pca=12)
    s = start_states.sample_start(dist, jax.random.PRNGKey(1), 16, noise_std=0.0)
    assert bool(jnp.all(jnp.isfinite(s)))
    # Fade ends in (nearly) black for every digit: the fitted start states are nearly black.
    assert float(jnp.abs(s + 0.5).max()) < 0.1


def test_stochastic_reverse_adds_step_noise_but_not_at_the_end():
    """Constant restorer c: Alg. 1 states are D(c, t) + noise * z, and x_0 = c exactly;
    Alg. 2 accumulates the noise of every step but the last: x_0 - c ~ N(0, noise^2 (T-1))."""
    d = get_degradation("blur", T)
    c = jnp.full((256, 28, 28, 1), 0.1, jnp.float32)
    x_T = _batched(d)(c, jnp.full((256,), T, jnp.int32))
    key = jax.random.PRNGKey(3)
    out1, traj = cold.cold_sample(oracle, c, d, x_T, algorithm=1, keep=T + 1, key=key, noise=0.05)
    np.testing.assert_allclose(np.asarray(out1), np.asarray(c), atol=1e-6)
    for i, t in enumerate(traj.t[1:-1], start=1):
        resid = np.asarray(traj.x_t[i]) - np.asarray(_batched(d)(c, jnp.full((256,), t)))
        assert abs(resid.std() - 0.05) < 0.002 and abs(resid.mean()) < 0.002
    out2 = cold.cold_sample(oracle, c, d, x_T, algorithm=2, key=key, noise=0.05)
    resid = np.asarray(out2) - np.asarray(c)
    assert abs(resid.std() / (0.05 * np.sqrt(T - 1)) - 1) < 0.02
    again = cold.cold_sample(oracle, c, d, x_T, algorithm=2, key=key, noise=0.05)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(out2))
    other = cold.cold_sample(oracle, c, d, x_T, algorithm=2, key=jax.random.PRNGKey(4), noise=0.05)
    assert np.abs(np.asarray(other) - np.asarray(out2)).max() > 0.05
    # noise 0 with a key is the deterministic algorithm
    det = cold.cold_sample(oracle, c, d, x_T, algorithm=2, key=key, noise=0.0)
    np.testing.assert_array_equal(
        np.asarray(det), np.asarray(cold.cold_sample(oracle, c, d, x_T, algorithm=2))
    )
    with pytest.raises(ValueError, match="noise > 0.*needs key"):
        cold.cold_sample(oracle, c, d, x_T, noise=0.05)
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        cold.cold_sample(oracle, c, d, x_T, key=key, noise=-1.0)
    with pytest.raises(ValueError, match=r"T \+ 1 = 9 of them"):
        cold.cold_sample(oracle, c, d, x_T, key=key, noise=[0.1, 0.2])


def test_alg2_with_a_growing_noise_level_shrinks_the_residual():
    """sigma(t) = 0.08 t / T, constant restorer c, x_T = D(c, T) + sigma(T) z: deterministic
    Alg. 2 scales the residual by sigma(s) / sigma(t) each step, so it vanishes at t = 0."""
    from jaxdiff.cold import noise_levels

    d = get_degradation("blur", T)
    sig = noise_levels(T, 0.08, "linear")
    np.testing.assert_allclose(sig, 0.08 * np.arange(T + 1) / T, rtol=1e-6)
    c = jnp.full((64, 28, 28, 1), 0.1, jnp.float32)
    z = jax.random.normal(jax.random.PRNGKey(1), c.shape)
    x_T = _batched(d)(c, jnp.full((64,), T, jnp.int32)) + sig[T] * z
    out, traj = cold.cold_sample(oracle, c, d, x_T, keep=T + 1, residual_sigmas=sig)
    np.testing.assert_allclose(np.asarray(out), np.asarray(c), atol=1e-5)
    for i, t in enumerate(traj.t):  # x_t = D(c, t) + sigma(t) z all along
        want = _batched(d)(c, jnp.full((64,), t)) + sig[t] * z
        np.testing.assert_allclose(np.asarray(traj.x_t[i]), np.asarray(want), atol=1e-5)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        noise_levels(T, 0.1, "cosine")


def test_deterministic_alg2_restores_from_the_noisy_state_it_was_trained_on():
    """Restoring with residual_sigmas and no step noise starts at D(x0, t) + sigma(t) z."""
    from jaxdiff.cold import noise_levels

    d = get_degradation("blur", T)
    sig = noise_levels(T, 0.3, "linear")
    c = jnp.full((64, 28, 28, 1), 0.1, jnp.float32)
    out, traj = cold.restore(
        oracle, c, d, c, 4, keep=(4, 0), residual_sigmas=sig, key=jax.random.PRNGKey(3)
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(c), atol=1e-5)
    resid = np.asarray(traj.x_t[0] - _degrade(d, c, 4))
    assert abs(resid.std() - sig[4]) < 0.01 * sig[4] + 2e-3 and abs(resid.mean()) < 5e-3
    with pytest.raises(ValueError, match="noisy state .* needs key="):
        cold.restore(oracle, c, d, c, 4, residual_sigmas=sig)


def test_cold_loss_training_noise_has_its_closed_form():
    """Identity degradation and identity restorer: the L2 loss is the noise variance."""
    from jaxdiff.losses import cold_loss

    def identity_d(x0, t):
        del t
        return x0

    def identity_r(params, x, t_frac):
        del params, t_frac
        return x

    x0 = jnp.zeros((64, 28, 28, 1))
    loss, _ = cold_loss(identity_r, identity_d, 10, "l2", noise_std=0.2)(
        None, x0, jax.random.key(0)
    )
    assert abs(float(loss) / 0.04 - 1) < 0.02
    loss, _ = cold_loss(identity_r, identity_d, 10, "l1", noise_std=0.2)(
        None, x0, jax.random.key(0)
    )
    assert abs(float(loss) / (0.2 * np.sqrt(2 / np.pi)) - 1) < 0.02  # E|N(0, s^2)| = s sqrt(2/pi)
    assert float(cold_loss(identity_r, identity_d, 10)(None, x0, jax.random.key(0))[0]) == 0.0
    # a linear schedule: E[sigma(t)^2] over t ~ U{1..T} = s^2 (T + 1)(2T + 1) / (6 T^2)
    table = 0.2 * np.arange(11) / 10
    l2, _ = cold_loss(identity_r, identity_d, 10, "l2", noise_std=table)(
        None, jnp.zeros((512, 28, 28, 1)), jax.random.key(1)
    )
    assert abs(float(l2) / (0.04 * 11 * 21 / 600) - 1) < 0.05
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        cold_loss(identity_r, identity_d, 10, noise_std=-0.1)


def test_run_noise_tables_follow_the_config():
    from jaxdiff.config import Config, ProcessConfig
    from jaxdiff.samplers import cold_noise_tables, default_sampler

    lin = Config(
        process=ProcessConfig(
            kind="cold", T=4, degradation="melt", noise=0.2, noise_schedule="linear"
        )
    )
    step, residual = cold_noise_tables(lin)
    np.testing.assert_allclose(residual, [0, 0.05, 0.1, 0.15, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(step, np.zeros(5))  # sample_noise 0: Alg. 2 carries it
    np.testing.assert_allclose(cold_noise_tables(lin, 0.4)[0], 2 * residual, rtol=1e-6)
    assert default_sampler(lin) == "cold2"
    const = Config(
        process=ProcessConfig(kind="cold", T=4, degradation="blur", noise=0.01, sample_noise=0.0125)
    )
    step, residual = cold_noise_tables(const)
    assert residual is None and default_sampler(const) == "cold1"
    np.testing.assert_allclose(step, [0, 0.0125, 0.0125, 0.0125, 0.0125], rtol=1e-6)


def test_start_states_are_re_degraded_only_when_the_end_state_is_a_fixed_point(mnist):
    from jaxdiff.start_states import end_state_is_fixed

    key = jax.random.key(0)
    # sediment's skylines and pixelate's block means are fixed points of D(., T) ...
    assert end_state_is_fixed(get_degradation("sediment"), mnist[:8], key)
    assert end_state_is_fixed(get_degradation("pixelate"), mnist[:8], key)
    # ... blur and melt are not: a second D(., T) blurs further, past what R was trained on
    assert not end_state_is_fixed(get_degradation("blur"), mnist[:8], key)
    assert not end_state_is_fixed(get_degradation("melt"), mnist[:8], key)
