"""The pure-functional trainer shared by DDPM and cold diffusion.

* :class:`TrainState` is a pytree (step, params, optimizer state, EMA parameters).
* :func:`make_train_step` returns ``train_step(state, batch, key) -> (state, metrics)``;
  the step's randomness is ``fold_in(key, state.step)``, so nothing random is stored and a
  resumed run draws exactly what an uninterrupted one would.
* :func:`make_run_steps` scans many steps in one jitted call over device-resident ``uint8``
  images and a block of shuffled indices: no per-step Python dispatch or host copy.
* :func:`epoch_indices` gives epoch ``e``'s permutation from ``fold_in(key, e)``.
* :func:`run_epochs` is the one epoch loop (in chunks of scanned steps, with hooks after
  each chunk and epoch); :func:`jaxdiff.pipeline.train` and the application's ``fit`` run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.config import TrainConfig
from jaxdiff.data import normalize
from jaxdiff.losses import LossFn

Metrics = dict[str, jax.Array]
TrainStep = Callable[["TrainState", jax.Array, jax.Array], tuple["TrainState", Metrics]]


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    Attributes:
        step: Number of optimizer steps taken (``int32`` scalar).
        params: Model parameters (``float32`` master weights).
        opt_state: Optimizer state.
        ema_params: Exponential moving average of ``params`` (equals ``params`` when the
            EMA is disabled); used for sampling.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any


def make_optimizer(
    cfg: TrainConfig, steps_per_epoch: int | None = None
) -> optax.GradientTransformation:
    """Adam with the configured learning rate, schedule and optional global-norm clipping.

    Args:
        cfg: Training settings.
        steps_per_epoch: Optimizer steps per epoch; the cosine schedule needs it to end at
            zero after ``cfg.epochs`` epochs.

    Returns:
        The optax transformation.

    Raises:
        ValueError: If the learning rate is not positive, the schedule is unknown, or the
            cosine schedule lacks ``steps_per_epoch`` or has more warm-up than steps.

    The ``"constant"`` schedule ramps linearly from 0 over ``cfg.warmup_steps`` (0: none,
    the starter) and then holds ``cfg.lr``: with an EMA, one such run can be evaluated at
    any of its exports, a budget curve from one training.
    """
    if not cfg.lr > 0:
        raise ValueError(f"learning rate must be positive, got {cfg.lr}.")
    if cfg.lr_schedule == "constant":
        if cfg.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {cfg.warmup_steps}.")
        lr = cfg.lr
        if cfg.warmup_steps:
            lr = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    elif cfg.lr_schedule == "cosine":
        if not steps_per_epoch or steps_per_epoch <= 0:
            raise ValueError("the cosine learning-rate schedule needs steps_per_epoch > 0.")
        total = cfg.epochs * steps_per_epoch
        if not 0 <= cfg.warmup_steps < total:
            raise ValueError(
                f"warmup_steps must be in [0, {total}) (the run's {cfg.epochs} epochs of "
                f"{steps_per_epoch} steps), got {cfg.warmup_steps}."
            )
        lr = optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=cfg.lr,
            warmup_steps=cfg.warmup_steps,
            decay_steps=total,
            end_value=0.0,
        )
    else:
        raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; use 'constant' or 'cosine'.")
    tx = optax.adam(lr)
    if cfg.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx


def init_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """Build the initial state from freshly initialised parameters.

    Args:
        params: Initial parameters.
        tx: Optimizer.

    Returns:
        A :class:`TrainState` at step 0 with the EMA equal to ``params``.
    """
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
    )


def warm_train_state(
    params: Any, ema_params: Any, tx: optax.GradientTransformation, step: int
) -> TrainState:
    """Continue training from saved weights alone, without the optimizer state.

    For runs whose checkpoints are gone but whose exported weights survive. The Adam moments
    and its bias correction start afresh (its first updates are ``lr * sign(g)`` in size, as
    at step 1 of a new run); every learning-rate schedule continues at ``step``, and
    ``state.step`` (hence every ``fold_in(key, step)``) is ``step``, so the data order and
    noise keys are those of the uninterrupted run. Only the moments differ from it.

    Args:
        params: Raw (trained) parameters.
        ema_params: Their EMA (equal to ``params`` for runs without one).
        tx: The run's optimizer.
        step: Optimizer steps already taken.

    Returns:
        A :class:`TrainState` at ``step``.
    """

    def continue_schedule(s: Any) -> Any:
        if isinstance(s, optax.ScaleByScheduleState):
            return s._replace(count=jnp.asarray(step, s.count.dtype))
        return s

    opt_state = jax.tree.map(
        continue_schedule,
        tx.init(params),
        is_leaf=lambda s: isinstance(s, optax.ScaleByScheduleState),
    )
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        opt_state=opt_state,
        ema_params=ema_params,
    )


def make_train_step(
    loss_fn: LossFn, tx: optax.GradientTransformation, ema_decay: float = 0.0
) -> TrainStep:
    """Make the pure training step.

    Args:
        loss_fn: ``loss_fn(params, x0, key) -> (loss, metrics)``.
        tx: Optimizer.
        ema_decay: EMA decay in [0, 1); 0 keeps ``ema_params == params``. The decay used at
            step ``s`` is ``min(ema_decay, (1 + s) / (10 + s))`` (a warm-up, so early averages
            do not stay anchored to the initialisation).

    Returns:
        ``train_step(state, batch, key) -> (state, metrics)`` where ``batch`` is a float
        image batch and ``key`` the run's step key (folded with ``state.step`` inside).
        ``metrics`` holds ``loss`` and ``grad_norm``.
    """
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")

    def train_step(state: TrainState, batch: jax.Array, key: jax.Array):
        step_key = jax.random.fold_in(key, state.step)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, step_key
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if ema_decay > 0:
            # warm-up (as tf.train.ExponentialMovingAverage with num_updates): without it a
            # 0.999 EMA after 1000 steps still weighs the initial parameters by e^-1
            step = state.step.astype(jnp.float32)
            decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
            ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
        else:
            ema = params
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        return TrainState(state.step + 1, params, opt_state, ema), metrics

    return train_step


def epoch_indices(key: jax.Array, epoch: int, n: int, batch_size: int) -> jax.Array:
    """Shuffled batch indices of one epoch, last partial batch dropped (as the starter).

    Args:
        key: The run's permutation key.
        epoch: Epoch number (0-based); the permutation is ``fold_in(key, epoch)``'s.
        n: Number of training images.
        batch_size: Images per batch.

    Returns:
        ``int32`` array ``(n // batch_size, batch_size)``.

    Raises:
        ValueError: If there are fewer images than one batch.
    """
    steps = n // batch_size
    if steps == 0:
        raise ValueError(
            f"{n} training images give no full batch of {batch_size}; "
            "lower --batch-size or raise --limit."
        )
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    return perm[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)


def _image_batch(images: jax.Array, idx: jax.Array) -> jax.Array:
    return normalize(jnp.take(images, idx, axis=0))


def make_run_steps(
    train_step: TrainStep,
    batch_sharding: Any = None,
    get_batch: Callable[[Any, jax.Array], Any] = _image_batch,
    donate: bool = True,
):
    """Jit a scan of ``train_step`` over a block of batches drawn from device-resident data.

    Args:
        train_step: From :func:`make_train_step`.
        batch_sharding: Optional ``jax.sharding.Sharding`` for each batch (data
            parallelism: batch split over devices, parameters replicated).
        get_batch: ``get_batch(data, batch_idx) -> batch``; default: the ``uint8`` images
            at ``batch_idx``, scaled by :func:`jaxdiff.data.normalize`.
        donate: Let the call reuse the input state's buffers (the state passed in is then
            consumed).

    Returns:
        ``run_steps(state, data, idx (S, B), key) -> (state, metrics)``, ``data`` e.g.
        ``images_u8 (N, 28, 28)``, where every metric is stacked to shape ``(S,)``.
    """

    def run_steps(state, data, idx, key):
        def body(st, batch_idx):
            batch = get_batch(data, batch_idx)
            if batch_sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            return train_step(st, batch, key)

        return jax.lax.scan(body, state, idx)

    return jax.jit(run_steps, donate_argnums=(0,) if donate else ())


class TrainingDiverged(RuntimeError):
    """Raised when the loss becomes NaN or infinite."""


def chunk_size(steps: int, most: int) -> int:
    """Steps per jitted call: as few calls as ``most`` allows, as equal in length as possible.

    Each distinct length is one more compilation of the scanned step, so 64 steps with
    ``most=39`` run as 32 + 32, not 39 + 25; a full MNIST epoch (468 steps) as 12 x 39.

    Args:
        steps: Steps in the epoch.
        most: Most steps per call.

    Returns:
        The chunk length (the last chunk may be shorter).
    """
    calls = -(-steps // most)
    return -(-steps // calls)


class EpochLoop(NamedTuple):
    """One epoch's training, chunk by chunk (see :func:`epoch_chunks`)."""

    run_steps: Callable
    images: jax.Array
    keys: Any  # jaxdiff.pipeline.RunKeys: its .perm and .step keys
    batch_size: int
    replicated: Any = None  # the state's sharding over devices (None: one device)


