"""Tests for jaxdiff.app.cold_analysis: oracle restoration errors, pair distances."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.app.cold_analysis import analyze_cold_run, pairwise_distances, restoration_errors
from jaxdiff.config import Config, ProcessConfig
from jaxdiff.degradations import get_degradation
from jaxdiff.pipeline import Pieces


def _x0() -> jax.Array:
    grid = jnp.linspace(-0.5, 0.5, 28 * 28).reshape(1, 28, 28, 1)
    return jnp.concatenate([grid, -grid, jnp.abs(grid) - 0.25])


@pytest.mark.parametrize("algorithm", [1, 2])
def test_an_oracle_restorer_has_zero_error_and_the_input_error_is_the_degradations(algorithm):
    x0 = _x0()
    cfg = Config(process=ProcessConfig(kind="cold", T=4, degradation="fade", noise=0.0))
    degrade = get_degradation("fade", 4)
    pieces = Pieces(None, lambda params, x, t: params, None, None, degrade=degrade)
    rows = restoration_errors(cfg, pieces, x0, x0, [1, 2, 4], jax.random.key(0), algorithm)
    assert [r["t"] for r in rows] == [1, 2, 4]
    for r in rows:
        tt = jnp.full((3,), r["t"], jnp.int32)
        expected = float(jnp.mean((jax.vmap(degrade)(x0, tt) - x0) ** 2))
        np.testing.assert_allclose(r["mse_input"], expected, rtol=1e-5)
        assert r["mse_one_shot"] == 0.0
        assert r["mse_restored"] < 1e-10
    assert rows[0]["mse_input"] < rows[-1]["mse_input"]  # severity grows with t


def test_pairwise_distances_closed_form_and_distinct_pairs():
    x = np.stack([np.zeros((28, 28, 1)), np.full((28, 28, 1), 0.5)])
    d = pairwise_distances(x, jax.random.key(0), n_pairs=500)
    # every pair is the two distinct images: ||0.5 * 1||_2 over 784 pixels = 14, never 0
    for k in ("mean", "median", "p05", "p95"):
        np.testing.assert_allclose(d[k], 14.0, rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        pairwise_distances(x[:1], jax.random.key(0))


def test_analysis_refuses_small_n_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="n must be at least 2"):
        analyze_cold_run(tmp_path / "missing", tmp_path / "out", n=1)


def test_generate_start_returns_the_start_states_and_oracle_uses_test_digits():
    from jaxdiff.app.cold_analysis import start_variants
    from jaxdiff.pipeline import generate

    x0 = _x0()
    cfg = Config(process=ProcessConfig(kind="cold", T=4, degradation="fade", noise=0.2))
    degrade = get_degradation("fade", 4)
    pieces = Pieces(None, lambda params, x, t: params, None, None, degrade=degrade)

    def start(key, n):
        return jax.random.normal(key, (n, 28, 28, 1))

    key = jax.random.key(3)
    got = generate(cfg, pieces, None, key, 5, "start", start=start, batch=3)
    # batch i draws its start states from split(fold_in(key, i))[0], as cold1/cold2 do
    want = [start(jax.random.split(jax.random.fold_in(key, i))[0], b) for i, b in ((0, 3), (1, 2))]
    np.testing.assert_array_equal(got, np.concatenate(want))
    uint8 = np.asarray((x0[..., 0] + 0.5) * 255, np.uint8)
    variants = start_variants(cfg, pieces, np.repeat(uint8, 20, 0), uint8, key, noise_std=0.0)
    oracle = np.asarray(variants["oracle"](key, 8))
    ends = np.asarray(jax.vmap(degrade)(x0, jnp.full((3,), 4, jnp.int32)))
    # with no start noise every oracle state is D(x, T) of one of the three test images
    for o in oracle:
        assert min(np.abs(o - e).max() for e in ends) < 1e-2
