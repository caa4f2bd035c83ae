"""Analyses of a trained cold-diffusion run (the study's Q2(b) and (c)).

Restoration error against ``t``, diversity, and the effect of the start-state sampler.

:func:`analyze_cold_run` writes them for one run folder; the pieces are usable alone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.config import Config
from jaxdiff.paths import atomic_json

if TYPE_CHECKING:
    from jaxdiff.degradations import Degradation

StartFn = Callable[[jax.Array, int], jax.Array]


def restoration_errors(
    cfg: Config,
    pieces: Any,
    params: Any,
    x0: Any,
    ts: Any,
    key: jax.Array,
    algorithm: int | None = None,
) -> list[dict]:
    """Restoration error against the start time ``t``.

    For each ``t``: the mean squared error to the clean images of the degraded input, of
    the restorer's one-shot prediction and of the full reverse process.

    The input at ``t`` is the state the restorer was trained on, ``D(x0, t) + sigma(t) z``
    with the run's training noise ``sigma``. The one-shot error is that of ``R(x_t, t)``;
    the restored error that of the run's sampler run from ``t`` down to 0
    (:func:`jaxdiff.cold.restore`).

    Args:
        cfg: A cold run's config.
        pieces: Its :class:`jaxdiff.pipeline.Pieces`.
        params: Restorer parameters.
        x0: Clean images ``(B, 28, 28, 1)``, model scale.
        ts: Start times in ``1..T``.
        key: PRNG key; time ``t`` uses ``fold_in(key, t)``.
        algorithm: 1 or 2 (default: the run's own sampler).

    Returns:
        One dict per ``t``: ``t``, ``mse_input``, ``mse_one_shot``, ``mse_restored``.
    """
    from jaxdiff.cold import noise_levels, restore
    from jaxdiff.samplers import cold_noise_tables, default_sampler

    p = cfg.process
    alg = algorithm or int(default_sampler(cfg)[-1])
    step_noise, residual = cold_noise_tables(cfg)
    sigma = noise_levels(p.T, p.noise, p.noise_schedule)
    net = (pieces.apply_fn, params, pieces.degrade)
    x0 = jnp.asarray(x0, jnp.float32)
    mse = partial(_mse, x0)
    out = []
    for t in (int(t) for t in ts):
        kd, kz, kr = jax.random.split(jax.random.fold_in(key, t), 3)
        x_t = _noisy_degraded(pieces.degrade, x0, t, float(sigma[t]), kd, kz)
        one = pieces.apply_fn(params, x_t, jnp.full((x0.shape[0],), t / p.T, jnp.float32))
        rest = restore(*net, x0, t, p.T, alg, key=kr, noise=step_noise, residual_sigmas=residual)
        out.append(
            {"t": t, "mse_input": mse(x_t), "mse_one_shot": mse(one), "mse_restored": mse(rest)}
        )
    return out


def _mse(x0: jax.Array, x: Any) -> float:
    """Mean squared error of ``x`` to the clean images ``x0``."""
    return float(jnp.mean((jnp.asarray(x, jnp.float32) - x0) ** 2))


def _noisy_degraded(
    degrade: Degradation, x: jax.Array, t: int, sigma: float, kd: jax.Array, kz: jax.Array
) -> jax.Array:
    """``D(x, t) + sigma z``, the noisy state restorers train on (``kd``: a stochastic D's key)."""
    tt = jnp.full((x.shape[0],), t, jnp.int32)
    if degrade.stochastic:
        x_t = jax.vmap(degrade)(x, tt, jax.random.split(kd, x.shape[0]))
    else:
        x_t = jax.vmap(degrade)(x, tt)
    return x_t + sigma * jax.random.normal(kz, x_t.shape, x_t.dtype)


def pairwise_distances(x: Any, key: jax.Array, n_pairs: int = 20000) -> dict:
    """Pixel-space L2 distances between random pairs of distinct images (a diversity yardstick).

    Args:
        x: Images ``(N, 28, 28, 1)`` (model scale), ``N >= 2``.
        key: PRNG key choosing the pairs.
        n_pairs: Pairs drawn (with replacement across pairs).

    Returns:
        ``{"mean", "median", "p05", "p95"}`` of the distances.

    Raises:
        ValueError: With fewer than two images.
    """
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"pairwise distances need at least 2 images, got {n}.")
    ka, kb = jax.random.split(key)
    i = np.asarray(jax.random.randint(ka, (n_pairs,), 0, n))
    j = (i + np.asarray(jax.random.randint(kb, (n_pairs,), 1, n))) % n  # j != i
    d = np.linalg.norm(x[i] - x[j], axis=1)
    return {
        "mean": float(d.mean()),
        "median": float(np.median(d)),
        "p05": float(np.percentile(d, 5)),
        "p95": float(np.percentile(d, 95)),
    }


def start_variants(
    cfg: Config,
    pieces: Any,
    train_images: np.ndarray,
    test_images: np.ndarray,
    key: jax.Array,
    noise_std: float | None = None,
) -> dict[str, StartFn]:
    """Start-state samplers that separate where a cold model's diversity comes from.

    - ``fitted``: the run's own sampler, a mixture fitted to ``D(x0, T)`` of training
      images (:func:`jaxdiff.start_states.start_fn_for`);
    - ``oracle``: ``D(x, T)`` of random held-out test digits plus the same noise (the best
      a start sampler could do);
    - ``single``: one fitted start state (drawn with ``key``) shared by every sample, plus
      the same noise (diversity from the noise alone).

    Args:
        cfg: A cold run's config.
        pieces: Its pieces.
        train_images: ``uint8`` training images (to fit the mixture).
        test_images: ``uint8`` test images (for ``oracle``).
        key: PRNG key of the shared ``single`` start state.
        noise_std: Noise added to every start state (default: the run's training noise
            ``process.noise``, else 0.01).

    Returns:
        Name -> ``start(key, n)``.
    """
    from jaxdiff.data import normalize
    from jaxdiff.start_states import start_fn_for

    if noise_std is None:
        noise_std = cfg.process.noise or 0.01
    fitted = start_fn_for(cfg, pieces, images=train_images, noise_std=noise_std)
    T = cfg.process.T  # noqa: N806
    test = jnp.asarray(normalize(test_images))
    degrade = pieces.degrade
    shared = fitted(key, 1)

    def oracle(key: jax.Array, n: int) -> jax.Array:
        ki, kd, kz = jax.random.split(key, 3)
        x = test[jax.random.randint(ki, (n,), 0, test.shape[0])]
        return _noisy_degraded(degrade, x, T, noise_std, kd, kz)

    def single(key: jax.Array, n: int) -> jax.Array:
        z = jax.random.normal(key, (n, *shared.shape[1:]), shared.dtype)
        return jnp.repeat(shared, n, axis=0) + noise_std * z

    return {"fitted": fitted, "oracle": oracle, "single": single}


def analyze_cold_run(
    checkpoint: str | Path,
    out: str | Path,
    n: int = 1000,
    seed: int = 0,
    data_dir: str | None = None,
    n_restore: int = 500,
    n_times: int = 11,
) -> dict:
    """Write a cold run's analyses into ``out``.

    Writes ``restoration.json`` and ``restoration_error.png`` (:func:`restoration_errors` on
    ``n_restore`` test digits at ``n_times`` start times), and ``start_states.json`` (for each
    of :func:`start_variants`: ``n`` samples with the run's sampler, their fidelity metrics
    and pairwise distances, beside those of ``n`` real test digits: the floor at this ``n``),
    with a grid per variant.

    Args:
        checkpoint: Run folder or export folder of a cold run.
        out: Output folder.
        n: Samples per start-state variant (metrics compare at equal ``n``).
        seed: Seed of all keys (sampling, noise, pairs).
        data_dir: MNIST folder.
        n_restore: Test digits restored per start time.
        n_times: Start times, evenly spaced in ``1..T``.

    Returns:
        ``{"restoration": [...], "start_states": {...}}`` as written.

    Raises:
        ValueError: For a DDPM run or ``n < 2``.
    """
    from jaxdiff.app.runner import load_run
    from jaxdiff.data import load_mnist

    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}.")
    cfg, pieces, params, _ = load_run(checkpoint)
    if cfg.process.kind != "cold":
        raise ValueError(
            f"{checkpoint} is a {cfg.process.kind} run; the analyses are for cold runs."
        )
    out = Path(out)
    key = jax.random.key(seed)
    train, _ = load_mnist("train", data_dir)
    test, _ = load_mnist("test", data_dir)
    run = (cfg, pieces, params)
    rest = _restoration_analysis(*run, test, n_restore, n_times, jax.random.fold_in(key, 1), out)
    rows = _start_state_rows(*run, train, test, n, n_restore, key, out)
    result = {"restoration": rest, "start_states": {"n": n, "seed": seed, "rows": rows}}
    atomic_json(out / "start_states.json", result["start_states"], default=float)
    return result


