"""The assembly: a run's pieces from its :class:`~jaxdiff.config.Config`, trained and sampled.

From a config this module builds the network, the forward process (noise schedule or
degradation), the loss, the optimiser and the keys (:func:`build`, :func:`run_keys`), trains
in memory (:func:`train`) and samples with any registered sampler (:func:`generate`). It
writes no files and changes nothing process-wide; :mod:`jaxdiff.app` adds the I/O
(checkpoints, metrics, figures, progress, the CLI) around the same pieces. In a notebook::

    from jaxdiff import pipeline, recipes
    from jaxdiff.data import load_mnist

    cfg = recipes.starter(epochs=1, limit=2048)
    images, _ = load_mnist("train", "../shared/data/mnist")
    state = pipeline.train(cfg, images)
    x = pipeline.generate(cfg, pipeline.build(cfg), state.ema_params, jax.random.key(0), 16)

Keys: every key of a run derives from ``jax.random.key(seed)`` by ``fold_in`` with a fixed
purpose number (:func:`run_keys`), then with the epoch (shuffling) or the step (training
noise), so a run is reproducible and a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.config import Config
from jaxdiff.losses import LossFn, cold_loss, ddpm_loss
from jaxdiff.models import build_model
from jaxdiff.recipes import steps_per_epoch as _steps_per_epoch
from jaxdiff.samplers import SamplerOptions, default_sampler, get_sampler
from jaxdiff.schedules import Schedule, eps_model, make_schedule
from jaxdiff.train import (
    EpochLoop,
    TrainState,
    init_train_state,
    make_optimizer,
    make_run_steps,
    make_train_step,
    run_epochs,
)


class RunKeys(NamedTuple):
    """The purpose keys of a run, all derived from its seed."""

    init: jax.Array
    perm: jax.Array
    step: jax.Array
    sample: jax.Array


def run_keys(seed: int) -> RunKeys:
    """Derive a run's purpose keys: ``fold_in(key(seed), i)`` for i = 0..3.

    Args:
        seed: The run's seed.

    Returns:
        :class:`RunKeys` (init, perm, step, sample).
    """
    base = jax.random.key(seed)
    return RunKeys(*(jax.random.fold_in(base, i) for i in range(4)))


@dataclasses.dataclass(frozen=True)
class Pieces:
    """The pure pieces of a run, built from its config.

    Attributes:
        model: The Linen module.
        apply_fn: What the samplers call: ``model.apply`` itself, or for a v-prediction DDPM
            its epsilon form (:func:`jaxdiff.schedules.eps_model`).
        loss_fn: ``loss_fn(params, x0, key) -> (loss, metrics)``.
        tx: The optimizer.
        sched: The noise schedule (DDPM runs), else ``None``.
        degrade: The per-example degradation (cold runs), else ``None``.
        cfg: The config they were built from.
    """

    model: Any
    apply_fn: Callable
    loss_fn: LossFn
    tx: Any
    sched: Schedule | None = None
    degrade: Callable | None = None
    cfg: Config | None = None


def build(cfg: Config, steps_per_epoch: int | None = None) -> Pieces:
    """Build model, loss, optimizer and forward process from a config.

    Args:
        cfg: The run config.
        steps_per_epoch: Optimizer steps per epoch (sets the horizon of a cosine
            learning-rate schedule); default: what MNIST's training set (or ``limit`` of it)
            gives at the configured batch size.

    Returns:
        The :class:`Pieces`.

    Raises:
        ValueError: For unknown process kinds or inconsistent settings.
    """
    model = build_model(cfg.model)
    apply_fn = model.apply
    tx = make_optimizer(cfg.train, steps_per_epoch or _steps_per_epoch(cfg.train))
    p = cfg.process
    if p.kind == "ddpm":
        sched = make_schedule(p.schedule, p.T, p.beta1, p.beta2)
        eps_fn = eps_model(apply_fn, sched, p.prediction)
        loss_fn = ddpm_loss(apply_fn, sched, p.prediction, p.weighting)
        return Pieces(model, eps_fn, loss_fn, tx, sched=sched, cfg=cfg)
    if p.kind == "cold":
        from jaxdiff.cold import noise_levels
        from jaxdiff.degradations import get_degradation

        degrade = get_degradation(p.degradation, p.T, **dict(p.degradation_options))
        sigmas = noise_levels(p.T, p.noise, p.noise_schedule)
        loss_fn = cold_loss(
            apply_fn, degrade, p.T, p.loss, stochastic=degrade.stochastic, noise_std=sigmas
        )
        return Pieces(model, apply_fn, loss_fn, tx, degrade=degrade, cfg=cfg)
    raise ValueError(f"unknown process kind {p.kind!r}; use 'ddpm' or 'cold'.")


def init_params(pieces: Pieces, key: jax.Array) -> Any:
    """Initialise network parameters for 28x28 single-channel images, in one jitted call.

    The same values as Flax's eager ``model.init`` (tested bitwise), which would compile each
    of its few hundred operations on its own (measured on the starter CNN: 12.7 s eager
    against 4.5 s jitted, most of that XLA compiling the parameters' random draws).

    Args:
        pieces: From :func:`build`.
        key: PRNG key (a run uses :attr:`RunKeys.init`).

    Returns:
        The parameter pytree.
    """
    return jax.jit(pieces.model.init)(key, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,)))


def abstract_params(pieces: Pieces) -> Any:
    """The parameters' shapes and dtypes (``jax.ShapeDtypeStruct`` leaves), computing nothing.

    Args:
        pieces: From :func:`build`.

    Returns:
        The target structure for loading saved weights.
    """
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    return jax.eval_shape(
        pieces.model.init, jax.random.key(0), x, jax.ShapeDtypeStruct((1,), x.dtype)
    )


def init_state(cfg: Config, pieces: Pieces) -> TrainState:
    """A run's initial train state: parameters from its seed's init key, fresh Adam, EMA.

    Args:
        cfg: The run config.
        pieces: From :func:`build`.

    Returns:
        The :class:`~jaxdiff.train.TrainState` at step 0.
    """
    params = init_params(pieces, run_keys(cfg.train.seed).init)
    return jax.jit(init_train_state, static_argnums=1)(params, pieces.tx)


def epoch_loop(
    cfg: Config, pieces: Pieces, images: np.ndarray, shardings: tuple[Any, Any] | None = None
) -> EpochLoop:
    """Compile-ready training for a run: its jitted step scan, data and keys.

    Args:
        cfg: The run config.
        pieces: From :func:`build`.
        images: Training images ``uint8 (N, 28, 28)`` (already cut to ``cfg.train.limit``).
        shardings: ``(batch, replicated)`` shardings over devices (``None``: one device).

    Returns:
        An :class:`~jaxdiff.train.EpochLoop` for :func:`jaxdiff.train.run_epochs`.
    """
    batch_sharding, replicated = shardings or (None, None)
    train_step = make_train_step(pieces.loss_fn, pieces.tx, cfg.train.ema_decay)
    images = jnp.asarray(np.asarray(images, np.uint8))
    return EpochLoop(
        make_run_steps(train_step, batch_sharding),
        images if replicated is None else jax.device_put(images, replicated),
        run_keys(cfg.train.seed),
        cfg.train.batch_size,
        replicated,
    )


def train(
    cfg: Config,
    images: np.ndarray,
    state: TrainState | None = None,
    *,
    pieces: Pieces | None = None,
    chunk_steps: int = 39,
    shardings: tuple[Any, Any] | None = None,
    on_chunk: Callable[[int, dict], None] | None = None,
    on_epoch: Callable[[TrainState, dict], None] | None = None,
) -> TrainState:
    """Train a run in memory: no files, no progress bar (the application's ``fit`` adds them).

    Args:
        cfg: The run config (``cfg.train.limit`` cuts ``images``).
        images: Training images ``uint8 (N, 28, 28)``.
        state: A state to continue from (default: :func:`init_state`); training runs from
            its epoch (``state.step`` over the steps per epoch) to ``cfg.train.epochs``.
        pieces: From :func:`build` (default: built here for these images).
        chunk_steps: Most steps per jitted call (does not change results).
        shardings: ``(batch, replicated)`` shardings for data-parallel training
            (:func:`jaxdiff.app.parallel.shardings`); ``None``: the default device.
        on_chunk: Called as ``on_chunk(epoch, metrics)`` after each jitted chunk, e.g. for a
            progress bar (see :func:`jaxdiff.train.run_epochs`).
        on_epoch: Called as ``on_epoch(state, record)`` after each epoch; ``record`` holds
            ``epoch`` (1-based), ``step``, the mean ``loss`` and ``grad_norm``, ``chunk_loss``,
            ``epoch_s`` and ``images_per_s``.

    Returns:
        The final train state (``state.ema_params`` for sampling when the run has an EMA).

    Raises:
        TrainingDiverged: If a loss becomes NaN or infinite.
    """
    images = images[: cfg.train.limit] if cfg.train.limit else images
    pieces = pieces or build(cfg, images.shape[0] // cfg.train.batch_size)
    state = init_state(cfg, pieces) if state is None else state
    loop = epoch_loop(cfg, pieces, images, shardings)
    return run_epochs(loop, state, cfg.train.epochs, chunk_steps, on_chunk, on_epoch)


def generate(
    cfg: Config,
    pieces: Pieces,
    params: Any,
    key: jax.Array,
    n: int,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float = 0.0,
    batch: int = 250,
    start: Callable[[jax.Array, int], jax.Array] | None = None,
    clip_x0: bool | str = False,
    noise: float | None = None,
) -> np.ndarray:
    """Draw ``n`` samples with a registered sampler, in batches (batch ``i``: ``fold_in(key, i)``).

    Args:
        cfg: The run config.
        pieces: From :func:`build`.
        params: Parameters to sample with (usually the EMA ones).
        key: PRNG key.
        n: Number of samples.
        sampler: A name in :data:`jaxdiff.samplers.SAMPLERS` that fits the run's process
            (default: :func:`jaxdiff.samplers.default_sampler`).
        steps: Network evaluations / reverse steps (default: the sampler's).
        eta: DDIM eta.
        batch: Samples per jitted call.
        start: Cold: ``start(key, n) -> x_T`` start states (see :mod:`jaxdiff.start_states`).
        clip_x0: DDIM / DPM-Solver++: clip each predicted clean image, to ``[-1, 1]`` for
            ``True`` or ``"wide"``, to the data range ``[-0.5, 0.5]`` for ``"data"``.
        noise: Cold: step noise of the reverse process (default: the run's own).

    Returns:
        ``float32`` numpy array ``(n, 28, 28, 1)`` in the model scale.

    Raises:
        ValueError: For a sampler that does not fit the run's process, clipping asked of a
            sampler that does not clip, or a cold run without start states.
    """
    clip = ("wide" if clip_x0 is True else clip_x0) or None
    options = SamplerOptions(steps=steps, eta=eta, clip=clip, noise=noise, start=start)
    chosen = get_sampler(sampler or default_sampler(cfg), cfg, options)
    if pieces.cfg is None:
        pieces = dataclasses.replace(pieces, cfg=cfg)
    out = []
    for i in range(math.ceil(n / batch)):
        b = min(batch, n - i * batch)
        out.append(np.asarray(chosen.draw(pieces, params, jax.random.fold_in(key, i), b, options)))
    return np.concatenate(out)
