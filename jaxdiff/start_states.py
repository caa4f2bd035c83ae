"""Start states for cold-diffusion generation: a Gaussian mixture fitted to degraded digits.

Deterministic degradations end in few distinct states (blur and fade nearly in one), so
generation needs a distribution of start states. :func:`fit_start_distribution` degrades
training images to ``t = T``, projects them on their leading principal components and fits
a diagonal Gaussian mixture there by EM (NumPy; Bansal et al. fit a GMM to degraded images);
:func:`sample_start` draws from it (one jitted function of a key), optionally re-applies
``D(., T)`` so every start state is a legitimate fully degraded image (exact for
``sediment`` and ``pixelate``, whose end maps are idempotent), and adds a little Gaussian
noise. :func:`start_fn_for` builds a run's start-state sampler from its config, with a key
derived from the run's seed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.cold import degrade_batch, example_keys
from jaxdiff.config import Config
from jaxdiff.data import load_mnist, normalize
from jaxdiff.degradations import Degradation
from jaxdiff.pipeline import run_keys

if TYPE_CHECKING:
    from jaxdiff.pipeline import Pieces


class StartDistribution(NamedTuple):
    """A diagonal Gaussian mixture on the leading principal components of degraded images.

    A draw is ``mean + sum_j z_j basis[j]`` with ``z ~ sum_k weights[k] N(means[k],
    diag(variances[k]))``.

    Attributes:
        mean: Mean fully degraded image ``(H, W, C)``.
        basis: Orthonormal principal directions ``(d, H, W, C)``.
        weights: Mixture weights ``(K,)``.
        means: Component means in component coordinates ``(K, d)``.
        variances: Component variances ``(K, d)``.
    """

    mean: jax.Array
    basis: jax.Array
    weights: jax.Array
    means: jax.Array
    variances: jax.Array


def _as_float_images(images: Any) -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        if arr.ndim == 3:
            return normalize(arr)
        if arr.ndim == 4 and arr.shape[-1] == 1:
            return normalize(arr[..., 0])
    elif np.issubdtype(arr.dtype, np.floating) and arr.ndim == 4:
        return arr.astype(np.float32)
    raise ValueError(
        "images must be uint8 (N, H, W) / (N, H, W, 1) or float model-scale (N, H, W, C); "
        f"got dtype {arr.dtype} shape {arr.shape}."
    )


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    d2 = np.sum((x - centres[0]) ** 2, axis=1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
        centres.append(x[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, np.sum((x - centres[-1]) ** 2, axis=1))
    return np.stack(centres)


def _fit_gmm(
    z: np.ndarray, k: int, rng: np.random.Generator, iters: int, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for a diagonal Gaussian mixture (float64)."""
    n, d = z.shape
    means = _kmeans_pp(z, k, rng)
    var = np.tile(z.var(0) + floor, (k, 1))
    w = np.full(k, 1.0 / k)
    prev = -np.inf
    for _ in range(iters):
        logp = (
            np.log(w)[None]
            - 0.5 * np.sum(np.log(2 * np.pi * var), axis=1)[None]
            - 0.5 * np.sum((z[:, None, :] - means[None]) ** 2 / var[None], axis=2)
        )
        mx = logp.max(1, keepdims=True)
        ll = mx[:, 0] + np.log(np.exp(logp - mx).sum(1))
        r = np.exp(logp - ll[:, None])
        nk = r.sum(0) + 1e-12
        w = nk / n
        means = (r.T @ z) / nk[:, None]
        var = (r.T @ z**2) / nk[:, None] - means**2 + floor
        var = np.maximum(var, floor)
        total = ll.mean()
        if abs(total - prev) < 1e-6 * max(1.0, abs(total)):
            break
        prev = total
    return w, means, var


def _degrade_all(
    degrade: Degradation, x: np.ndarray, t: int, key: jax.Array, batch: int
) -> np.ndarray:
    """``D(x, t)`` of every image, ``batch`` per jitted call, as ``float64``.

    Batch ``i`` (starting at image ``i``) draws a stochastic degradation's noise from
    ``fold_in(key, i)``.
    """
    parts = []
    for i in range(0, len(x), batch):
        xb = jnp.asarray(x[i : i + batch])
        keys = example_keys(degrade, jax.random.fold_in(key, i), xb.shape[0])
        parts.append(np.asarray(degrade_batch(degrade, xb, t, keys)))
    return np.concatenate(parts).astype(np.float64)