def epoch_chunks(
    loop: EpochLoop, state: TrainState, epoch: int, chunk_steps: int = 39
) -> Iterator[tuple[TrainState, dict]]:
    """Run epoch ``epoch`` (0-based) in jitted chunks, yielding after each one.

    The data order is ``epoch_indices(perm key, epoch)`` and each step's noise key is
    ``fold_in(step key, step)``, so results do not depend on the chunking or on resuming.

    Args:
        loop: From :func:`jaxdiff.pipeline.epoch_loop`.
        state: The train state at the start of the epoch.
        epoch: The epoch's index (0-based).
        chunk_steps: Most steps per jitted call (:func:`chunk_size`).

    Yields:
        ``(state, metrics)`` after each chunk: ``metrics["loss"]`` and ``["grad_norm"]``
        hold the chunk's per-step values.

    Raises:
        TrainingDiverged: If a loss is NaN or infinite.
    """
    n = loop.images.shape[0]
    idx = epoch_indices(loop.keys.perm, epoch, n, loop.batch_size)
    size = chunk_size(idx.shape[0], chunk_steps)
    for s0 in range(0, idx.shape[0], size):
        state, m = loop.run_steps(state, loop.images, idx[s0 : s0 + size], loop.keys.step)
        loss = np.asarray(m["loss"])
        if not np.all(np.isfinite(loss)):
            raise TrainingDiverged(
                f"loss became {loss[~np.isfinite(loss)][0]} in epoch {epoch + 1} (around step "
                f"{int(state.step)}); lower the learning rate or clip the gradients."
            )
        yield state, {"loss": loss, "grad_norm": np.asarray(m["grad_norm"])}


