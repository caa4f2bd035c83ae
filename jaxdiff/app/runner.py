"""Run orchestration with files: train with checkpoints and logs, resume, load a run back.

This is the layer the thin drivers in ``experiments/`` call. The run's assembly and its one
epoch loop are the pure core's (:mod:`jaxdiff.pipeline`: ``build``, ``train``, ``generate``);
here are the side effects around them: reading data, the run folder (:mod:`.rundir`:
``config.json``, resuming), and after each epoch ``metrics.jsonl``, figures, checkpoints and
exports, with a progress bar.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxdiff.app import checkpoint as ckpt
from jaxdiff.app import plotting
from jaxdiff.app.parallel import data_mesh, shardings
from jaxdiff.app.rundir import RunDir, machine_info, open_run, starting_state, write_metrics
from jaxdiff.config import Config
from jaxdiff.data import load_mnist
from jaxdiff.kernels import resolve_conv_impl
from jaxdiff.paths import atomic_npy
from jaxdiff.pipeline import (
    Pieces,
    abstract_params,
    build,
    epoch_loop,
    generate,
    init_state,
    run_keys,
)
from jaxdiff.train import TrainingDiverged, TrainState, init_train_state, run_epochs

__all__ = ["TrainingDiverged", "fit", "load_run", "machine_info"]


def fit(
    cfg: Config,
    workdir: str | Path,
    data_dir: str | None = None,
    resume: bool = False,
    chunk_steps: int = 39,
    grid_n: int = 16,
    grid_every: int = 1,
    keep_checkpoints: int = 3,
    progress: bool = True,
    images: np.ndarray | None = None,
    start_fn_factory: Callable[[Pieces, np.ndarray], Callable] | None = None,
    export_epochs: tuple[int, ...] = (),
    warm_start: str | Path | None = None,
    argv: list[str] | None = None,
) -> tuple[TrainState, list[dict]]:
    """Train a run, writing config, metrics, figures and checkpoints into ``workdir``.

    The core's loop (:func:`jaxdiff.pipeline.train`) runs data parallel over all devices
    (one device is the same code path). After each epoch: an atomic checkpoint, a metrics
    line, the loss curve and a fixed-key grid from the EMA parameters; after the last, the
    EMA parameters are exported to ``workdir/final`` (small, standalone; see :func:`load_run`).

    Args:
        cfg: The run config.
        workdir: Output folder.
        data_dir: MNIST folder (see :func:`jaxdiff.data.resolve_data_dir`).
        resume: Continue from the latest complete checkpoint in ``workdir``.
        chunk_steps: Most steps per jitted call (results do not depend on it).
        grid_n: Samples in each epoch's grid (0 disables grids).
        grid_every: Draw the grid every this many epochs (and after the last).
        keep_checkpoints: Checkpoints kept.
        progress: Show a progress bar and a line per epoch.
        images: Training images ``uint8 (N, 28, 28)`` to use instead of loading MNIST.
        start_fn_factory: Cold runs: ``factory(pieces, images) -> start(key, n)``.
        export_epochs: Export the EMA (and raw) parameters after these epochs to
            ``workdir/exports/epoch_NNN`` (and ``_raw``), to commit and evaluate later.
        warm_start: An export of this run to continue from when its checkpoints are gone,
            with fresh Adam moments (:func:`jaxdiff.app.rundir.starting_state`).
        argv: This process's command line, appended to ``config.json``'s ``invocations``.

    Returns:
        ``(state, records)``: the final train state and all metrics records.

    Raises:
        CheckpointError: On an existing run without ``resume``, or a config mismatch.
        TrainingDiverged: If the loss becomes NaN or infinite (nothing of that epoch is
            saved; the message names the last good checkpoint).
    """
    run = open_run(workdir, cfg, resume, warm_start, argv)
    images = images if images is not None else load_mnist("train", data_dir)[0]
    images = images[: cfg.train.limit] if cfg.train.limit else images
    spe = images.shape[0] // cfg.train.batch_size
    pieces = build(cfg, steps_per_epoch=spe)
    fresh = init_state(cfg, pieces)
    state, records = starting_state(run, cfg, fresh, pieces.tx, spe)
    start_fn = start_fn_factory(pieces, images) if start_fn_factory else None
    opts = _Options(grid_n, grid_every, keep_checkpoints, tuple(export_epochs), progress)
    out = _EpochWriter(run, cfg, pieces, list(records), spe, start_fn, opts)
    return out.train(images, state, chunk_steps), out.records


class _Options(NamedTuple):
    """What :func:`fit` writes besides checkpoints and metrics (see its arguments)."""

    grid_n: int
    grid_every: int
    keep_checkpoints: int
    export_epochs: tuple[int, ...]
    progress: bool


@dataclasses.dataclass
class _EpochWriter:
    """What :func:`fit` writes after each epoch: grid, checkpoint, exports, metrics, curve."""

    run: RunDir
    cfg: Config
    pieces: Pieces
    records: list[dict]
    steps_per_epoch: int
    start_fn: Callable | None
    opts: _Options
    bar: Any = None
    _t: float = dataclasses.field(default_factory=time.perf_counter)
    _c: float = dataclasses.field(default_factory=time.process_time)

    def train(self, images: np.ndarray, state: TrainState, chunk_steps: int) -> TrainState:
        """Train with the core's loop, writing after each epoch, then export ``final``."""
        cfg, sharding = self.cfg, shardings(data_mesh(), self.cfg.train.batch_size)
        loop = epoch_loop(cfg, self.pieces, images, sharding)
        with self:
            state = run_epochs(loop, state, cfg.train.epochs, chunk_steps, self.chunk, self.epoch)
        done = self.records[-1]["epoch"] if self.records else state.step // self.steps_per_epoch
        self.export("final", state.ema_params, {"epoch": int(done), "step": int(state.step)})
        return state

    def chunk(self, epoch: int, m: dict) -> None:
        """Advance the epoch's progress bar by one chunk."""
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.steps_per_epoch,
                desc=f"epoch {epoch}/{self.cfg.train.epochs}",
                disable=not (self.opts.progress and self.run.is_main),
                leave=False,
                mininterval=1.0,
            )
        self.bar.update(len(m["loss"]))
        self.bar.set_postfix(loss=f"{float(m['loss'].mean()):.4f}")

    def epoch(self, state: TrainState, rec: dict) -> None:
        """Write the epoch's outputs and append its record (with wall and CPU seconds)."""
        self.close()
        self._grid(state, rec)
        prev = self.records[-1] if self.records else {}
        rec["wall_s"] = prev.get("wall_s", 0.0) + time.perf_counter() - self._t
        rec["cpu_s"] = prev.get("cpu_s", 0.0) + time.process_time() - self._c  # all threads
        self.records.append(rec)
        epoch, run = rec["epoch"], self.run
        meta = {"config": self.cfg.to_dict(), "epoch": epoch, "step": rec["step"]}
        ckpt.save(run.path / "checkpoints", epoch, state, meta, keep=self.opts.keep_checkpoints)
        if epoch in self.opts.export_epochs:
            name, info = f"exports/epoch_{epoch:03d}", {"epoch": epoch, "step": rec["step"]}
            self.export(name, state.ema_params, {**info, "weights": "ema"})
            if self.cfg.train.ema_decay > 0:  # the raw weights too: EMA against none
                self.export(name + "_raw", state.params, {**info, "weights": "raw"})
        if run.is_main:
            write_metrics(run.path / "metrics.jsonl", self.records)
            plotting.plot_loss_curve(self.records, run.path / "loss.png")
            if self.opts.progress:
                print(
                    f"epoch {epoch}: loss {rec['loss']:.4f}  {rec['images_per_s']:.0f} img/s  "
                    f"{rec['epoch_s']:.1f} s",
                    flush=True,
                )
        self._t, self._c = time.perf_counter(), time.process_time()

    def export(self, name: str, params: Any, info: dict) -> None:
        """Export parameters to ``workdir/name`` with ``info`` (the main host only)."""
        if self.run.is_main:
            ckpt.export_params(self.run.path / name, self.cfg, params, info)

    def close(self) -> None:
        """Close the progress bar of the epoch that ended."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> _EpochWriter:
        return self

    def __exit__(self, kind, err, tb) -> None:
        """Close the bar; name the last good checkpoint when training diverged."""
        self.close()
        if isinstance(err, TrainingDiverged):
            ckdir = self.run.path / "checkpoints"
            last = ckpt.latest_epoch(ckdir)
            where = f"epoch {last}" if last is not None else "none"
            raise TrainingDiverged(
                f"{err} Stopped without saving. Last good checkpoint: {where} in {ckdir}. "
                "Lower --lr or set --grad-clip."
            ) from None

    def _grid(self, state: TrainState, rec: dict) -> None:
        """The epoch's fixed-key grid of samples from the EMA parameters (PNG and ``.npy``)."""
        epoch, last = rec["epoch"], rec["epoch"] == self.cfg.train.epochs
        n, every = self.opts.grid_n, self.opts.grid_every
        if not (self.run.is_main and n and (epoch % every == 0 or last)):
            return
        t1 = time.perf_counter()
        key = run_keys(self.cfg.train.seed).sample
        grid = generate(self.cfg, self.pieces, state.ema_params, key, n, start=self.start_fn)
        rec["grid_s"] = time.perf_counter() - t1
        name = self.run.path / "samples" / f"epoch_{epoch:03d}"
        plotting.save_grid(grid, name.with_suffix(".png"), title=f"epoch {epoch}")
        atomic_npy(name.with_suffix(".npy"), grid)


