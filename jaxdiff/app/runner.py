"""Run orchestration: build a run from its config, train with checkpoints and logs, load it back.

This is the layer the thin drivers in ``experiments/`` call. All maths lives in the pure
modules (:mod:`jaxdiff.train`, :mod:`jaxdiff.losses`, :mod:`jaxdiff.sampling`); here are
the side effects: reading data, writing ``config.json``, ``metrics.jsonl``, figures and
checkpoints, the progress bar, and resuming.

Keys: every key of a run derives from ``jax.random.key(seed)`` by ``fold_in`` with a fixed purpose
number (:func:`run_keys`), then with the epoch (shuffling) or the step (training noise).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.app import checkpoint as ckpt
from jaxdiff.app import plotting
from jaxdiff.app.parallel import data_mesh, shardings
from jaxdiff.config import Config
from jaxdiff.data import FILES, load_mnist
from jaxdiff.kernels import resolve_conv_impl
from jaxdiff.losses import LossFn, cold_loss, ddpm_loss
from jaxdiff.models import build_model
from jaxdiff.paths import atomic_json, atomic_npy, atomic_write, check_readable_dir
from jaxdiff.sampling import CLIP_RANGES, ddim_sample, ddpm_sample, dpmpp_sample, eps_model
from jaxdiff.schedules import Schedule, make_schedule
from jaxdiff.train import (
    TrainState,
    epoch_indices,
    init_train_state,
    make_optimizer,
    make_run_steps,
    make_train_step,
    warm_train_state,
)


class TrainingDiverged(RuntimeError):
    """Raised when the loss becomes NaN or infinite; the last good checkpoint is kept."""


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
            its epsilon form (:func:`jaxdiff.sampling.eps_model`).
        loss_fn: ``loss_fn(params, x0, key) -> (loss, metrics)``.
        tx: The optimizer.
        sched: The noise schedule (DDPM runs), else ``None``.
        degrade: The per-example degradation (cold runs), else ``None``.
    """

    model: Any
    apply_fn: Callable
    loss_fn: LossFn
    tx: Any
    sched: Schedule | None = None
    degrade: Callable | None = None


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
    if steps_per_epoch is None:
        n_train = FILES["train-images-idx3-ubyte"][2]
        steps_per_epoch = min(cfg.train.limit or n_train, n_train) // cfg.train.batch_size
    tx = make_optimizer(cfg.train, steps_per_epoch)
    p = cfg.process
    if p.kind == "ddpm":
        sched = make_schedule(p.schedule, p.T, p.beta1, p.beta2)
        loss_fn = ddpm_loss(apply_fn, sched, p.prediction, p.weighting)
        return Pieces(model, eps_model(apply_fn, sched, p.prediction), loss_fn, tx, sched=sched)
    if p.kind == "cold":
        from jaxdiff.cold import noise_levels
        from jaxdiff.degradations import get_degradation

        degrade = get_degradation(p.degradation, p.T, **dict(p.degradation_options))
        sigmas = noise_levels(p.T, p.noise, p.noise_schedule)
        loss_fn = cold_loss(
            apply_fn, degrade, p.T, p.loss, stochastic=degrade.stochastic, noise_std=sigmas
        )
        return Pieces(model, apply_fn, loss_fn, tx, degrade=degrade)
    raise ValueError(f"unknown process kind {p.kind!r}; use 'ddpm' or 'cold'.")


def init_params(pieces: Pieces, key: jax.Array) -> Any:
    """Initialise network parameters for 28x28 single-channel images, in one jitted call.

    The same values as Flax's eager ``model.init`` (tested bitwise), which would compile each
    of its few hundred operations on its own (measured on the starter CNN: 12.7 s eager
    against 4.5 s jitted, most of that XLA compiling the parameters' random draws).
    """
    return jax.jit(pieces.model.init)(key, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,)))


def abstract_params(pieces: Pieces) -> Any:
    """The parameters' shapes and dtypes (``jax.ShapeDtypeStruct`` leaves), computing nothing.

    The target structure for loading saved weights.
    """
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    return jax.eval_shape(
        pieces.model.init, jax.random.key(0), x, jax.ShapeDtypeStruct((1,), x.dtype)
    )


