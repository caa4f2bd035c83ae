"""Cold-diffusion sampling: Bansal et al. 2022, Alg. 1 and 2, each one jitted scan.

The restorer is ``apply_fn(params, x_t, t_frac) -> x0_hat`` with ``t_frac = t / T`` of shape
``(B,)``; the degradation is a :class:`jaxdiff.degradations.Degradation`.

* Alg. 1: ``x0_hat = R(x_t, t)``, ``x_{t-1} = D(x0_hat, t - 1)``.
* Alg. 2: ``x_{t-1} = x_t - D(x0_hat, t) + D(x0_hat, t - 1)``.

Each is ONE jitted ``lax.scan`` over ``t = T..1`` (or over a strided grid, ``steps < T``).
Alg. 2 telescopes: ``x_0 = x_T + sum_t [D(x0_hat_t, t-1) - D(x0_hat_t, t)]``. For an affine
degradation ``D(x, t) = A_t x + c_t`` and a restorer that errs by a fixed ``delta``
(``x0_hat = x0 + delta``) started from ``x_T = D(x0, T)``, this gives
``x_0 = x0 + delta - A_T delta``: the part of the error that survives full degradation is
removed, whereas Alg. 1 returns ``x0 + delta``. A corollary worth knowing: whatever part of
the start state the restorer cannot explain (``x_T - D(x0_hat_T, T)``, e.g. start noise) is
carried unchanged to ``x_0`` by Alg. 2, so keep start noise small.

Diversity. Deterministic degradations end in few distinct states (blur and fade nearly in
one), so generation needs a distribution of start states: :mod:`jaxdiff.start_states`
fits one to degraded training images.

Stochastic degradations (``noise``) need ``key``: each trajectory gets one key, used for
``D`` at every step (the noise is held fixed along the trajectory, Bansal et al.'s reading).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.degradations import Degradation

ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
_NOISE_PURPOSE = 7  # fold_in(key, 7): the step-noise key of a stochastic reverse process
_START_PURPOSE = 2**32 - 1  # fold_in(step-noise key, -1 as uint32): the noise of a restore input


class Trajectory(NamedTuple):
    """Kept states of a reverse run.

    Attributes:
        t: Integer times of the kept states, descending, shape ``(k,)`` (numpy).
        x_t: The state at each kept time, ``(k, B, H, W, C)``; the last time 0 is the output.
        x0_hat: The restorer's estimate of ``x0`` made at that time (at ``t = 0``, the output).
    """

    t: np.ndarray
    x_t: jax.Array
    x0_hat: jax.Array


# --------------------------------------------------------------------------------------------
# The reverse process.


def _time_grid(t_start: int, steps: int | None) -> tuple[int, ...]:
    """Descending integer times ``t_start, ..., 0`` with ``steps`` transitions."""
    steps = t_start if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    if steps > t_start:
        raise ValueError(f"steps={steps} exceeds the {t_start} available time steps.")
    grid = np.unique(np.round(np.linspace(0, t_start, steps + 1)).astype(int))[::-1]
    return tuple(int(t) for t in grid)


def _slots(grid: tuple[int, ...], keep: int | Sequence[int]) -> tuple[int, ...]:
    """Map each state index of ``grid`` to a kept slot (or -1)."""
    n = len(grid)
    if isinstance(keep, (int, np.integer)) and not isinstance(keep, bool):
        if keep < 0:
            raise ValueError(f"keep must be >= 0 (or a sequence of times), got {keep}.")
        keep = min(int(keep), n)
        idx = (
            sorted(set(np.round(np.linspace(0, n - 1, keep)).astype(int).tolist())) if keep else []
        )
    else:
        times = [int(t) for t in keep]
        missing = [t for t in times if t not in grid]
        if missing:
            raise ValueError(f"keep times {missing} are not on this run's time grid {list(grid)}.")
        idx = sorted({grid.index(t) for t in times})
    slots = [-1] * n
    for s, i in enumerate(idx):
        slots[i] = s
    return tuple(slots)


def _check_inputs(degrade: Degradation, x: jax.Array, T: int | None, algorithm: int) -> int:  # noqa: N803
    if not isinstance(degrade, Degradation):
        raise ValueError(
            f"degrade must be a jaxdiff.degradations.Degradation (get_degradation(name)), "
            f"got {type(degrade).__name__}."
        )
    if algorithm not in (1, 2):
        raise ValueError(
            f"algorithm must be 1 (naive) or 2 (Bansal's improved), got {algorithm!r}."
        )
    if T is not None and T != degrade.T:
        raise ValueError(
            f"T={T} does not match the degradation's T={degrade.T}; build the degradation with "
            f"get_degradation({degrade.name!r}, T={T}) or pass T=None."
        )
    if jnp.ndim(x) != 4:
        raise ValueError(f"states must be a batch (B, H, W, C), got shape {jnp.shape(x)}.")
    return degrade.T


def example_keys(degrade: Degradation, key: jax.Array | None, b: int) -> jax.Array | None:
    """Per-example keys for a batch of ``b`` images: ``split(key, b)``, or ``None``.

    Args:
        degrade: The degradation; only a stochastic one uses keys.
        key: PRNG key (required for a stochastic degradation).
        b: Batch size.

    Returns:
        ``(b,)`` keys, or ``None`` for a deterministic degradation.

    Raises:
        ValueError: If a stochastic degradation gets no key.
    """
    if not degrade.stochastic:
        return None
    if key is None:
        raise ValueError(f"degradation {degrade.name!r} is stochastic: pass key=.")
    return jax.random.split(key, b)


def _noise_table(noise: Any, T: int, what: str = "noise") -> np.ndarray:  # noqa: N803
    """A number or a length ``T + 1`` sequence of step noise -> a checked ``(T + 1,)`` table."""
    try:
        table = np.asarray(noise, np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number >= 0 or T + 1 of them, got {noise!r}.") from None
    if table.ndim == 0:
        table = np.full(T + 1, float(table), np.float32)
    if table.shape != (T + 1,) or not np.all(np.isfinite(table)) or table.min() < 0:
        raise ValueError(f"{what} must be a number >= 0 or T + 1 = {T + 1} of them, got {noise!r}.")
    return table


def _noise_and_keys(
    degrade: Degradation,
    key: jax.Array | None,
    b: int,
    noise: Any,
    residual_sigmas: Any,
    t_max: int,
) -> tuple[np.ndarray, np.ndarray | None, jax.Array | None, jax.Array | None]:
    """A reverse run's checked noise tables and keys: ``(noise, residual, keys, noise_key)``.

    ``keys`` are the per-example degradation keys, ``noise_key`` the step-noise key; each is
    ``None`` when unused.
    """
    noise = _noise_table(noise, t_max)
    res = None if residual_sigmas is None else _noise_table(residual_sigmas, t_max, "residual")
    noisy = bool(noise.max() > 0)
    if noisy and key is None:
        raise ValueError("a stochastic reverse process (noise > 0) needs key=.")
    keys = example_keys(degrade, key, b)
    return noise, res, keys, (jax.random.fold_in(key, _NOISE_PURPOSE) if noisy else None)


def _batched(degrade: Degradation, x: jax.Array, t: jax.Array, keys: jax.Array | None):
    tt = jnp.full((x.shape[0],), t, jnp.int32)
    if keys is None:
        return jax.vmap(degrade)(x, tt)
    return jax.vmap(degrade)(x, tt, keys)


@partial(jax.jit, static_argnames=("apply_fn", "degrade", "grid", "algorithm", "slots"))
def _reverse(
    apply_fn: ApplyFn,
    params: Any,
    degrade: Degradation,
    x: jax.Array,
    keys: jax.Array | None,
    noise: jax.Array,
    noise_key: jax.Array | None,
    residual_sigmas: jax.Array | None,
    *,
    grid: tuple[int, ...],
    algorithm: int,
    slots: tuple[int, ...],
):
    """One scan over the transitions ``grid[i] -> grid[i + 1]``; returns (x0, buffers).

    With ``noise_key`` given, ``noise[s] * N(0, I)`` (drawn from ``fold_in(noise_key, i)`` at
    transition ``i`` to time ``s``) is added to every new state except the last (``t = 0``).
    With ``residual_sigmas``, Alg. 2 scales the residual ``x_t - D(x0_hat, t)`` by
    ``sigma(s) / sigma(t)`` (the DDIM-like reading for a noise level that changes with ``t``).
    """
    T = degrade.T  # noqa: N806
    b = x.shape[0]
    n_keep = max(slots) + 1
    buf_shape = (max(n_keep, 1), *x.shape)
    bufs = (jnp.zeros(buf_shape, x.dtype), jnp.zeros(buf_shape, x.dtype))

    def record(bufs, slot, x, x0_hat):
        hit = slot >= 0
        s = jnp.maximum(slot, 0)
        bx, bh = bufs
        bx = jax.lax.dynamic_update_index_in_dim(bx, jnp.where(hit, x, bx[s]), s, 0)
        bh = jax.lax.dynamic_update_index_in_dim(bh, jnp.where(hit, x0_hat, bh[s]), s, 0)
        return bx, bh

    def step(carry, inp):
        x, bufs = carry
        t, s, slot, i = inp
        x0_hat = apply_fn(params, x, jnp.full((b,), t / T, jnp.float32)).astype(x.dtype)
        d_s = _batched(degrade, x0_hat, s, keys)
        if algorithm == 1:
            x_next = d_s
        else:
            resid = x - _batched(degrade, x0_hat, t, keys)
            if residual_sigmas is not None:
                sig_t, sig_s = residual_sigmas[t], residual_sigmas[s]
                resid = resid * jnp.where(sig_t > 0, sig_s / jnp.maximum(sig_t, 1e-12), 1.0)
            x_next = d_s + resid
        if noise_key is not None:
            z = jax.random.normal(jax.random.fold_in(noise_key, i), x.shape, x.dtype)
            x_next = x_next + jnp.where(s > 0, noise[s], 0.0).astype(x.dtype) * z
        return (x_next, record(bufs, slot, x, x0_hat)), None

    ts = jnp.asarray(grid[:-1], jnp.int32)
    ss = jnp.asarray(grid[1:], jnp.int32)
    sl = jnp.asarray(slots[:-1], jnp.int32)
    steps = jnp.arange(len(grid) - 1, dtype=jnp.int32)
    (x, bufs), _ = jax.lax.scan(step, (x, bufs), (ts, ss, sl, steps))
    bufs = record(bufs, jnp.int32(slots[-1]), x, x)
    return x, bufs


def _run(
    apply_fn, params, degrade, x, grid, algorithm, keep, keys, noise, noise_key, residual_sigmas
):
    slots = _slots(grid, keep)
    x0, (bx, bh) = _reverse(
        apply_fn,
        params,
        degrade,
        x,
        keys,
        jnp.asarray(noise),
        noise_key,
        None if residual_sigmas is None else jnp.asarray(residual_sigmas),
        grid=grid,
        algorithm=algorithm,
        slots=slots,
    )
    if isinstance(keep, (int, np.integer)) and not isinstance(keep, bool) and keep == 0:
        return x0
    times = np.asarray([t for t, s in zip(grid, slots, strict=True) if s >= 0], np.int32)
    return x0, Trajectory(t=times, x_t=bx[: len(times)], x0_hat=bh[: len(times)])


def cold_sample(
    apply_fn: ApplyFn,
    params: Any,
    degrade: Degradation,
    x_T: jax.Array,  # noqa: N803
    T: int | None = None,  # noqa: N803
    algorithm: int = 2,
    keep: int | Sequence[int] = 0,
    *,
    steps: int | None = None,
    key: jax.Array | None = None,
    noise: Any = 0.0,
    residual_sigmas: Any = None,
) -> jax.Array | tuple[jax.Array, Trajectory]:
    """Generate by reversing a degradation from fully degraded states (Bansal Alg. 1 / 2).

    With ``noise > 0`` the reverse process is stochastic (as in Inverse Heat Dissipation):
    every new state but the last gets fresh Gaussian noise of that standard deviation, for
    restorers trained on noisy inputs (:func:`jaxdiff.losses.cold_loss` with ``noise_std``).
    For a noise level that grows with ``t``, pass the training levels as ``residual_sigmas``
    so that Alg. 2 shrinks the carried residual with them.

    Args:
        apply_fn: Restorer ``apply_fn(params, x_t, t_frac (B,)) -> x0_hat``; hashable (e.g.
            ``model.apply``), it is a static argument of the jitted scan.
        params: Restorer parameters.
        degrade: The degradation the restorer was trained with.
        x_T: Start states ``(B, H, W, C)`` at ``t = T``
            (:func:`jaxdiff.start_states.sample_start`).
        T: The degradation's number of steps (checked against ``degrade.T``), or ``None``.
        algorithm: 1 (``x_{t-1} = D(x0_hat, t-1)``) or 2 (Bansal's improved update).
        keep: States to keep: ``0`` for none, an int ``k`` for ``k`` evenly spaced ones (first
            and last included; all of them if the run has fewer), or a sequence of times on
            the run's grid.
        steps: Number of reverse transitions (default ``T``: every step); fewer steps use an
            evenly spaced integer grid ``T = t_0 > t_1 > ... > 0`` with the same updates.
        key: PRNG key, required for stochastic degradations (one key per trajectory) and
            for ``noise > 0``.
        noise: Standard deviation of the Gaussian noise added after each step (0: the
            deterministic algorithms of Bansal et al.): a number, or ``noise[s]`` for the
            step into time ``s`` (a table of length ``T + 1``).
        residual_sigmas: Alg. 2 only: training noise levels ``sigma(t)`` (length ``T + 1``);
            the residual ``x_t - D(x0_hat, t)`` is scaled by ``sigma(s) / sigma(t)``.

    Returns:
        ``x0`` ``(B, H, W, C)``, or ``(x0, Trajectory)`` when ``keep`` asks for states.

    Raises:
        ValueError: For a bad algorithm, ``T``, ``steps``, ``keep``, shape, noise or
            missing key.
    """
    t_max = _check_inputs(degrade, x_T, T, algorithm)
    grid = _time_grid(t_max, steps)
    noise, res, keys, noise_key = _noise_and_keys(
        degrade, key, x_T.shape[0], noise, residual_sigmas, t_max
    )
    x_T = jnp.asarray(x_T)  # noqa: N806
    return _run(apply_fn, params, degrade, x_T, grid, algorithm, keep, keys, noise, noise_key, res)


def restore(
    apply_fn: ApplyFn,
    params: Any,
    degrade: Degradation,
    x0_real: jax.Array,
    t_start: int,
    T: int | None = None,  # noqa: N803
    algorithm: int = 2,
    keep: int | Sequence[int] = 0,
    *,
    steps: int | None = None,
    key: jax.Array | None = None,
    noise: Any = 0.0,
    residual_sigmas: Any = None,
) -> jax.Array | tuple[jax.Array, Trajectory]:
    """Conditional restoration: degrade real images to ``t_start``, then reverse to ``t = 0``.

    Args:
        apply_fn: Restorer (see :func:`cold_sample`).
        params: Restorer parameters.
        degrade: The degradation.
        x0_real: Clean images ``(B, H, W, C)`` in the model scale.
        t_start: Integer time in ``1..T`` to degrade to and restore from.
        T: The degradation's number of steps (checked), or ``None``.
        algorithm: 1 or 2.
        keep: As in :func:`cold_sample` (the first kept state is the degraded input).
        steps: Reverse transitions from ``t_start`` (default ``t_start``).
        key: PRNG key, required for stochastic degradations, ``noise > 0`` and
            ``residual_sigmas``.
        noise: As in :func:`cold_sample`; the degraded input gets ``residual_sigmas[t_start]``
            of noise when given (the noisy states the restorer was trained on, also when the
            reverse steps add none), else ``noise[t_start]``.
        residual_sigmas: As in :func:`cold_sample`.

    Returns:
        The restored images, or ``(restored, Trajectory)`` when ``keep`` asks for states.

    Raises:
        ValueError: For ``t_start`` outside ``1..T`` and as :func:`cold_sample`.
    """
    t_max = _check_inputs(degrade, x0_real, T, algorithm)
    if isinstance(t_start, bool) or not isinstance(t_start, (int, np.integer)):
        raise ValueError(f"t_start must be an integer in 1..{t_max}, got {t_start!r}.")
    if not 1 <= t_start <= t_max:
        raise ValueError(f"t_start must be in 1..{t_max}, got {t_start}.")
    grid = _time_grid(int(t_start), steps)
    x0_real = jnp.asarray(x0_real)
    noise, res, keys, noise_key = _noise_and_keys(
        degrade, key, x0_real.shape[0], noise, residual_sigmas, t_max
    )
    x_start = degrade_batch(degrade, x0_real, int(t_start), keys)
    start_sigma = float((res if res is not None else noise)[int(t_start)])
    if start_sigma > 0:  # the noisy state the restorer was trained on, also for Alg. 2 at 0
        x_start = _add_start_noise(x_start, start_sigma, key, noise_key)
    return _run(
        apply_fn, params, degrade, x_start, grid, algorithm, keep, keys, noise, noise_key, res
    )


def _add_start_noise(
    x: jax.Array, sigma: float, key: jax.Array | None, noise_key: jax.Array | None
) -> jax.Array:
    """``x + sigma z``: a restore input made the noisy state its restorer was trained on."""
    if key is None:
        raise ValueError("restoring from a noisy state (residual_sigmas or noise > 0) needs key=.")
    nk = noise_key if noise_key is not None else jax.random.fold_in(key, _NOISE_PURPOSE)
    z = jax.random.normal(jax.random.fold_in(nk, _START_PURPOSE), x.shape, x.dtype)
    return x + sigma * z


@partial(jax.jit, static_argnames=("degrade", "t"))
def degrade_batch(degrade: Degradation, x: jax.Array, t: int, keys: jax.Array | None) -> jax.Array:
    """Degrade a batch to one time ``t``: ``vmap(degrade)`` with ``t`` broadcast.

    Args:
        degrade: The degradation (static).
        x: Images ``(B, H, W, C)``, model scale.
        t: Integer time in ``0..T`` (static).
        keys: Per-example keys from :func:`example_keys` (``None`` if deterministic).

    Returns:
        ``D(x_b, t)`` for each image.
    """
    return _batched(degrade, x, jnp.int32(t), keys)


# --------------------------------------------------------------------------------------------
# Noise along a cold path (the stochastic variant).

NOISE_SCHEDULES = ("constant", "linear")


def noise_levels(T: int, noise: float, schedule: str = "constant") -> np.ndarray:  # noqa: N803
    """Standard deviations ``sigma(t)``, ``t = 0..T``, of the noise added to ``D(x0, t)``.

    The stochastic variant of a cold process trains on ``x_t = D(x0, t) + sigma(t) eps``
    and samples with fresh noise along the way (:func:`cold_sample`).

    Args:
        T: Number of steps.
        noise: ``sigma`` for ``"constant"`` (IHDM's training noise, e.g. 0.01), the final
            ``sigma(T)`` for ``"linear"``.
        schedule: ``"constant"`` (``sigma(t) = noise`` for ``t >= 1``) or ``"linear"``
            (``sigma(t) = noise * t / T``: the noise grows as the degradation destroys more).

    Returns:
        ``float32`` array of length ``T + 1`` with ``sigma(0) = 0``.

    Raises:
        ValueError: For a negative ``noise`` or an unknown schedule.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}.")
    if schedule not in NOISE_SCHEDULES:
        raise ValueError(f"unknown noise schedule {schedule!r}; choose from {NOISE_SCHEDULES}.")
    t = np.arange(T + 1, dtype=np.float64)
    sig = np.full(T + 1, float(noise)) if schedule == "constant" else noise * t / T
    sig[0] = 0.0
    return sig.astype(np.float32)
