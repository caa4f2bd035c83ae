"""Samplers for epsilon-prediction models, each one jitted ``lax.scan`` over time.

Randomness: ``z_T ~ N(0, I)`` from ``split(key)[0]``; the noise added when leaving time
``t`` is ``normal(fold_in(split(key)[1], t))``. Both samplers use this rule, so DDIM with
``eta = 1`` over all ``T`` steps reproduces the ancestral sampler with the posterior
variance ``beta_tilde`` draw for draw.

Intermediate states can be kept: pass ``keep=(t1, t2, ...)`` (times to record, the state
*after* the update at that time) and the sampler returns them stacked in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.schedules import ApplyFn, Schedule


def _start(key: jax.Array, shape: tuple[int, ...], keep: Sequence[int] = ()):
    """``z_T``, the step-noise key, and the buffer of kept states (the module's key rule)."""
    k_init, k_steps = jax.random.split(key)
    z = jax.random.normal(k_init, shape, jnp.float32)
    keep_arr = jnp.asarray(keep, jnp.int32)
    buf = jnp.zeros((len(keep), *shape), jnp.float32) if keep else None
    return z, k_steps, keep_arr, buf


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
    z, k_steps, keep_arr, buf = _start(key, shape, keep)

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


#: Named clipping ranges for the predicted clean image: ``"wide"`` is ``[-1, 1]`` (the
#: ``clip_denoised`` of common DDPM code, which assumes data in ``[-1, 1]``), ``"data"`` the
#: range MNIST lies in here, ``[-0.5, 0.5]``.
CLIP_RANGES: dict[str, tuple[float, float]] = {"wide": (-1.0, 1.0), "data": (-0.5, 0.5)}


@partial(jax.jit, static_argnames=("apply_fn", "shape", "steps", "keep", "clip_x0", "clip"))
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
    clip: tuple[float, float] | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """DDIM (Song et al. 2021) for epsilon-prediction models, one scan over ``steps`` steps.

    From ``t`` to ``s < t``: ``x0_hat = (z - sqrt(1 - ab_t) eps) / sqrt(ab_t)``,
    ``sigma = eta * sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))`` and
    ``z <- sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma**2) eps + sigma * noise``; no noise is
    added on the final step (to ``s = 0``), as in the ancestral sampler. ``eta = 0`` is
    deterministic given ``z_T``; ``eta = 1`` with ``steps = T`` is the ancestral sampler with
    variance ``beta_tilde``.

    With ``clip_x0`` each ``x0_hat`` is clipped to ``[-1, 1]`` (or to ``clip``) and ``eps`` is
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
        clip: Clip it to this ``(lo, hi)`` range instead (e.g. :data:`CLIP_RANGES`).

    Returns:
        ``(x0, kept)`` as :func:`ddpm_sample`.
    """
    T = sched.T  # noqa: N806
    ts = ddim_timesteps(T, steps)
    z, k_steps, keep_arr, buf = _start(key, shape, keep)
    lo_hi = clip if clip is not None else ((-1.0, 1.0) if clip_x0 else None)

    def body(carry, ts_pair):
        z, buf = carry
        t, s = ts_pair[0], ts_pair[1]
        ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]
        eps = apply_fn(params, z, jnp.full((shape[0],), t / T, jnp.float32))
        x0_hat, eps = _ddim_x0(eps, z, ab_t, lo_hi)
        sigma = eta * jnp.sqrt((1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s))
        dir_coef = jnp.sqrt(jnp.maximum(1.0 - ab_s - sigma**2, 0.0))
        noise = jax.random.normal(jax.random.fold_in(k_steps, t), shape, jnp.float32)
        z = jnp.sqrt(ab_s) * x0_hat + dir_coef * eps + jnp.where(s > 0, sigma, 0.0) * noise
        return (z, _record(buf, keep_arr, t, z)), None

    (z, buf), _ = jax.lax.scan(body, (z, buf), jnp.asarray(np.stack([ts[:-1], ts[1:]], 1)))
    return z, buf


def _ddim_x0(eps: jax.Array, z: jax.Array, ab_t: jax.Array, lo_hi: tuple | None):
    """DDIM's predicted clean image, clipped to ``lo_hi``, and the epsilon that matches it."""
    x0_hat = (z - jnp.sqrt(1.0 - ab_t) * eps) / jnp.sqrt(ab_t)
    if lo_hi is None:
        return x0_hat, eps
    x0_hat = jnp.clip(x0_hat, lo_hi[0], lo_hi[1])
    return x0_hat, (z - jnp.sqrt(ab_t) * x0_hat) / jnp.sqrt(1.0 - ab_t)


#: ``alpha_bar`` is capped here so that ``lambda`` stays finite where ``alpha_bar_0 = 1``
#: (the cosine schedule); the starter's ``alpha_bar_0 = 1 - 1e-4`` is below it.
_AB_MAX = 1.0 - 1e-7


