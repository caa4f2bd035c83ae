import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.schedules import cosine, linear, make_schedule, q_sample, sigmoid


def test_linear_matches_closed_form():
    s = linear(1e-4, 0.02, 1000)
    i = np.arange(1001)
    beta = 1e-4 + (0.02 - 1e-4) * i / 1000
    np.testing.assert_allclose(s.beta, beta, rtol=1e-6)
    np.testing.assert_allclose(s.alpha_bar, np.cumprod(1 - beta), rtol=1e-4)
    assert s.T == 1000 and s.beta.shape == (1001,)
    # spot values of the starter's tables
    assert s.beta[0] == pytest.approx(1e-4)
    assert s.beta[1000] == pytest.approx(0.02)
    assert float(s.alpha_bar[1000]) == pytest.approx(np.prod(1 - beta), rel=1e-3)
    assert float(s.alpha_bar[1000]) < 5e-5


def test_cosine_is_monotone_and_bounded():
    s = cosine(1000)
    ab = np.asarray(s.alpha_bar)
    assert np.all(np.diff(ab) < 0)
    assert 0 < ab[-1] < 1e-3 and ab[0] > 0.999
    assert np.all((np.asarray(s.beta) > 0) & (np.asarray(s.beta) <= 0.999))


def test_sigmoid_matches_closed_form_where_unclipped():
    T, start, end, tau = 1000, -3.0, 3.0, 1.0  # noqa: N806
    s = sigmoid(T, start, end, tau)
    u = np.arange(T + 1) / T
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    ab = (sig(end / tau) - sig((u * (end - start) + start) / tau)) / (
        sig(end / tau) - sig(start / tau)
    )
    got = np.asarray(s.alpha_bar)
    # alpha_bar is rebuilt from the betas: beta_0 repeats beta_1, so got = ab * (1 - beta_1)
    np.testing.assert_allclose(got[1:900], ab[1:900] * (1 - float(s.beta[0])), rtol=2e-3)
    assert np.all(np.diff(got) < 0) and got[-1] < 1e-6
    assert np.all((np.asarray(s.beta) > 0) & (np.asarray(s.beta) <= 0.999))
    assert make_schedule("sigmoid", T=T).alpha_bar.shape == (T + 1,)
    with pytest.raises(ValueError, match="start < end"):
        sigmoid(T, 3.0, -3.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"beta1": 0.1, "beta2": 0.01}, "beta1 < beta2"), ({"T": 1}, "T must be")],
)
def test_bad_schedule_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule("linear", **{"T": 1000, **kwargs})
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("quadratic")


def test_q_sample_mean_and_variance():
    s = linear()
    t = 300
    x0 = jnp.full((28, 28, 1), 0.3)
    eps = jax.random.normal(jax.random.PRNGKey(0), (4000, 28, 28, 1))
    z = jax.vmap(q_sample, (None, None, None, 0))(s, x0, t, eps)
    ab = float(s.alpha_bar[t])
    assert float(z.mean()) == pytest.approx(np.sqrt(ab) * 0.3, abs=2e-3)
    assert float(z.var()) == pytest.approx(1 - ab, rel=1e-2)


def test_v_target_and_eps_from_v_invert_each_other_and_snr_closed_form():
    from jaxdiff.schedules import eps_from_v, snr, v_target

    s = linear(1e-4, 0.02, 1000)
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.uniform(k1, (3, 4, 4, 1)) - 0.5
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([1, 500, 999])
    z = jax.vmap(q_sample, (None, 0, 0, 0))(s, x0, t, eps)
    v = jax.vmap(v_target, (None, 0, 0, 0))(s, x0, t, eps)
    ab = np.asarray(s.alpha_bar)[np.asarray(t)][:, None, None, None]
    np.testing.assert_allclose(v, np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0, rtol=1e-6)
    np.testing.assert_allclose(eps_from_v(s, z, t, v), eps, atol=1e-5)
    np.testing.assert_allclose(snr(s, t), ab[:, 0, 0, 0] / (1 - ab[:, 0, 0, 0]), rtol=1e-6)