def load_run(
    path: str | Path,
    epoch: int | None = None,
    weights: str = "ema",
    conv_impl: str | None = None,
) -> tuple[Config, Pieces, Any, dict]:
    """Load a trained model for sampling from a run workdir or an exported params folder.

    Args:
        path: A run workdir (with ``checkpoints/``), its ``checkpoints`` folder, or a folder
            written by :func:`jaxdiff.app.checkpoint.export_params`. A workdir without
            checkpoints (a committed run on a fresh clone) loads its ``final`` export.
        epoch: Checkpoint to load (latest when ``None``); ignored for exported params.
        weights: ``"ema"`` (the EMA parameters, the default) or ``"raw"`` (the optimizer's
            current parameters; checkpoints only — exported folders hold the EMA ones).
        conv_impl: Convolution implementation to sample with (``"auto"`` or a name in
            :func:`jaxdiff.kernels.available_convs`; all are tested equal to XLA's); ``None``
            keeps the one the run recorded where it runs here, else its pure-JAX fallback
            (one :class:`jaxdiff.kernels.KernelFallbackWarning`; e.g. ``onednn`` recorded
            where the native kernels are not built). The returned ``cfg`` names the one in
            use.

    Returns:
        ``(cfg, pieces, params, meta)``.

    Raises:
        CheckpointError: If nothing loadable is found at ``path``.
        ValueError: For an unknown ``weights`` or ``conv_impl``.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}.")
    impl = None if conv_impl is None else resolve_conv_impl(conv_impl)
    path = Path(path)
    has_ckpts = (path / "checkpoints").is_dir() and ckpt.latest_epoch(path / "checkpoints")
    if not has_ckpts and (path / "final" / "params.msgpack").exists():
        path = path / "final"  # a committed run on a fresh clone: its exported final model
    if (path / "params.msgpack").exists():
        if weights == "raw":
            raise ckpt.CheckpointError(
                f"{path} holds exported EMA parameters only; use a run workdir for raw weights."
            )
        meta = ckpt.read_json(path / "config.json")
        cfg, pieces = _build_with_impl(Config.from_dict(meta["config"]), impl)
        params, meta = ckpt.load_exported(path, abstract_params(pieces))
        return cfg, pieces, params, meta
    ckdir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if ckpt.latest_epoch(ckdir) is None:
        raise ckpt.CheckpointError(
            f"no checkpoint found at {path}: expected a run workdir with checkpoints/ or a "
            "folder with params.msgpack and config.json."
        )
    meta = ckpt.read_meta(ckdir, epoch)
    cfg, pieces = _build_with_impl(Config.from_dict(meta["config"]), impl)
    target = jax.eval_shape(lambda p: init_train_state(p, pieces.tx), abstract_params(pieces))
    state, meta = ckpt.restore_checkpoint(ckdir, target, epoch)
    return cfg, pieces, state.ema_params if weights == "ema" else state.params, meta


def _build_with_impl(cfg: Config, impl: str | None) -> tuple[Config, Pieces]:
    """Build a loaded run with ``impl`` (or the convolution it recorded, where it runs here)."""
    recorded = cfg.model.conv_impl  # "auto" resolves when traced; a name falls back here
    use = impl or (recorded if recorded == "auto" else resolve_conv_impl(recorded))
    if use != cfg.model.conv_impl:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, conv_impl=use))
    return cfg, build(cfg)