def dpmpp_timesteps(sched: Schedule, steps: int, spacing: str = "logsnr") -> np.ndarray:
    """Descending integer times ``T = t_0 > ... > t_steps = 0`` for DPM-Solver++.

    Args:
        sched: Noise schedule (its ``alpha_bar`` table sets the log-SNR).
        steps: Number of solver steps (1..T).
        spacing: ``"logsnr"``: evenly spaced in ``lambda = log(alpha / sigma)`` (Lu et al.'s
            recommendation for unconditional models), rounded to integer times;
            ``"uniform"``: evenly spaced in ``t``, as :func:`ddim_timesteps`.

    Returns:
        ``int32`` array of ``steps + 1`` distinct times (fewer only if rounding merges two
        log-SNR points, which needs ``steps`` close to ``T``).

    Raises:
        ValueError: For ``steps`` outside ``1..T`` or an unknown spacing.
    """
    T = sched.T  # noqa: N806
    if not 1 <= steps <= T:
        raise ValueError(f"dpmpp steps must be in 1..{T}, got {steps}.")
    if spacing == "uniform":
        return ddim_timesteps(T, steps)
    if spacing != "logsnr":
        raise ValueError(f"unknown spacing {spacing!r}; use 'logsnr' or 'uniform'.")
    ab = np.clip(np.asarray(sched.alpha_bar, np.float64), 1e-12, _AB_MAX)
    lam = 0.5 * np.log(ab / (1.0 - ab))  # decreasing in t
    targets = np.linspace(lam[T], lam[0], steps + 1)
    ts = np.interp(targets, lam[::-1], np.arange(T, -1, -1, dtype=np.float64))
    ts = np.round(ts).astype(np.int32)
    ts[0], ts[-1] = T, 0
    return np.array(sorted(set(ts.tolist()), reverse=True), np.int32)


def dpmpp_sample(
    apply_fn: ApplyFn,
    params: Any,
    sched: Schedule,
    key: jax.Array,
    shape: tuple[int, ...],
    steps: int = 20,
    spacing: str = "logsnr",
    clip: tuple[float, float] | None = None,
    lower_order_final: bool | None = None,
) -> jax.Array:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) for epsilon-prediction models, one scan.

    It integrates the probability-flow ODE in the data-prediction form. With
    ``alpha_t = sqrt(ab_t)``, ``sigma_t = sqrt(1 - ab_t)``, ``lambda_t = log(alpha_t /
    sigma_t)``, ``x0(z, t) = (z - sigma_t eps(z, t)) / alpha_t`` and ``h_i = lambda_{t_i} -
    lambda_{t_{i-1}}``, the step from ``t_{i-1}`` to ``t_i`` is::

        z <- (sigma_{t_i} / sigma_{t_{i-1}}) z - alpha_{t_i} (exp(-h_i) - 1) D_i

    with ``D_1 = x0_1`` (first order) and, after that, the multistep second-order
    combination ``D_i = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1}``, ``r_i = h_{i-1} /
    h_i``. One network evaluation per step. Deterministic given ``z_T``, which is drawn from
    ``split(key)[0]`` as in the other samplers (same starting noise as DDIM for one key).

    Args:
        apply_fn: As in :func:`ddim_sample`.
        params: As in :func:`ddim_sample`.
        sched: As in :func:`ddim_sample`.
        key: As in :func:`ddim_sample`.
        shape: As in :func:`ddim_sample`.
        steps: Number of network evaluations.
        spacing: Time grid, see :func:`dpmpp_timesteps`.
        clip: Clip each predicted clean image to ``(lo, hi)`` (e.g. the data range
            ``(-0.5, 0.5)``), or ``None``.
        lower_order_final: Use a first-order last step (more stable for few steps);
            default: when ``steps < 15``, as common implementations do.

    Returns:
        Samples ``(B, H, W, C)``: the final state at ``t = 0``.
    """
    ts = dpmpp_timesteps(sched, steps, spacing)  # needs the concrete schedule: outside jit
    if lower_order_final is None:
        lower_order_final = len(ts) - 1 < 15
    clip = None if clip is None else (float(clip[0]), float(clip[1]))
    return _dpmpp_scan(
        apply_fn,
        params,
        sched,
        key,
        shape=tuple(shape),
        ts=tuple(int(t) for t in ts),
        clip=clip,
        lower_order_final=bool(lower_order_final),
    )


@partial(jax.jit, static_argnames=("apply_fn", "shape", "ts", "clip", "lower_order_final"))
def _dpmpp_scan(apply_fn, params, sched, key, *, shape, ts, clip, lower_order_final):
    T = sched.T  # noqa: N806
    n = len(ts) - 1
    z = _start(key, shape)[0]

    def coeffs(t):
        ab = jnp.minimum(sched.alpha_bar[t], _AB_MAX)  # a finite log-SNR at t = 0
        alpha, sigma = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
        return alpha, sigma, jnp.log(alpha) - jnp.log(sigma)

    def body(carry, inp):
        z, x0_prev, h_prev = carry
        t, s, i = inp
        a_t, s_t, lam_t = coeffs(t)
        a_s, s_s, lam_s = coeffs(s)
        eps = apply_fn(params, z, jnp.full((shape[0],), t / T, jnp.float32))
        x0 = (z - s_t * eps) / a_t
        if clip is not None:
            x0 = jnp.clip(x0, clip[0], clip[1])
        h = lam_s - lam_t
        r = h_prev / h
        second = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        use_second = i > 0
        if lower_order_final:
            use_second = use_second & (i < n - 1)
        d = jnp.where(use_second, second, x0)
        z = (s_s / s_t) * z - a_s * jnp.expm1(-h) * d
        return (z, x0, h), None

    inputs = (
        jnp.asarray(ts[:-1], jnp.int32),
        jnp.asarray(ts[1:], jnp.int32),
        jnp.arange(n, dtype=jnp.int32),
    )
    (z, _, _), _ = jax.lax.scan(body, (z, jnp.zeros_like(z), jnp.float32(1.0)), inputs)
    return z
