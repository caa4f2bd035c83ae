import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.models import CNN
from jaxdiff.sampling import ddim_sample, ddim_timesteps, ddpm_sample
from jaxdiff.schedules import linear

SCHED = linear(1e-4, 0.2, 20)
MODEL = CNN(n_hidden=(4, 4), kernel_size=3)
PARAMS = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1))
SHAPE = (3, 28, 28, 1)


def test_ancestral_deterministic_per_key_and_differs_across_keys():
    a, _ = ddpm_sample(MODEL.apply, PARAMS, SCHED, jax.random.PRNGKey(1), SHAPE)
    b, _ = ddpm_sample(MODEL.apply, PARAMS, SCHED, jax.random.PRNGKey(1), SHAPE)
    c, _ = ddpm_sample(MODEL.apply, PARAMS, SCHED, jax.random.PRNGKey(2), SHAPE)
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).mean()) > 0.1
    assert np.all(np.isfinite(a))


def test_ancestral_matches_python_loop_of_starter_update():
    key = jax.random.PRNGKey(3)
    got, kept = ddpm_sample(MODEL.apply, PARAMS, SCHED, key, SHAPE, keep=(20, 10, 1))
    k_init, k_steps = jax.random.split(key)
    z = jax.random.normal(k_init, SHAPE)
    states = {}
    for i in range(20, 0, -1):
        eps = MODEL.apply(PARAMS, z, jnp.full((3,), i / 20))
        b, ab = SCHED.beta[i], SCHED.alpha_bar[i]
        z = (z - b / jnp.sqrt(1 - ab) * eps) / jnp.sqrt(1 - b)
        if i > 1:
            z = z + jnp.sqrt(b) * jax.random.normal(jax.random.fold_in(k_steps, i), SHAPE)
        states[i] = z
    np.testing.assert_allclose(got, z, atol=1e-4)
    for j, t in enumerate((20, 10, 1)):
        np.testing.assert_allclose(kept[j], states[t], atol=1e-4)


def test_ddim_eta1_all_steps_equals_ancestral_beta_tilde():
    key = jax.random.PRNGKey(4)
    a, _ = ddpm_sample(MODEL.apply, PARAMS, SCHED, key, SHAPE, variance="beta_tilde")
    d, _ = ddim_sample(MODEL.apply, PARAMS, SCHED, key, SHAPE, steps=20, eta=1.0)
    np.testing.assert_allclose(a, d, atol=2e-4)


def test_ddim_eta0_is_deterministic_given_start():
    k = jax.random.PRNGKey(5)
    a, _ = ddim_sample(MODEL.apply, PARAMS, SCHED, k, SHAPE, steps=5, eta=0.0)
    b, _ = ddim_sample(MODEL.apply, PARAMS, SCHED, k, SHAPE, steps=5, eta=0.0)
    np.testing.assert_array_equal(a, b)
    c, _ = ddim_sample(MODEL.apply, PARAMS, SCHED, k, SHAPE, steps=5, eta=0.5)
    assert float(jnp.abs(a - c).mean()) > 1e-3


def test_ddim_timesteps():
    np.testing.assert_array_equal(ddim_timesteps(20, 4), [20, 15, 10, 5, 0])
    ts = ddim_timesteps(1000, 7)
    assert ts[0] == 1000 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
    with pytest.raises(ValueError, match="DDIM steps must be in 1..20"):
        ddim_timesteps(20, 0)


def _oracle(x_star, sched):
    """The exact epsilon predictor for data that is the single image ``x_star``."""
    T = sched.T  # noqa: N806

    def apply(params, z, t_frac):
        t = jnp.round(t_frac * T).astype(jnp.int32)
        ab = sched.alpha_bar[t][:, None, None, None]
        return (z - jnp.sqrt(ab) * x_star) / jnp.sqrt(1.0 - ab)

    return apply


def test_ddim_clip_x0_changes_nothing_in_range_and_clips_out_of_range():
    key = jax.random.PRNGKey(6)
    x_in = jnp.linspace(-0.9, 0.9, 28 * 28).reshape(1, 28, 28, 1)
    apply_in = _oracle(x_in, SCHED)
    a, _ = ddim_sample(apply_in, None, SCHED, key, SHAPE, steps=5)
    b, _ = ddim_sample(apply_in, None, SCHED, key, SHAPE, steps=5, clip_x0=True)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # closed form: with the exact predictor, eta = 0 keeps eps fixed at the start's, so the
    # last step lands on sqrt(ab_0) x* + sqrt(1 - ab_0) eps_T
    z_T = jax.random.normal(jax.random.split(key)[0], SHAPE)  # noqa: N806
    ab_T, ab_0 = SCHED.alpha_bar[20], SCHED.alpha_bar[0]  # noqa: N806
    eps_T = (z_T - jnp.sqrt(ab_T) * x_in) / jnp.sqrt(1 - ab_T)  # noqa: N806
    np.testing.assert_allclose(a, jnp.sqrt(ab_0) * x_in + jnp.sqrt(1 - ab_0) * eps_T, atol=1e-4)

    x_out = jnp.full((1, 28, 28, 1), 1.5)
    apply_out = _oracle(x_out, SCHED)
    raw, _ = ddim_sample(apply_out, None, SCHED, key, SHAPE, steps=5)
    clipped, _ = ddim_sample(apply_out, None, SCHED, key, SHAPE, steps=5, clip_x0=True)
    assert float(jnp.abs(raw - 1.5).max()) < 0.06
    # clipped, each step heads for x0 = 1; the last lands on sqrt(ab_0) + sqrt(1 - ab_0) eps
    # (ab_0 = 1 - 1e-4 here, so the noise term is 0.01 eps)
    assert float(jnp.abs(clipped - 1.0).max()) < 0.06
    assert float(jnp.abs(clipped - 1.0).mean()) < 0.02