def _principal_components(xt: np.ndarray, n_pca: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images ``(N, H, W, C)`` -> their mean, leading principal directions and coordinates.

    Returns ``mean (H, W, C)``, orthonormal ``basis (d, H, W, C)`` and ``z (N, d)``, with
    ``d`` at most ``n_pca`` and the number of singular values above ``1e-4`` of the
    largest, and at least 1.
    """
    shape = xt.shape[1:]
    flat = xt.reshape(len(xt), -1)
    mean = flat.mean(0)
    _, sv, vt = np.linalg.svd(flat - mean, full_matrices=False)
    keep = sv > sv[0] * 1e-4 if sv[0] > 0 else np.zeros_like(sv, dtype=bool)
    d = int(max(1, min(n_pca, keep.sum())))
    basis = vt[:d]
    z = (flat - mean) @ basis.T
    return mean.reshape(shape), basis.reshape((d, *shape)), z


def fit_start_distribution(
    degrade: Degradation,
    images: Any,
    key: jax.Array,
    T: int | None = None,  # noqa: N803
    n_components: int = 10,
    n_pca: int = 32,
    max_images: int = 10000,
    iters: int = 200,
    batch: int = 1000,
) -> StartDistribution:
    """Fit a Gaussian mixture to fully degraded training images (start states for generation).

    Degrades up to ``max_images`` images (a key-determined subset) to ``t = T``, takes the
    leading ``n_pca`` principal components (fewer if the degraded images span fewer: blur,
    fade and pixelate end states are low-dimensional) and fits a diagonal mixture of
    ``n_components`` Gaussians there by EM (k-means++ start). NumPy, float64; deterministic
    for a given key.

    Args:
        degrade: The degradation.
        images: Training images, ``uint8`` ``(N, H, W)`` or float model-scale ``(N, H, W, C)``.
        T: Checked against ``degrade.T`` (or ``None``).
        key: PRNG key (subset, k-means++ and, for stochastic degradations, the noise).
        n_components: Mixture components.
        n_pca: Maximum number of principal components.
        max_images: Use at most this many images.
        iters: Maximum EM iterations.
        batch: Images degraded per jitted call.

    Returns:
        The :class:`StartDistribution`.

    Raises:
        ValueError: For bad images, sizes or a ``T`` mismatch.
    """
    t_max = degrade.T if T is None else T
    if t_max != degrade.T:
        raise ValueError(f"T={T} does not match the degradation's T={degrade.T}.")
    x = _as_float_images(images)
    if n_components < 1 or n_pca < 1 or max_images < 1:
        raise ValueError("n_components, n_pca and max_images must be positive.")
    k_sub, k_fit, k_noise = jax.random.split(key, 3)
    if len(x) > max_images:
        idx = np.sort(np.asarray(jax.random.permutation(k_sub, len(x))[:max_images]))
        x = x[idx]
    if len(x) < n_components:
        raise ValueError(f"need at least n_components={n_components} images, got {len(x)}.")
    mean, basis, z = _principal_components(_degrade_all(degrade, x, t_max, k_noise, batch), n_pca)
    floor = 1e-6 * max(float(z.var(0).max()), 1e-12)
    seed = int(jax.random.randint(k_fit, (), 0, 2**31 - 1))
    w, mu, var = _fit_gmm(z, n_components, np.random.default_rng(seed), iters, floor)
    f32 = partial(jnp.asarray, dtype=jnp.float32)
    return StartDistribution(
        mean=f32(mean),
        basis=f32(basis),
        weights=f32(w),
        means=f32(mu),
        variances=f32(var),
    )


def end_state_is_fixed(
    degrade: Degradation, images: Any, key: jax.Array, atol: float = 1e-3
) -> bool:
    """Whether ``D(., T)`` leaves fully degraded images unchanged (``D(D(x, T), T) = D(x, T)``).

    Re-degrading a start state drawn from a fitted mixture projects it back onto the end
    states only when they are fixed points (sediment's skylines, fade's black). For a
    degradation whose end is not idempotent (blur, melt: a blurred state blurs further), it
    would move the start state past ``t = T``, out of what the restorer was trained on.

    Args:
        degrade: The degradation.
        images: A few images, ``uint8`` ``(N, H, W)`` or model-scale ``(N, H, W, C)``.
        key: PRNG key (stochastic degradations).
        atol: Largest absolute change counted as unchanged (model scale).

    Returns:
        ``True`` if every image's end state is unchanged by a second ``D(., T)``.
    """
    x = jnp.asarray(_as_float_images(images))
    k1, k2 = jax.random.split(key)
    end = degrade_batch(degrade, x, degrade.T, example_keys(degrade, k1, x.shape[0]))
    again = degrade_batch(degrade, end, degrade.T, example_keys(degrade, k2, x.shape[0]))
    return bool(jnp.max(jnp.abs(again - end)) <= atol)


def sample_start(
    dist: StartDistribution,
    key: jax.Array,
    n: int,
    noise_std: float = 0.01,
    degrade: Degradation | None = None,
) -> jax.Array:
    """Draw ``n`` start states from a fitted :class:`StartDistribution`.

    Args:
        dist: From :func:`fit_start_distribution`.
        key: PRNG key; the draw is a pure function of it.
        n: Number of states.
        noise_std: Standard deviation of the Gaussian noise added last (model scale; Alg. 2
            carries it to the output, so keep it small).
        degrade: If given, re-apply ``D(., T)`` to each draw before the noise, so start states
            are fully degraded images (needs no key for deterministic degradations).

    Returns:
        ``float32`` start states ``(n, H, W, C)``.

    Raises:
        ValueError: For ``n < 1`` or a negative ``noise_std``.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}.")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}.")
    return _sample_start(dist, key, int(n), jnp.float32(noise_std), degrade)