def _restoration_analysis(
    cfg: Config,
    pieces: Any,
    params: Any,
    test: np.ndarray,
    n_restore: int,
    n_times: int,
    key: jax.Array,
    out: Path,
) -> list[dict]:
    """Restoration errors of the last ``n_restore`` test digits at ``n_times`` start times."""
    from jaxdiff.app import plotting
    from jaxdiff.data import normalize
    from jaxdiff.samplers import default_sampler

    T = cfg.process.T  # noqa: N806
    ts = sorted({int(t) for t in np.linspace(1, T, n_times).round()})
    x0 = jnp.asarray(normalize(test[-n_restore:]))
    rest = restoration_errors(cfg, pieces, params, x0, ts, key)
    atomic_json(out / "restoration.json", {"n": n_restore, "times": rest})
    plotting.plot_curves(
        {
            label: ([r["t"] for r in rest], [r[k] for r in rest])
            for label, k in (
                ("degraded input", "mse_input"),
                ("one-shot R(x_t, t)", "mse_one_shot"),
                (f"reverse process ({default_sampler(cfg)})", "mse_restored"),
            )
        },
        out / "restoration_error.png",
        "start time t",
        "MSE to x0",
        title=f"restoring {n_restore} test digits from t",
        logy=True,
    )
    return rest


