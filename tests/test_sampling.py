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
