"""Training losses, each a pure ``loss_fn(params, x0_batch, key) -> (loss, metrics)``.

Both the DDPM and the cold-diffusion objectives have this one signature, so a single
trainer (:func:`jaxdiff.train.make_train_step`) serves both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff.schedules import Schedule, q_sample, snr, v_target

ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
LossFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


#: The loss weightings of :func:`ddpm_loss`.
WEIGHTINGS = ("none", "min_snr")
#: The network targets of :func:`ddpm_loss`.
PREDICTIONS = ("eps", "v")


def ddpm_loss(
    apply_fn: ApplyFn,
    sched: Schedule,
    prediction: str = "eps",
    weighting: str = "none",
    snr_gamma: float = 5.0,
) -> LossFn:
    """The starter's epsilon-prediction loss (Prince, Alg. 18.1), and two variants.

    ``t ~ U{1, ..., T-1}`` (PyTorch ``randint(1, T)``), ``eps ~ N(0, I)``,
    ``z_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps`` and
    ``loss = mean((eps - net(z_t, t / T))**2)``.

    With ``prediction="v"`` the network predicts ``v`` (:func:`jaxdiff.schedules.v_target`)
    instead of ``eps``. With ``weighting="min_snr"`` each example's squared error is
    weighted by Min-SNR-gamma (Hang et al. 2023): ``min(SNR_t, gamma) / SNR_t`` for
    epsilon-prediction and ``min(SNR_t, gamma) / (SNR_t + 1)`` for v-prediction, i.e. the
    x0-error weight ``min(SNR_t, gamma)`` in both, which stops the nearly clean steps from
    dominating the gradient.

    Args:
        apply_fn: ``apply_fn(params, x, t_frac) -> prediction``.
        sched: The noise schedule (``T = sched.T``).
        prediction: ``"eps"`` (the starter) or ``"v"``.
        weighting: ``"none"`` (the starter) or ``"min_snr"``.
        snr_gamma: The Min-SNR clamp ``gamma``.

    Returns:
        ``loss_fn(params, x0 (B, H, W, C), key) -> (loss, {"loss": loss})``.

    Raises:
        ValueError: For an unknown prediction or weighting, or ``snr_gamma <= 0``.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; use one of {PREDICTIONS}.")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; use one of {WEIGHTINGS}.")
    if not snr_gamma > 0:
        raise ValueError(f"snr_gamma must be positive, got {snr_gamma}.")
    T = sched.T  # noqa: N806

    def loss_fn(params, x0, key):
        kt, ke = jax.random.split(key)
        t = jax.random.randint(kt, (x0.shape[0],), 1, T)
        eps = jax.random.normal(ke, x0.shape, jnp.float32)
        zt = jax.vmap(q_sample, (None, 0, 0, 0))(sched, x0, t, eps)
        pred = apply_fn(params, zt, t.astype(jnp.float32) / T)
        target = (
            eps if prediction == "eps" else jax.vmap(v_target, (None, 0, 0, 0))(sched, x0, t, eps)
        )
        if weighting == "none":
            loss = jnp.mean(jnp.square(target - pred))
        else:
            s = snr(sched, t)
            w = jnp.minimum(s, snr_gamma) / (s if prediction == "eps" else s + 1.0)
            per_example = jnp.mean(jnp.square(target - pred), axis=(1, 2, 3))
            loss = jnp.mean(w * per_example)
        return loss, {"loss": loss}

    return loss_fn


def cold_loss(
    apply_fn: ApplyFn,
    degrade: Callable[..., jax.Array],
    T: int,  # noqa: N803
    norm: str = "l1",
    stochastic: bool = False,
    noise_std: Any = 0.0,
) -> LossFn:
    """Cold-diffusion restoration loss (Bansal et al. 2022): ``|R(D(x0, t), t) - x0|``.

    ``t ~ U{1, ..., T}``; the restorer sees ``t / T``. With ``noise_std > 0`` it sees
    ``D(x0, t) + noise_std * eps`` instead (the training noise of Inverse Heat Dissipation),
    the states a stochastic reverse process (:func:`jaxdiff.cold.cold_sample` with
    ``noise``) visits.

    Args:
        apply_fn: Restorer ``R``: ``apply_fn(params, x_t, t_frac) -> x0_hat``.
        degrade: Per-example degradation ``D(x0, t) -> x_t`` (or ``D(x0, t, key)`` when
            ``stochastic``); batched here with ``jax.vmap``.
        T: Number of degradation steps.
        norm: ``"l1"`` (the paper's default) or ``"l2"``.
        stochastic: Whether ``degrade`` takes a per-example key.
        noise_std: Standard deviation of Gaussian noise added to the degraded input: a
            number, or a table ``sigma(t)`` of length ``T + 1``
            (:func:`jaxdiff.cold.noise_levels`).

    Returns:
        ``loss_fn(params, x0, key) -> (loss, {"loss": loss})``.

    Raises:
        ValueError: For an unknown norm or a negative ``noise_std``.
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"unknown loss norm {norm!r}; use 'l1' or 'l2'.")
    sig = jnp.asarray(noise_std, jnp.float32)
    if sig.ndim == 0:
        sig = jnp.full((T + 1,), sig)
    if sig.shape != (T + 1,) or float(sig.min()) < 0:
        raise ValueError(f"noise_std must be >= 0 (a number or T + 1 = {T + 1} of them).")
    noisy = float(sig.max()) > 0

    def loss_fn(params, x0, key):
        kt, kd = jax.random.split(key)
        t = jax.random.randint(kt, (x0.shape[0],), 1, T + 1)
        if stochastic:
            keys = jax.random.split(kd, x0.shape[0])
            xt = jax.vmap(degrade)(x0, t, keys)
        else:
            xt = jax.vmap(degrade)(x0, t)
        if noisy:
            eps = jax.random.normal(jax.random.fold_in(kd, 1), xt.shape, xt.dtype)
            xt = xt + sig[t][:, None, None, None] * eps
        pred = apply_fn(params, xt, t.astype(jnp.float32) / T)
        err = pred - x0
        loss = jnp.mean(jnp.abs(err)) if norm == "l1" else jnp.mean(jnp.square(err))
        return loss, {"loss": loss}

    return loss_fn