@partial(jax.jit, static_argnames=("n", "degrade"))
def _sample_start(
    dist: StartDistribution,
    key: jax.Array,
    n: int,
    noise_std: jax.Array,
    degrade: Degradation | None,
) -> jax.Array:
    k_c, k_z, k_n, k_d = jax.random.split(key, 4)
    comp = jax.random.categorical(k_c, jnp.log(dist.weights), shape=(n,))
    z = dist.means[comp] + jnp.sqrt(dist.variances[comp]) * jax.random.normal(
        k_z, (n, dist.means.shape[1])
    )
    x = dist.mean[None] + jnp.tensordot(z, dist.basis, axes=1)
    if degrade is not None:
        keys = example_keys(degrade, k_d, n)
        x = degrade_batch(degrade, x, degrade.T, keys)
    return x + noise_std * jax.random.normal(k_n, x.shape, x.dtype)


def start_sampler(
    dist: StartDistribution, noise_std: float = 0.01, degrade: Degradation | None = None
) -> Callable[[jax.Array, int], jax.Array]:
    """Bind a distribution into ``start(key, n) -> x_T`` (the form the experiment runner takes).

    Args:
        dist: From :func:`fit_start_distribution`.
        noise_std: As in :func:`sample_start`.
        degrade: As in :func:`sample_start`.

    Returns:
        ``start(key, n)`` calling :func:`sample_start`.
    """

    def start(key: jax.Array, n: int) -> jax.Array:
        return sample_start(dist, key, n, noise_std, degrade)

    return start


def start_fn_for(
    cfg: Config,
    pieces: Pieces,
    data_dir: str | None = None,
    images: np.ndarray | None = None,
    noise_std: float | None = None,
) -> Callable[[jax.Array, int], jax.Array]:
    """Build a cold run's start-state sampler from degraded training images.

    The start distribution is fitted to fully degraded training images (see
    :func:`fit_start_distribution`) with a key derived from the run's seed, so it
    is the same every time the run is loaded.

    Args:
        cfg: A cold run's config.
        pieces: From :func:`jaxdiff.pipeline.build`.
        data_dir: MNIST folder (when ``images`` is not given).
        images: Training images ``uint8 (N, 28, 28)``.
        noise_std: Gaussian noise added to each start state (model scale); default: the
            run's training noise ``process.noise`` when it has one, else 0.01.

    Returns:
        ``start(key, n) -> x_T`` of shape ``(n, 28, 28, 1)``: a draw from the fitted
        mixture, re-degraded to ``t = T`` when the end states are fixed points of ``D(., T)``
        (:func:`end_state_is_fixed`; not for blur or melt, which would blur the
        draw further), plus a little noise.
    """
    if images is None:
        images, _ = load_mnist("train", data_dir)
    if cfg.train.limit:
        images = images[: cfg.train.limit]
    x0 = jnp.asarray(normalize(images[:10000]))
    key = jax.random.fold_in(run_keys(cfg.train.seed).sample, 1)
    dist = fit_start_distribution(pieces.degrade, x0, key, cfg.process.T)
    if noise_std is None:
        noise_std = cfg.process.noise or 0.01
    # re-degrading a mixture draw projects it onto the end states only if they are fixed points
    fixed = end_state_is_fixed(pieces.degrade, x0[:64], jax.random.fold_in(key, 2))
    return start_sampler(dist, noise_std=noise_std, degrade=pieces.degrade if fixed else None)