def _start_state_rows(
    cfg: Config,
    pieces: Any,
    params: Any,
    train: np.ndarray,
    test: np.ndarray,
    n: int,
    n_restore: int,
    key: jax.Array,
    out: Path,
) -> dict[str, dict]:
    """Metrics of ``n`` samples per start-state variant beside real test digits; grids to ``out``.

    The variants' oracle draws from the test digits other than the last ``n_restore``.
    """
    from jaxdiff.app import plotting
    from jaxdiff.data import normalize
    from jaxdiff.fidelity.evaluation import evaluate_samples, prepare_reference
    from jaxdiff.pipeline import generate
    from jaxdiff.samplers import default_sampler

    ref = prepare_reference(normalize(train), normalize(test), jax.random.key(0), n=n)
    keep = ("fd", "fd_ci", "recall", "precision", "class_hist", "nn_dist_ratio")

    def row(x: Any) -> dict:
        m = evaluate_samples(x, None, None, jax.random.key(1), reference=ref)
        r = {k: m[k] for k in keep if k in m}
        r["pairwise"] = pairwise_distances(x, jax.random.fold_in(key, 2))
        return r

    rows = {"real test": row(normalize(test[:n]))}
    variants = start_variants(cfg, pieces, train, test[:-n_restore], jax.random.fold_in(key, 3))
    for name, start in variants.items():
        x = generate(
            cfg, pieces, params, jax.random.fold_in(key, 4), n, default_sampler(cfg), start=start
        )
        rows[name] = row(x)
        plotting.save_grid(x[:64], out / f"start_{name}.png", title=f"start states: {name}")
    return rows


