"""Samplers for epsilon-prediction models, each one jitted ``lax.scan`` over time.

Randomness: ``z_T ~ N(0, I)`` from ``split(key)[0]``; the noise added when leaving time
``t`` is ``normal(fold_in(split(key)[1], t))``. Both samplers use this rule, so DDIM with
``eta = 1`` over all ``T`` steps reproduces the ancestral sampler with the posterior
variance ``beta_tilde`` draw for draw.

Intermediate states can be kept: pass ``keep=(t1, t2, ...)`` (times to record, the state
*after* the update at that time) and the sampler returns them stacked in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.schedules import Schedule

ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def _keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    k_init, k_steps = jax.random.split(key)
    return k_init, k_steps


def _record(buf, keep_arr, t, z):
    if buf is None:
        return None
    hit = (keep_arr == t)[:, None, None, None, None]
    return jnp.where(hit, z[None], buf)


@partial(jax.jit, static_argnames=("apply_fn", "shape", "keep", "variance"))
def ddpm_sample(
    apply_fn: ApplyFn,
    params: Any,
    sched: Schedule,
    key: jax.Array,
    shape: tuple[int, ...],
    keep: Sequence[int] = (),
    variance: str = "beta",
) -> tuple[jax.Array, jax.Array | None]:
    """The starter's ancestral sampler (Prince, Alg. 18.2), as one scan over ``t = T..1``.

    ``z <- (z - beta_t / sqrt(1 - alpha_bar_t) * eps(z, t/T)) / sqrt(1 - beta_t)``, then for
    ``t > 1`` add ``sigma_t * N(0, I)`` with ``sigma_t**2 = beta_t`` (the starter) or the
    posterior variance ``beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t``.

    Args:
        apply_fn: ``apply_fn(params, z, t_frac) -> eps_hat`` (hashable, e.g. ``model.apply``).
        params: Network parameters.
        sched: Noise schedule.
        key: PRNG key.
        shape: Output shape ``(B, H, W, C)``.
        keep: Times whose post-update states to return.
        variance: ``"beta"`` or ``"beta_tilde"``.

    Returns:
        ``(x0, kept)``: samples and, if ``keep``, states ``(len(keep), *shape)`` else ``None``.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"unknown variance {variance!r}; use 'beta' or 'beta_tilde'.")
    T = sched.T  # noqa: N806
    k_init, k_steps = _keys(key)
    z = jax.random.normal(k_init, shape, jnp.float32)
    keep_arr = jnp.asarray(keep, jnp.int32)
    buf = jnp.zeros((len(keep), *shape), jnp.float32) if keep else None

    def body(carry, t):
        z, buf = carry
        beta, ab = sched.beta[t], sched.alpha_bar[t]
        eps = apply_fn(params, z, jnp.full((shape[0],), t / T, jnp.float32))
        z = (z - beta / jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(1.0 - beta)
        if variance == "beta":
            var = beta
        else:
            var = (1.0 - sched.alpha_bar[t - 1]) / (1.0 - ab) * beta
        noise = jax.random.normal(jax.random.fold_in(k_steps, t), shape, jnp.float32)
        z = z + jnp.where(t > 1, jnp.sqrt(var), 0.0) * noise
        return (z, _record(buf, keep_arr, t, z)), None

    (z, buf), _ = jax.lax.scan(body, (z, buf), jnp.arange(T, 0, -1))
    return z, buf


def ddim_timesteps(T: int, steps: int) -> np.ndarray:  # noqa: N803
    """Descending integer times ``T = t_0 > t_1 > ... > t_steps = 0`` evenly spaced.

    Args:
        T: Number of diffusion steps.
        steps: Number of sampler steps (1..T).

    Returns:
        ``int32`` array of ``steps + 1`` distinct times from ``T`` down to ``0``.

    Raises:
        ValueError: If ``steps`` is not in ``1..T``.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in 1..{T}, got {steps}.")
    return np.round(np.linspace(T, 0, steps + 1)).astype(np.int32)


@partial(jax.jit, static_argnames=("apply_fn", "shape", "steps", "keep", "clip_x0"))
def ddim_sample(
    apply_fn: ApplyFn,
    params: Any,
    sched: Schedule,
    key: jax.Array,
    shape: tuple[int, ...],
    steps: int = 50,
    eta: float = 0.0,
    keep: Sequence[int] = (),
    clip_x0: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """DDIM (Song et al. 2021) for epsilon-prediction models, one scan over ``steps`` steps.

    From ``t`` to ``s < t``: ``x0_hat = (z - sqrt(1 - ab_t) eps) / sqrt(ab_t)``,
    ``sigma = eta * sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))`` and
    ``z <- sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma**2) eps + sigma * noise``; no noise is
    added on the final step (to ``s = 0``), as in the ancestral sampler. ``eta = 0`` is
    deterministic given ``z_T``; ``eta = 1`` with ``steps = T`` is the ancestral sampler with
    variance ``beta_tilde``.

    With ``clip_x0`` each ``x0_hat`` is clipped to the data range ``[-1, 1]`` and ``eps`` is
    re-derived from the clipped value, ``eps = (z - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)``
    (the ``clip_denoised`` of the DDPM and diffusers code): the step then moves towards an
    image the data could hold. It changes nothing while the predictions stay in range.

    Args:
        apply_fn: ``apply_fn(params, z, t_frac) -> eps_hat``.
        params: Network parameters.
        sched: Noise schedule.
        key: PRNG key.
        shape: Output shape ``(B, H, W, C)``.
        steps: Number of network evaluations.
        eta: Stochasticity in [0, 1].
        keep: Times ``t`` (from :func:`ddim_timesteps`) whose post-update states to return.
        clip_x0: Clip the predicted clean image to ``[-1, 1]`` at every step.

    Returns:
        ``(x0, kept)`` as :func:`ddpm_sample`.
    """
    T = sched.T  # noqa: N806
    ts = ddim_timesteps(T, steps)
    k_init, k_steps = _keys(key)
    z = jax.random.normal(k_init, shape, jnp.float32)
    keep_arr = jnp.asarray(keep, jnp.int32)
    buf = jnp.zeros((len(keep), *shape), jnp.float32) if keep else None

    def body(carry, ts_pair):
        z, buf = carry
        t, s = ts_pair[0], ts_pair[1]
        ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]
        eps = apply_fn(params, z, jnp.full((shape[0],), t / T, jnp.float32))
        x0_hat = (z - jnp.sqrt(1.0 - ab_t) * eps) / jnp.sqrt(ab_t)
        if clip_x0:
            x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
            eps = (z - jnp.sqrt(ab_t) * x0_hat) / jnp.sqrt(1.0 - ab_t)
        sigma = eta * jnp.sqrt((1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s))
        dir_coef = jnp.sqrt(jnp.maximum(1.0 - ab_s - sigma**2, 0.0))
        noise = jax.random.normal(jax.random.fold_in(k_steps, t), shape, jnp.float32)
        z = jnp.sqrt(ab_s) * x0_hat + dir_coef * eps + jnp.where(s > 0, sigma, 0.0) * noise
        return (z, _record(buf, keep_arr, t, z)), None

    pairs = jnp.asarray(np.stack([ts[:-1], ts[1:]], axis=1))
    (z, buf), _ = jax.lax.scan(body, (z, buf), pairs)
    return z, buf