def _gaussian_data_denoiser(sched, mu, s):
    """The exact epsilon-prediction for data x0 ~ N(mu, s^2 I): E[eps | z_t]."""
    T = sched.T

    def apply_fn(params, z, t_frac):
        del params
        t = jnp.round(t_frac * T).astype(jnp.int32)
        ab = sched.alpha_bar[t][:, None, None, None]
        a, sig = jnp.sqrt(ab), jnp.sqrt(1 - ab)
        return sig * (z - a * mu) / (ab * s**2 + sig**2)

    return apply_fn


def _pf_ode_solution(sched, mu, s, z_T):
    """The probability-flow ODE keeps (z_t - alpha_t mu) / std_t fixed: its exact end point."""
    ab_T, ab_0 = sched.alpha_bar[-1], sched.alpha_bar[0]
    std = lambda ab: jnp.sqrt(ab * s**2 + 1 - ab)  # noqa: E731
    return jnp.sqrt(ab_0) * mu + std(ab_0) * (z_T - jnp.sqrt(ab_T) * mu) / std(ab_T)


def test_dpmpp_solves_the_gaussian_pf_ode_at_second_order():
    from jaxdiff.sampling import dpmpp_sample

    sched = linear(1e-4, 0.02, 1000)
    mu, s = 0.3, 0.2
    fn = _gaussian_data_denoiser(sched, mu, s)
    key = jax.random.PRNGKey(7)
    shape = (4, 28, 28, 1)
    z_T = jax.random.normal(jax.random.split(key)[0], shape)
    exact = _pf_ode_solution(sched, mu, s, z_T)
    errs, ddim_errs = {}, {}
    for n in (20, 40, 100):
        x = dpmpp_sample(fn, None, sched, key, shape, steps=n, lower_order_final=False)
        errs[n] = float(jnp.abs(x - exact).max())
        d, _ = ddim_sample(fn, None, sched, key, shape, steps=n)
        ddim_errs[n] = float(jnp.abs(d - exact).max())
    assert errs[20] < 0.02 * float(jnp.abs(exact).max())
    assert errs[20] < ddim_errs[100] / 3  # 20 steps beat DDIM's 100
    # Order of convergence: 2.5x the steps cut DPM-Solver++'s error by >= 2.5^2 / 2 (second
    # order, measured 4.2) and DDIM's by about 2.5 (first order).
    assert errs[40] / errs[100] > 3.1, errs
    assert 2.0 < ddim_errs[40] / ddim_errs[100] < 3.0, ddim_errs


def test_dpmpp_timesteps_and_clip():
    from jaxdiff.sampling import dpmpp_sample, dpmpp_timesteps
    from jaxdiff.schedules import cosine

    sched = linear(1e-4, 0.02, 1000)
    ts = dpmpp_timesteps(sched, 20)
    assert ts[0] == 1000 and ts[-1] == 0 and len(ts) == 21 and np.all(np.diff(ts) < 0)
    ab = np.asarray(sched.alpha_bar, np.float64)
    gaps = np.diff(0.5 * np.log(ab / (1 - ab))[ts])
    assert gaps.max() / gaps.min() < 1.6  # evenly spaced in log-SNR up to rounding
    # cosine: alpha_bar spans 1 - 1e-7 .. 0 (capped), rounding merges times at both ends
    ts = dpmpp_timesteps(cosine(1000), 20)
    assert ts[0] == 1000 and ts[-1] == 0 and 15 <= len(ts) <= 21 and np.all(np.diff(ts) < 0)
    np.testing.assert_array_equal(dpmpp_timesteps(SCHED, 4, "uniform"), [20, 15, 10, 5, 0])
    with pytest.raises(ValueError, match="steps must be in 1..20"):
        dpmpp_timesteps(SCHED, 21)
    with pytest.raises(ValueError, match="unknown spacing"):
        dpmpp_timesteps(SCHED, 4, "karras")
    sched = cosine(1000)  # alpha_bar_0 = 1: the capped log-SNR keeps the last step finite
    fn = _gaussian_data_denoiser(sched, 0.3, 0.2)
    x = dpmpp_sample(fn, None, sched, jax.random.PRNGKey(0), SHAPE, steps=20)
    assert np.all(np.isfinite(x))
    wide = dpmpp_sample(fn, None, sched, jax.random.PRNGKey(0), SHAPE, steps=20, clip=(-9, 9))
    np.testing.assert_array_equal(np.asarray(wide), np.asarray(x))  # in range: no change
    xc = dpmpp_sample(fn, None, sched, jax.random.PRNGKey(0), SHAPE, steps=20, clip=(-0.1, 0.1))
    outside = lambda a: float(jnp.maximum(jnp.abs(a) - 0.1, 0).mean())  # noqa: E731
    assert outside(xc) < 0.1 * outside(x)