def cold_figures(
    cfg: Config,
    pieces: Any,
    params: Any,
    images: np.ndarray,
    workdir: str | Path,
    start: Callable[[jax.Array, int], jax.Array],
    n_digits: int = 6,
    n_cols: int = 9,
) -> None:
    """Write a cold run's figures: ``D(x0, t)`` across ``t`` and reverse trajectories.

    Writes ``degradation_strip.png`` (rows: training digits; columns: evenly spaced ``t``),
    ``trajectory.png`` (generation from start states) and ``restoration.png`` (conditional
    restoration of degraded digits from ``t = T / 2``), both with the run's own sampler
    (:func:`jaxdiff.samplers.default_sampler`) and reverse-process noise
    (:func:`jaxdiff.samplers.cold_noise_tables`).

    Args:
        cfg: A cold run's config.
        pieces: Its :class:`jaxdiff.pipeline.Pieces`.
        params: Restorer parameters.
        images: ``uint8`` images to show (the first ``n_digits`` are used).
        workdir: Output folder.
        start: Start-state sampler.
        n_digits: Rows.
        n_cols: Columns (times).
    """
    from jaxdiff.data import normalize
    from jaxdiff.pipeline import run_keys

    workdir = Path(workdir)
    keys = run_keys(cfg.train.seed)
    x0 = jnp.asarray(normalize(images[:n_digits]))
    strip_key = jax.random.fold_in(keys.sample, 2)
    _save_degradation_strip(cfg, pieces.degrade, x0, n_cols, strip_key, workdir)
    x_T = start(jax.random.fold_in(keys.sample, 3), n_digits)  # noqa: N806
    reverse_key = jax.random.fold_in(keys.sample, 4)
    _save_reverse_strips(cfg, pieces, params, x0, x_T, n_cols, reverse_key, workdir)


def _save_degradation_strip(
    cfg: Config, degrade: Degradation, x0: jax.Array, n_cols: int, key: jax.Array, workdir: Path
) -> None:
    """Write ``degradation_strip.png``: ``D(x0, t)`` at ``n_cols`` evenly spaced times."""
    from jaxdiff.app import plotting
    from jaxdiff.degradations import degradation_strip

    ts = np.round(np.linspace(0, cfg.process.T, n_cols)).astype(int)
    strip = degradation_strip(degrade, x0, ts, key=key if degrade.stochastic else None)
    labels = [f"t={t}" for t in ts]
    plotting.save_strip(
        strip, workdir / "degradation_strip.png", labels, f"{cfg.process.degradation}: D(x0, t)"
    )


def _save_reverse_strips(
    cfg: Config,
    pieces: Any,
    params: Any,
    x0: jax.Array,
    x_T: jax.Array,  # noqa: N803
    n_cols: int,
    key: jax.Array,
    workdir: Path,
) -> None:
    """Write ``trajectory.png`` (from ``x_T``) and ``restoration.png`` (``x0`` from ``T / 2``)."""
    from jaxdiff.app import plotting
    from jaxdiff.cold import cold_sample, restore
    from jaxdiff.samplers import cold_noise_tables, default_sampler

    T = cfg.process.T  # noqa: N806
    alg = int(default_sampler(cfg)[-1])
    step_noise, residual = cold_noise_tables(cfg)
    net = (pieces.apply_fn, params, pieces.degrade)
    kw = dict(keep=n_cols, key=key, noise=step_noise, residual_sigmas=residual)
    runs = (
        ("trajectory", "generation (Alg. {alg}), from start states to samples",
         lambda: cold_sample(*net, x_T, T, alg, **kw)),
        ("restoration", f"restoration (Alg. {{alg}}) from D(x0, {T // 2})",
         lambda: restore(*net, x0, T // 2, T, alg, **kw)),
    )  # fmt: skip
    for name, title, reverse in runs:
        _, traj = reverse()
        plotting.save_strip(
            np.swapaxes(np.asarray(traj.x_t), 0, 1),
            workdir / f"{name}.png",
            [f"t={int(t)}" for t in np.asarray(traj.t)],
            title.format(alg=alg),
        )