def generate(
    cfg: Config,
    pieces: Pieces,
    params: Any,
    key: jax.Array,
    n: int,
    sampler: str = "ancestral",
    steps: int | None = None,
    eta: float = 0.0,
    batch: int = 250,
    start: Callable[[jax.Array, int], jax.Array] | None = None,
    clip_x0: bool | str = False,
    noise: float | None = None,
) -> np.ndarray:
    """Draw ``n`` samples in batches (batch ``i`` uses ``fold_in(key, i)``).

    Args:
        cfg: The run config.
        pieces: From :func:`build`.
        params: Parameters to sample with (usually the EMA ones).
        key: PRNG key.
        n: Number of samples.
        sampler: DDPM: ``"ancestral"`` (the starter's), ``"ddim"`` or ``"dpmpp"``
            (DPM-Solver++(2M)); cold: ``"cold1"`` or ``"cold2"`` (Bansal Alg. 1 / 2), or
            ``"start"``: the start states themselves, with no restorer (a control).
        steps: DDIM steps (default 100), DPM-Solver++ steps (default 20) or cold steps.
        eta: DDIM eta.
        batch: Samples per jitted call.
        start: Cold: ``start(key, n) -> x_T`` start states (see :mod:`jaxdiff.cold`).
        clip_x0: DDIM / DPM-Solver++: clip each predicted clean image, to ``[-1, 1]``
            for ``True`` or ``"wide"``, to the data range ``[-0.5, 0.5]`` for ``"data"``
            (:data:`jaxdiff.sampling.CLIP_RANGES`).
        noise: Cold: step noise of the reverse process, on the run's noise schedule
            (default: the run's ``process.sample_noise``).

    Returns:
        ``float32`` numpy array ``(n, 28, 28, 1)`` in the model scale.

    Raises:
        ValueError: For a sampler that does not fit the run's process, or ``clip_x0`` with
            a sampler other than DDIM.
    """
    if clip_x0 and sampler not in ("ddim", "dpmpp"):
        raise ValueError(
            f"clipping x0 (--clip-x0) applies to the ddim and dpmpp samplers, not {sampler!r}."
        )
    clip = None
    if clip_x0:
        name = "wide" if clip_x0 is True else clip_x0
        if name not in CLIP_RANGES:
            raise ValueError(f"--clip-x0 {name!r} unknown; choose from {sorted(CLIP_RANGES)}.")
        clip = CLIP_RANGES[name]
    out = []
    for i in range(math.ceil(n / batch)):
        b = min(batch, n - i * batch)
        k = jax.random.fold_in(key, i)
        shape = (b, 28, 28, 1)
        if cfg.process.kind == "ddpm":
            if sampler == "ancestral":
                x, _ = ddpm_sample(pieces.apply_fn, params, pieces.sched, k, shape)
            elif sampler == "ddim":
                x, _ = ddim_sample(
                    pieces.apply_fn,
                    params,
                    pieces.sched,
                    k,
                    shape,
                    steps or 100,
                    eta,
                    clip=clip,
                )
            elif sampler == "dpmpp":
                x = dpmpp_sample(
                    pieces.apply_fn, params, pieces.sched, k, shape, steps or 20, clip=clip
                )
            else:
                raise ValueError(
                    f"sampler {sampler!r} does not fit a DDPM run; use ancestral, ddim or dpmpp."
                )
        else:
            if sampler not in ("cold1", "cold2", "start"):
                raise ValueError(
                    f"sampler {sampler!r} does not fit a cold run; use cold1, cold2 or start "
                    "(the start states themselves, no restorer)."
                )
            from jaxdiff.cold import cold_sample

            step_noise, residual = cold_noise_tables(cfg, noise)
            if start is None:
                raise ValueError("cold sampling needs a start-state function (see jaxdiff.cold).")
            k_start, k_deg = jax.random.split(k)
            x_T = start(k_start, b)  # noqa: N806
            if sampler == "start":  # the start distribution alone, scored as images
                out.append(np.asarray(x_T))
                continue
            x = cold_sample(
                pieces.apply_fn,
                params,
                pieces.degrade,
                x_T,
                cfg.process.T,
                int(sampler[-1]),
                steps=steps,
                key=k_deg,
                noise=step_noise,
                residual_sigmas=residual,
            )
        out.append(np.asarray(x))
    return np.concatenate(out)


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
    ckdir = workdir / "checkpoints"
    has_ckpt = _check_start(workdir, resume, warm_start)
    old_config = {}
    if (resume or warm_start is not None) and (workdir / "config.json").exists():
        old_config = ckpt.read_json(workdir / "config.json")
        _check_resume_config(old_config["config"], cfg, workdir)
    is_main = jax.process_index() == 0  # only one host writes logs and figures
    progress = progress and is_main
    workdir.mkdir(parents=True, exist_ok=True)
    if is_main:
        _write_config(workdir, cfg, old_config, warm_start, argv)

    if images is None:
        images, _ = load_mnist("train", data_dir)
    if cfg.train.limit:
        images = images[: cfg.train.limit]
    n = images.shape[0]
    pieces = build(cfg, steps_per_epoch=n // cfg.train.batch_size)
    keys = run_keys(cfg.train.seed)
    state = jax.jit(init_train_state, static_argnums=1)(init_params(pieces, keys.init), pieces.tx)
    start_epoch, records = 0, []
    if resume and has_ckpt:
        state, meta = ckpt.restore_checkpoint(ckdir, state)
        start_epoch = int(meta["epoch"])
        records = _read_metrics(workdir / "metrics.jsonl", start_epoch)
    elif warm_start is not None:
        state, start_epoch = _warm_state(Path(warm_start), cfg, pieces, state, n)
        records = _read_metrics(workdir / "metrics.jsonl", start_epoch)
        if is_main:
            _record_warm_start(workdir, warm_start, start_epoch)
    mesh = data_mesh()
    batch_sharding, replicated = shardings(mesh, cfg.train.batch_size)
    state = jax.device_put(state, replicated)
    images_dev = jax.device_put(np.asarray(images, np.uint8), replicated)
    train_step = make_train_step(pieces.loss_fn, pieces.tx, cfg.train.ema_decay)
    run_steps = make_run_steps(train_step, batch_sharding)
    start_fn = start_fn_factory(pieces, images) if start_fn_factory else None
    wall0 = records[-1]["wall_s"] if records else 0.0
    cpu0 = records[-1].get("cpu_s", 0.0) if records else 0.0

    for epoch in range(start_epoch, cfg.train.epochs):
        idx = epoch_indices(keys.perm, epoch, n, cfg.train.batch_size)
        t0, c0 = time.perf_counter(), time.process_time()
        label = f"epoch {epoch + 1}/{cfg.train.epochs}"
        state, rec = _run_epoch(
            run_steps, state, images_dev, idx, keys.step, chunk_steps, progress, label, ckdir
        )
        rec["epoch"] = epoch + 1
        last_epoch = epoch + 1 == cfg.train.epochs
        if is_main and grid_n and ((epoch + 1) % grid_every == 0 or last_epoch):
            t1 = time.perf_counter()
            sampler = default_sampler(cfg)
            grid = generate(
                cfg, pieces, state.ema_params, keys.sample, grid_n, sampler, start=start_fn
            )
            rec["grid_s"] = time.perf_counter() - t1
            plotting.save_grid(
                grid, workdir / "samples" / f"epoch_{epoch + 1:03d}.png", title=f"epoch {epoch + 1}"
            )
            atomic_npy(workdir / "samples" / f"epoch_{epoch + 1:03d}.npy", grid)
        rec["wall_s"] = wall0 + time.perf_counter() - t0
        rec["cpu_s"] = cpu0 + time.process_time() - c0  # all threads of this process
        wall0, cpu0 = rec["wall_s"], rec["cpu_s"]
        meta = {"config": cfg.to_dict(), "epoch": epoch + 1, "step": int(state.step)}
        ckpt.save(ckdir, epoch + 1, state, meta, keep=keep_checkpoints)
        records.append(rec)
        if is_main and epoch + 1 in export_epochs:
            _export_epoch(workdir, cfg, state, epoch + 1)
        if is_main:
            _write_metrics(workdir / "metrics.jsonl", records)
            plotting.plot_loss_curve(records, workdir / "loss.png")
        if progress:
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


def _run_epoch(
    run_steps: Callable,
    state: TrainState,
    images: jax.Array,
    idx: jax.Array,
    key: jax.Array,
    chunk_steps: int,
    progress: bool,
    label: str,
    ckdir: Path,
) -> tuple[TrainState, dict]:
    """Run one epoch's steps in jitted chunks, with a progress bar and a NaN guard.

    Returns:
        The new state and the epoch's record: ``step``, step-weighted ``loss`` and
        ``grad_norm``, per-chunk losses, ``epoch_s`` and ``images_per_s``.

    Raises:
        TrainingDiverged: If a loss is NaN or infinite (nothing of the epoch is saved).
    """
    from tqdm.auto import tqdm

    steps, batch = idx.shape
    t0 = time.perf_counter()
    losses, gnorms, weights = [], [], []
    bar = tqdm(total=steps, desc=label, disable=not progress, leave=False, mininterval=1.0)
    size = chunk_size(steps, chunk_steps)
    for s0 in range(0, steps, size):
        state, m = run_steps(state, images, idx[s0 : s0 + size], key)
        loss = np.asarray(m["loss"])
        if not np.all(np.isfinite(loss)):
            bar.close()
            last = ckpt.latest_epoch(ckdir)
            raise TrainingDiverged(
                f"loss became {loss[~np.isfinite(loss)][0]} in {label.split('/')[0]} "
                f"(around step {int(state.step)}); stopped without saving. Last good "
                f"checkpoint: {'epoch ' + str(last) if last is not None else 'none'} in "
                f"{ckdir}. Lower --lr or set --grad-clip."
            )
        losses.append(float(loss.mean()))
        gnorms.append(float(np.asarray(m["grad_norm"]).mean()))
        weights.append(len(loss))
        rate = (s0 + len(loss)) * batch / (time.perf_counter() - t0)
        bar.update(len(loss))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate:.0f}")
    bar.close()
    epoch_s = time.perf_counter() - t0
    rec = {
        "step": int(state.step),
        "loss": float(np.average(losses, weights=weights)),
        "grad_norm": float(np.average(gnorms, weights=weights)),
        "chunk_loss": losses,
        "epoch_s": epoch_s,
        "images_per_s": steps * batch / epoch_s,
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


def cold_noise_tables(cfg: Config, noise: float | None = None) -> tuple[Any, Any]:
    """A cold run's reverse-process noise: ``(step_noise, residual_sigmas)`` per step.

    Args:
        cfg: A cold run's config.
        noise: Step noise level (default: the run's ``process.sample_noise``).

    Returns:
        The fresh step noise (``T + 1`` levels on the run's noise schedule) and, for a
        noise level that grows with ``t``, the training noise levels by which Alg. 2
        rescales its carried residual (``None`` for a constant schedule).
    """
    from jaxdiff.cold import noise_levels

    p = cfg.process
    step_noise = noise_levels(p.T, p.sample_noise if noise is None else noise, p.noise_schedule)
    residual = (
        None if p.noise_schedule == "constant" else noise_levels(p.T, p.noise, p.noise_schedule)
    )
    return step_noise, residual


def default_sampler(cfg: Config) -> str:
    """The sampler a run uses unless told otherwise.

    DDPM: the starter's ancestral sampler. Cold: Bansal's Alg. 2, which for a noise level
    that grows with ``t`` rescales the carried residual (the DDIM-like reading; measured
    best for melt); with IHDM's constant training noise, Alg. 1 with fresh step noise.
    """
    p = cfg.process
    if p.kind == "ddpm":
        return "ancestral"
    return "cold1" if p.noise > 0 and p.noise_schedule == "constant" else "cold2"
