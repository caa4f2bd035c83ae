"""Run orchestration with files: train with checkpoints and logs, resume, load a run back.

This is the layer the thin drivers in ``experiments/`` call. The run's assembly and its loops
are the pure core's (:mod:`jaxdiff.pipeline`: ``build``, ``run_keys``, ``epoch_chunks``,
``generate``); here are the side effects around them: reading data, writing ``config.json``,
``metrics.jsonl``, figures and checkpoints, the progress bar, and resuming.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxdiff.app import checkpoint as ckpt
from jaxdiff.app import plotting
from jaxdiff.app.parallel import data_mesh, shardings
from jaxdiff.config import Config
from jaxdiff.data import load_mnist
from jaxdiff.kernels import resolve_conv_impl
from jaxdiff.paths import atomic_json, atomic_npy, atomic_write, check_readable_dir
from jaxdiff.pipeline import (
    Pieces,
    TrainingDiverged,
    abstract_params,
    build,
    epoch_chunks,
    epoch_loop,
    generate,
    init_state,
    run_keys,
)
from jaxdiff.train import TrainState, init_train_state, warm_train_state


def machine_info() -> dict[str, Any]:
    """Describe the machine a run ran on (CPU model, cores, platform, jax version, backend)."""
    import os
    import platform

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
    }


def _check_resume_config(saved: dict, cfg: Config, workdir: Path) -> None:
    old = Config.from_dict(saved)
    a, b = old.to_dict(), cfg.to_dict()
    if a["train"]["epochs"] != b["train"]["epochs"] and b["train"]["lr_schedule"] != "constant":
        raise ckpt.CheckpointError(
            f"{workdir} holds a run with a {b['train']['lr_schedule']} learning-rate schedule "
            f"over {a['train']['epochs']} epochs; resuming with --epochs "
            f"{b['train']['epochs']} would change its learning rates. Resume with the same "
            "--epochs, or start a new --workdir."
        )
    a["train"].pop("epochs")
    b["train"].pop("epochs")
    # the convolution implementation is how, not what: every registered one is tested equal
    # to XLA's, and `auto` may resolve to a faster one than the run started with
    a["model"].pop("conv_impl")
    b["model"].pop("conv_impl")
    if a != b:
        diffs = [
            f"{sec}.{k}: saved {a[sec][k]!r} vs now {b[sec][k]!r}"
            for sec in a
            for k in a[sec]
            if a[sec][k] != b[sec].get(k)
        ]
        raise ckpt.CheckpointError(
            f"{workdir} holds a run with another config ({'; '.join(diffs)}). "
            "Resume with the same flags (only --epochs may change) or use a new --workdir."
        )


def _read_metrics(path: Path, upto_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if r.get("epoch", 0) <= upto_epoch]


def _write_metrics(path: Path, records: list[dict]) -> None:
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


def _warm_state(
    src: Path, cfg: Config, pieces: Pieces, fresh: TrainState, n: int
) -> tuple[TrainState, int]:
    """The train state to continue from an export folder (see ``fit(warm_start=...)``)."""
    check_readable_dir(src, "--warm-start", "an export (params.msgpack, config.json)")
    ema, meta = ckpt.load_exported(src, fresh.params)
    if meta.get("weights") == "raw" and cfg.train.ema_decay > 0:
        raise ckpt.CheckpointError(
            f"{src} holds raw weights; pass the EMA folder {src.name.removesuffix('_raw')} "
            "(its _raw sibling is read too)."
        )
    _check_resume_config(meta["config"], cfg, src)
    epoch = int(meta.get("epoch") or 0)
    spe = n // cfg.train.batch_size
    if epoch <= 0 or int(meta.get("step", -1)) != epoch * spe:
        raise ckpt.CheckpointError(
            f"{src} does not record an epoch and step of this data ({spe} steps per epoch); "
            "warm starts need a folder written by --export-epochs for the same --limit."
        )
    raw = ema
    if cfg.train.ema_decay > 0:
        raw_dir = src.with_name(src.name + "_raw")
        if not (raw_dir / "params.msgpack").exists():
            raise ckpt.CheckpointError(
                f"{src} holds EMA weights; continuing an EMA run also needs its raw weights "
                f"in {raw_dir}."
            )
        raw, _ = ckpt.load_exported(raw_dir, fresh.params)
    return warm_train_state(raw, ema, pieces.tx, epoch * spe), epoch


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

    Training is data parallel over all devices (:mod:`jaxdiff.app.parallel`); one device is the
    same code path. Each epoch runs as jitted scans of ``chunk_steps`` steps (one dispatch
    each; the chunking only feeds the progress bar and does not change results). After each epoch: a
    checkpoint (atomic), a metrics line, the loss curve, and a grid of ``grid_n`` samples from
    the EMA parameters with a fixed key. After the last epoch the EMA parameters are also
    exported to ``workdir/final`` (small, standalone; see :func:`load_run`).

    Args:
        cfg: The run config.
        workdir: Output folder.
        data_dir: MNIST folder (see :func:`jaxdiff.data.resolve_data_dir`).
        resume: Continue from the latest complete checkpoint in ``workdir``.
        chunk_steps: Most steps per jitted call (the epoch is cut into chunks as equal as
            its step count allows).
        grid_n: Samples in each epoch's grid (0 disables grids).
        grid_every: Draw the grid every this many epochs (and after the last).
        keep_checkpoints: Checkpoints kept.
        progress: Show a progress bar.
        images: Training images ``uint8 (N, 28, 28)`` to use instead of loading MNIST.
        start_fn_factory: Cold runs: ``factory(pieces, images) -> start(key, n)``.
        export_epochs: After these epochs, also export the EMA parameters to
            ``workdir/exports/epoch_NNN`` (small folders to commit and evaluate later, like
            ``final``; checkpoints are not committed), and with an EMA the raw parameters
            to ``epoch_NNN_raw``.
        warm_start: An export folder of this run (``workdir/exports/epoch_NNN``) to continue
            from when its checkpoints are gone (they are not committed): training resumes
            after that epoch with the same data order, keys and learning rates, and fresh
            Adam moments (:func:`jaxdiff.train.warm_train_state`). Recorded in
            ``config.json`` under ``warm_starts``.
        argv: The command line that started this process (``sys.argv``); each start,
            resume or warm start appends it to ``config.json`` under ``invocations``.

    Returns:
        ``(state, records)``: the final train state and all metrics records.

    Raises:
        CheckpointError: On an existing run without ``resume``, or a config mismatch.
        TrainingDiverged: If the loss becomes NaN or infinite.
    """
    workdir = Path(workdir)
    has_ckpt, is_main = _open_run(workdir, cfg, resume, warm_start, argv)
    if images is None:
        images, _ = load_mnist("train", data_dir)
    images = images[: cfg.train.limit] if cfg.train.limit else images
    pieces = build(cfg, steps_per_epoch=images.shape[0] // cfg.train.batch_size)
    state, start_epoch, records = _starting_state(
        workdir, cfg, pieces, images.shape[0], resume and has_ckpt, warm_start, is_main
    )
    mesh = data_mesh()
    batch_sharding, replicated = shardings(mesh, cfg.train.batch_size)
    state = jax.device_put(state, replicated)
    loop = epoch_loop(cfg, pieces, images, batch_sharding)
    loop = loop._replace(images=jax.device_put(np.asarray(images, np.uint8), replicated))
    start_fn = start_fn_factory(pieces, images) if start_fn_factory else None
    out = _Outputs(workdir, is_main, grid_n, grid_every, keep_checkpoints, export_epochs)
    for epoch in range(start_epoch, cfg.train.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        label = f"epoch {epoch + 1}/{cfg.train.epochs}"
        state, rec = _run_epoch(
            loop, state, epoch, chunk_steps, progress and is_main, label, workdir
        )
        rec["epoch"] = epoch + 1
        _epoch_grid(out, cfg, pieces, state, rec, start_fn)
        prev = records[-1] if records else {}
        rec["wall_s"] = prev.get("wall_s", 0.0) + time.perf_counter() - t0
        rec["cpu_s"] = prev.get("cpu_s", 0.0) + time.process_time() - c0  # all threads
        records.append(rec)
        _save_epoch(out, cfg, state, records)
        if progress and is_main:
            print(
                f"epoch {epoch + 1}: loss {rec['loss']:.4f}  {rec['images_per_s']:.0f} img/s  "
                f"{rec['epoch_s']:.1f} s",
                flush=True,
            )
    if is_main:  # also when resuming a run that was already complete
        done = int(records[-1]["epoch"]) if records else start_epoch
        ckpt.export_params(
            workdir / "final", cfg, state.ema_params, {"epoch": done, "step": int(state.step)}
        )
    return state, records


class _Outputs(NamedTuple):
    """Where and what :func:`fit` writes after each epoch."""

    workdir: Path
    is_main: bool
    grid_n: int
    grid_every: int
    keep_checkpoints: int
    export_epochs: tuple[int, ...]


def _open_run(
    workdir: Path, cfg: Config, resume: bool, warm_start: str | Path | None, argv: list[str] | None
) -> tuple[bool, bool]:
    """Check the start against the folder, write ``config.json``; (has checkpoints, is main)."""
    has_ckpt = _check_start(workdir, resume, warm_start)
    old_config = {}
    if (resume or warm_start is not None) and (workdir / "config.json").exists():
        old_config = ckpt.read_json(workdir / "config.json")
        _check_resume_config(old_config["config"], cfg, workdir)
    is_main = jax.process_index() == 0  # only one host writes logs and figures
    workdir.mkdir(parents=True, exist_ok=True)
    if is_main:
        _write_config(workdir, cfg, old_config, warm_start, argv)
    return has_ckpt, is_main


def _starting_state(
    workdir: Path,
    cfg: Config,
    pieces: Pieces,
    n: int,
    from_checkpoint: bool,
    warm_start: str | Path | None,
    is_main: bool,
) -> tuple[TrainState, int, list[dict]]:
    """The state to train from: fresh, the latest checkpoint, or a warm start from an export."""
    state = init_state(cfg, pieces)
    if from_checkpoint:
        state, meta = ckpt.restore_checkpoint(workdir / "checkpoints", state)
        epoch = int(meta["epoch"])
        return state, epoch, _read_metrics(workdir / "metrics.jsonl", epoch)
    if warm_start is not None:
        state, epoch = _warm_state(Path(warm_start), cfg, pieces, state, n)
        if is_main:
            _record_warm_start(workdir, warm_start, epoch)
        return state, epoch, _read_metrics(workdir / "metrics.jsonl", epoch)
    return state, 0, []


def _epoch_grid(
    out: _Outputs, cfg: Config, pieces: Pieces, state: TrainState, rec: dict, start_fn
) -> None:
    """The epoch's fixed-key grid of samples from the EMA parameters (PNG and ``.npy``)."""
    epoch, last = rec["epoch"], rec["epoch"] == cfg.train.epochs
    if not (out.is_main and out.grid_n and (epoch % out.grid_every == 0 or last)):
        return
    t1 = time.perf_counter()
    key = run_keys(cfg.train.seed).sample
    grid = generate(cfg, pieces, state.ema_params, key, out.grid_n, start=start_fn)
    rec["grid_s"] = time.perf_counter() - t1
    name = out.workdir / "samples" / f"epoch_{epoch:03d}"
    plotting.save_grid(grid, name.with_suffix(".png"), title=f"epoch {epoch}")
    atomic_npy(name.with_suffix(".npy"), grid)


def _save_epoch(out: _Outputs, cfg: Config, state: TrainState, records: list[dict]) -> None:
    """Checkpoint (every host), then exports, metrics and the loss curve (the main host)."""
    epoch = records[-1]["epoch"]
    meta = {"config": cfg.to_dict(), "epoch": epoch, "step": int(state.step)}
    ckpt.save(out.workdir / "checkpoints", epoch, state, meta, keep=out.keep_checkpoints)
    if out.is_main and epoch in out.export_epochs:
        _export_epoch(out.workdir, cfg, state, epoch)
    if out.is_main:
        _write_metrics(out.workdir / "metrics.jsonl", records)
        plotting.plot_loss_curve(records, out.workdir / "loss.png")


def _check_start(workdir: Path, resume: bool, warm_start: str | Path | None) -> bool:
    """Refuse a start that would overwrite a run or cannot continue it.

    Returns:
        Whether ``workdir`` holds checkpoints.
    """
    ckdir = workdir / "checkpoints"
    has_ckpt = ckpt.latest_epoch(ckdir) is not None
    if warm_start is not None and has_ckpt:
        raise ckpt.CheckpointError(
            f"{workdir} has checkpoints; continue it with --resume (not --warm-start)."
        )
    if has_ckpt and not resume:
        raise ckpt.CheckpointError(
            f"{workdir} already holds a run; pass --resume to continue it "
            "or choose another --workdir."
        )
    if resume and not has_ckpt and _read_metrics(workdir / "metrics.jsonl", 10**9):
        exports = sorted((workdir / "exports").glob("epoch_[0-9][0-9][0-9]"))
        hint = f" --warm-start {exports[-1]}" if exports else " --warm-start <an export>"
        raise ckpt.CheckpointError(
            f"{workdir} has metrics but no checkpoints in {ckdir} (checkpoints are not "
            f"committed); continue from its exported weights with{hint}, or use a new "
            "--workdir."
        )
    return has_ckpt


def _write_config(
    workdir: Path, cfg: Config, old: dict, warm_start: str | Path | None, argv: list[str] | None
) -> None:
    """Write ``config.json``: the config, devices, machine, and the run's history so far."""
    warm_starts = list(old.get("warm_starts", []))
    invocations = list(old.get("invocations", [])) + ([list(argv)] if argv else [])
    atomic_json(
        workdir / "config.json",
        {
            "config": cfg.to_dict(),
            "devices": [str(d) for d in jax.devices()],
            "machine": machine_info(),
            **({"warm_starts": warm_starts} if warm_starts or warm_start else {}),
            **({"invocations": invocations} if invocations else {}),
        },
    )


def _record_warm_start(workdir: Path, warm_start: str | Path, epoch: int) -> None:
    """Append a warm start to ``config.json``'s ``warm_starts``."""
    cfg_json = ckpt.read_json(workdir / "config.json")
    entry = {"from": str(warm_start), "epoch": epoch, "note": "Adam moments reset"}
    warm_starts = [*cfg_json.get("warm_starts", []), entry]
    atomic_json(workdir / "config.json", {**cfg_json, "warm_starts": warm_starts})


def _run_epoch(
    loop: Any,
    state: TrainState,
    epoch: int,
    chunk_steps: int,
    progress: bool,
    label: str,
    workdir: Path,
) -> tuple[TrainState, dict]:
    """One epoch of :func:`jaxdiff.pipeline.epoch_chunks`, with a progress bar and its record.

    Returns:
        The new state and the epoch's record: ``step``, step-weighted ``loss`` and
        ``grad_norm``, per-chunk losses, ``epoch_s`` and ``images_per_s``.

    Raises:
        TrainingDiverged: If a loss is NaN or infinite (nothing of the epoch is saved); the
            message names the last good checkpoint.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    losses, gnorms, weights = [], [], []
    n_steps = loop.images.shape[0] // loop.batch_size
    bar = tqdm(total=n_steps, desc=label, disable=not progress, leave=False, mininterval=1.0)
    try:
        chunks = epoch_chunks(loop, state, epoch, chunk_steps)
        for state, m in chunks:  # noqa: B007 - the last chunk's state is the epoch's
            losses.append(float(m["loss"].mean()))
            gnorms.append(float(m["grad_norm"].mean()))
            weights.append(len(m["loss"]))
            bar.update(len(m["loss"]))
            rate = sum(weights) * loop.batch_size / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate:.0f}")
    except TrainingDiverged as err:
        last = ckpt.latest_epoch(workdir / "checkpoints")
        where = f"epoch {last}" if last is not None else "none"
        raise TrainingDiverged(
            f"{err} Stopped without saving. Last good checkpoint: {where} in "
            f"{workdir / 'checkpoints'}. Lower --lr or set --grad-clip."
        ) from None
    finally:
        bar.close()
    epoch_s = time.perf_counter() - t0
    rec = {
        "step": int(state.step),
        "loss": float(np.average(losses, weights=weights)),
        "grad_norm": float(np.average(gnorms, weights=weights)),
        "chunk_loss": losses,
        "epoch_s": epoch_s,
        "images_per_s": sum(weights) * loop.batch_size / epoch_s,
    }
    return state, rec


def _export_epoch(workdir: Path, cfg: Config, state: TrainState, epoch: int) -> None:
    """Export the EMA parameters after ``epoch`` (and, with an EMA, the raw ones too)."""
    info = {"epoch": epoch, "step": int(state.step)}
    name = workdir / "exports" / f"epoch_{epoch:03d}"
    ckpt.export_params(name, cfg, state.ema_params, {**info, "weights": "ema"})
    if cfg.train.ema_decay > 0:  # the raw weights too: EMA against none, same run
        raw = name.with_name(name.name + "_raw")
        ckpt.export_params(raw, cfg, state.params, {**info, "weights": "raw"})


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

    def build_with_impl(cfg: Config) -> tuple[Config, Pieces]:
        recorded = cfg.model.conv_impl  # "auto" resolves when traced; a name falls back here
        use = impl or (recorded if recorded == "auto" else resolve_conv_impl(recorded))
        if use != cfg.model.conv_impl:
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, conv_impl=use))
        return cfg, build(cfg)

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
        cfg, pieces = build_with_impl(Config.from_dict(meta["config"]))
        params, meta = ckpt.load_exported(path, abstract_params(pieces))
        return cfg, pieces, params, meta
    ckdir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if ckpt.latest_epoch(ckdir) is None:
        raise ckpt.CheckpointError(
            f"no checkpoint found at {path}: expected a run workdir with checkpoints/ or a "
            "folder with params.msgpack and config.json."
        )
    meta = ckpt.read_meta(ckdir, epoch)
    cfg, pieces = build_with_impl(Config.from_dict(meta["config"]))
    target = jax.eval_shape(lambda p: init_train_state(p, pieces.tx), abstract_params(pieces))
    state, meta = ckpt.restore_checkpoint(ckdir, target, epoch)
    return cfg, pieces, state.ema_params if weights == "ema" else state.params, meta