def run_epochs(
    loop: EpochLoop,
    state: TrainState,
    epochs: int,
    chunk_steps: int = 39,
    on_chunk: Callable[[int, dict], None] | None = None,
    on_epoch: Callable[[TrainState, dict], None] | None = None,
) -> TrainState:
    """Train from ``state``'s epoch to ``epochs``: the one epoch loop.

    Args:
        loop: From :func:`jaxdiff.pipeline.epoch_loop`.
        state: The state to continue from (its epoch is ``state.step`` over the steps per
            epoch).
        epochs: The run's total epochs.
        chunk_steps: Most steps per jitted call (:func:`chunk_size`).
        on_chunk: Called as ``on_chunk(epoch, metrics)`` after each chunk (``epoch``
            1-based; ``metrics`` as :func:`epoch_chunks` yields them).
        on_epoch: Called as ``on_epoch(state, record)`` after each epoch; ``record``: its
            ``epoch`` (1-based), ``step``, step-weighted mean ``loss`` and ``grad_norm``,
            ``chunk_loss`` (each chunk's mean), ``epoch_s`` and ``images_per_s``.

    Returns:
        The final state.

    Raises:
        TrainingDiverged: If a loss is NaN or infinite.
    """
    spe = loop.images.shape[0] // loop.batch_size
    if loop.replicated is not None:
        state = jax.device_put(state, loop.replicated)
    for epoch in range(int(state.step) // spe, epochs):
        t0, chunks = time.perf_counter(), []
        for state, m in epoch_chunks(loop, state, epoch, chunk_steps):  # noqa: B007, B020
            chunks.append(m)
            if on_chunk is not None:
                on_chunk(epoch + 1, m)
        if on_epoch is not None:
            seconds = time.perf_counter() - t0
            on_epoch(state, _epoch_record(epoch + 1, state, chunks, seconds, loop.batch_size))
    return state


def _epoch_record(
    epoch: int, state: TrainState, chunks: list[dict], seconds: float, batch_size: int
) -> dict:
    """An epoch's record: its step, step-weighted mean loss and gradient norm, and speed."""
    weights = [len(m["loss"]) for m in chunks]
    return {
        "epoch": epoch,
        "step": int(state.step),
        "loss": float(np.average([m["loss"].mean() for m in chunks], weights=weights)),
        "grad_norm": float(np.average([m["grad_norm"].mean() for m in chunks], weights=weights)),
        "chunk_loss": [float(m["loss"].mean()) for m in chunks],
        "epoch_s": seconds,
        "images_per_s": sum(weights) * batch_size / seconds,
    }
