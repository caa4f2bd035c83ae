"""Noise schedules for the Gaussian (DDPM) forward process.

A :class:`Schedule` holds tables indexed by the integer time ``t = 0..T`` (``T + 1``
entries), following the starter's ``ddpm_schedules``: ``beta[t]`` and ``alpha_bar[t]``, the
cumulative product of ``1 - beta`` (the starter calls it ``alpha_t``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

#: A network: ``apply_fn(params, z, t_frac) -> prediction`` with ``t_frac = t / T``.
ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


class Schedule(NamedTuple):
    """Tables of a discrete Gaussian diffusion, each of length ``T + 1``.

    Attributes:
        beta: Per-step noise variances ``beta_t``.
        alpha_bar: ``prod_{s<=t} (1 - beta_s)``: signal fraction of ``z_t``.
    """

    beta: jax.Array
    alpha_bar: jax.Array

    @property
    def T(self) -> int:  # noqa: N802 - the paper's name
        """Number of diffusion steps."""
        return self.beta.shape[0] - 1


def linear(beta1: float = 1e-4, beta2: float = 0.02, T: int = 1000) -> Schedule:  # noqa: N803
    """The starter's linear schedule ``beta_t = beta1 + (beta2 - beta1) * t / T``, t = 0..T.

    Args:
        beta1: Variance at ``t = 0``.
        beta2: Variance at ``t = T``.
        T: Number of diffusion steps.

    Returns:
        The :class:`Schedule`; ``alpha_bar = exp(cumsum(log(1 - beta)))`` as in the starter.

    Raises:
        ValueError: If the betas are not ``0 < beta1 < beta2 < 1`` or ``T < 2``.
    """
    if not 0.0 < beta1 < beta2 < 1.0:
        raise ValueError(f"need 0 < beta1 < beta2 < 1, got beta1={beta1}, beta2={beta2}.")
    if T < 2:
        raise ValueError(f"T must be at least 2, got {T}.")
    beta = beta1 + (beta2 - beta1) * jnp.arange(T + 1, dtype=jnp.float32) / T
    alpha_bar = jnp.exp(jnp.cumsum(jnp.log1p(-beta)))
    return Schedule(beta=beta, alpha_bar=alpha_bar)


def cosine(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:  # noqa: N803
    """The cosine schedule of Nichol & Dhariwal (2021) on the same ``t = 0..T`` grid.

    ``alpha_bar(t) = f(t) / f(0)`` with ``f(t) = cos((t / T + s) / (1 + s) * pi / 2) ** 2``;
    ``beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1)`` clipped to ``max_beta`` (``beta_0`` is
    ``1 - alpha_bar(0) = 0`` and replaced by the first step's value so tables stay positive).

    Args:
        T: Number of diffusion steps.
        s: Small offset that keeps ``beta`` from vanishing near ``t = 0``.
        max_beta: Upper clip of ``beta_t`` (avoids a singular last step).

    Returns:
        The :class:`Schedule`, with ``alpha_bar`` recomputed from the clipped betas.
    """
    if T < 2:
        raise ValueError(f"T must be at least 2, got {T}.")
    t = jnp.arange(T + 1, dtype=jnp.float64 if jax.config.x64_enabled else jnp.float32)
    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2) ** 2
    return _from_alpha_bar(f / f[0], max_beta)


def _from_alpha_bar(ab: jax.Array, max_beta: float) -> Schedule:
    """Betas from a continuous ``alpha_bar`` table (clipped), then ``alpha_bar`` from them."""
    beta = jnp.clip(1.0 - ab[1:] / ab[:-1], 0.0, max_beta)
    beta = jnp.concatenate([beta[:1], beta]).astype(jnp.float32)
    alpha_bar = jnp.exp(jnp.cumsum(jnp.log1p(-beta)))
    return Schedule(beta=beta, alpha_bar=alpha_bar)


def sigmoid(
    T: int = 1000,  # noqa: N803
    start: float = -3.0,
    end: float = 3.0,
    tau: float = 1.0,
    max_beta: float = 0.999,
) -> Schedule:
    """The sigmoid schedule of Jabri et al. (2022) and Chen (2023), on the ``t = 0..T`` grid.

    ``alpha_bar(t) = (v_end - sig((u (end - start) + start) / tau)) / (v_end - v_start)`` with
    ``u = t / T``, ``v_start = sig(start / tau)``, ``v_end = sig(end / tau)``: 1 at ``t = 0``,
    0 at ``t = T`` (clipped to ``1e-9``; Chen's code defaults). Betas follow
    as for :func:`cosine` (``beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1)`` clipped to
    ``max_beta``, ``beta_0`` set to the first step's).

    Args:
        T: Number of diffusion steps.
        start: Left end of the sigmoid's input range.
        end: Right end of the sigmoid's input range.
        tau: Temperature (smaller: steeper in the middle).
        max_beta: Upper clip of ``beta_t``.

    Returns:
        The :class:`Schedule`, with ``alpha_bar`` recomputed from the clipped betas.

    Raises:
        ValueError: If ``T < 2``, ``start >= end`` or ``tau <= 0``.
    """
    if T < 2:
        raise ValueError(f"T must be at least 2, got {T}.")
    if not start < end or not tau > 0:
        raise ValueError(f"need start < end and tau > 0, got {start}, {end}, {tau}.")
    u = jnp.arange(T + 1, dtype=jnp.float64 if jax.config.x64_enabled else jnp.float32) / T
    v_start, v_end = jax.nn.sigmoid(start / tau), jax.nn.sigmoid(end / tau)
    ab = (v_end - jax.nn.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)
    return _from_alpha_bar(jnp.clip(ab, 1e-9, 1.0), max_beta)


def make_schedule(
    name: str = "linear",
    T: int = 1000,  # noqa: N803
    beta1: float = 1e-4,
    beta2: float = 0.02,
) -> Schedule:
    """Build a schedule by name.

    Args:
        name: ``"linear"`` (the starter's), ``"cosine"`` or ``"sigmoid"``.
        T: Number of diffusion steps.
        beta1: First beta of the linear schedule.
        beta2: Last beta of the linear schedule.

    Returns:
        The :class:`Schedule`.

    Raises:
        ValueError: For an unknown name.
    """
    if name == "linear":
        return linear(beta1, beta2, T)
    if name == "cosine":
        return cosine(T)
    if name == "sigmoid":
        return sigmoid(T)
    raise ValueError(f"unknown schedule {name!r}; use 'linear', 'cosine' or 'sigmoid'.")


def q_sample(sched: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """Draw ``z_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps`` for one example.

    Args:
        sched: The schedule.
        x0: Clean image ``(H, W, C)``.
        t: Integer time, a scalar in ``0..T``.
        eps: Standard normal noise shaped like ``x0``.

    Returns:
        The noised image ``z_t``. Batch with ``jax.vmap(q_sample, (None, 0, 0, 0))``.
    """
    ab = sched.alpha_bar[t]
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps


def snr(sched: Schedule, t: jax.Array) -> jax.Array:
    """Signal-to-noise ratio ``alpha_bar_t / (1 - alpha_bar_t)`` of ``z_t``.

    Args:
        sched: The schedule.
        t: Integer times in ``1..T`` (any shape).

    Returns:
        The SNR at each ``t``.
    """
    ab = sched.alpha_bar[t]
    return ab / (1.0 - ab)


def v_target(sched: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """The v-prediction target ``v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0``.

    Salimans & Ho (2022): ``v`` is the velocity of ``z_t`` along the circle
    ``(sqrt(alpha_bar), sqrt(1 - alpha_bar))``; predicting it keeps the target's scale near
    one at every noise level, where epsilon-prediction's implied ``x0`` blows up at low SNR.

    Args:
        sched: The schedule.
        x0: Clean image ``(H, W, C)``.
        t: Integer time, a scalar in ``1..T``.
        eps: The noise that made ``z_t`` from ``x0`` (:func:`q_sample`).

    Returns:
        ``v`` for one example. Batch with ``jax.vmap(v_target, (None, 0, 0, 0))``.
    """
    ab = sched.alpha_bar[t]
    return jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0


def eps_from_v(sched: Schedule, z: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    """Turn a v-prediction into the epsilon-prediction the samplers use.

    With ``z = a x0 + s eps`` and ``v = a eps - s x0`` (``a**2 + s**2 = 1``),
    ``eps = s z + a v``.

    Args:
        sched: The schedule.
        z: Noisy images ``(B, H, W, C)``.
        t: Integer times ``(B,)``.
        v: The network's v-predictions, shaped like ``z``.

    Returns:
        The implied epsilon-predictions.
    """
    ab = sched.alpha_bar[t][:, None, None, None]
    return jnp.sqrt(1.0 - ab) * z + jnp.sqrt(ab) * v


def eps_model(apply_fn: ApplyFn, sched: Schedule, prediction: str = "eps") -> ApplyFn:
    """The epsilon-prediction form of a network, as every sampler takes it.

    Args:
        apply_fn: ``apply_fn(params, z, t_frac) -> prediction`` with ``t_frac = t / T``.
        sched: The schedule the network was trained with.
        prediction: What the network predicts: ``"eps"`` (returned unchanged) or ``"v"``
            (converted by :func:`eps_from_v`, the integer time recovered
            as ``round(t_frac * T)``).

    Returns:
        ``eps_fn(params, z, t_frac) -> eps_hat``; build it once and reuse it, since the
        samplers compile per function.

    Raises:
        ValueError: For an unknown prediction.
    """
    if prediction == "eps":
        return apply_fn
    if prediction != "v":
        raise ValueError(f"unknown prediction {prediction!r}; use 'eps' or 'v'.")
    T = sched.T  # noqa: N806

    def eps_fn(params, z, t_frac):
        t = jnp.round(t_frac * T).astype(jnp.int32)
        return eps_from_v(sched, z, t, apply_fn(params, z, t_frac))

    return eps_fn
