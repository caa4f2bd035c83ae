"""A run's folder: starting, resuming or warm-starting it, and its ``config.json`` record.

A training workdir holds ``config.json`` (the config, the machine, every command that ran it
and every warm start), ``metrics.jsonl`` (one line per epoch), ``checkpoints/`` (orbax, via
:mod:`jaxdiff.app.checkpoint`; not committed), ``exports/`` and ``final/`` (small parameter
files to commit). :func:`open_run` checks that a start fits the folder and records it;
:func:`starting_state` gives the state to train from: fresh, the latest checkpoint, or a warm
start from an export when the checkpoints are gone.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, NamedTuple

import jax

from jaxdiff.app import checkpoint as ckpt
from jaxdiff.config import Config
from jaxdiff.paths import atomic_json, atomic_write, check_readable_dir
from jaxdiff.train import TrainState, warm_train_state


class RunDir(NamedTuple):
    """An opened run folder (see :func:`open_run`)."""

    path: Path
    is_main: bool
    from_checkpoint: bool
    warm_start: Path | None


def machine_info() -> dict[str, Any]:
    """Describe the machine a run ran on (CPU model, cores, platform, jax version, backend)."""
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


def open_run(
    workdir: str | Path,
    cfg: Config,
    resume: bool = False,
    warm_start: str | Path | None = None,
    argv: list[str] | None = None,
) -> RunDir:
    """Check that a start fits the folder, then write ``config.json``.

    Args:
        workdir: The run folder (created if missing).
        cfg: The run config.
        resume: Continue from the folder's latest checkpoint (a new run if it has none).
        warm_start: An export folder of this run to continue from when its checkpoints are
            gone (see :func:`starting_state`).
        argv: The command line of this process, appended to ``config.json``'s
            ``invocations``.

    Returns:
        The :class:`RunDir`.

    Raises:
        CheckpointError: For a start that would overwrite a run or cannot continue it, or a
            config that differs from the run's own (only ``epochs`` may change, and only
            under a constant learning rate).
    """
    workdir = Path(workdir)
    has_ckpt = _check_start(workdir, resume, warm_start)
    old = {}
    if (resume or warm_start is not None) and (workdir / "config.json").exists():
        old = ckpt.read_json(workdir / "config.json")
        check_resume_config(old["config"], cfg, workdir)
    is_main = jax.process_index() == 0  # only one host writes logs and figures
    workdir.mkdir(parents=True, exist_ok=True)
    if is_main:
        _write_config(workdir, cfg, old, warm_start, argv)
    warm = Path(warm_start) if warm_start is not None else None
    return RunDir(workdir, is_main, resume and has_ckpt, warm)


def starting_state(
    run: RunDir, cfg: Config, fresh: TrainState, tx: Any, steps_per_epoch: int
) -> tuple[TrainState, list[dict]]:
    """The state to train from, and the metrics records of the epochs it has done.

    Args:
        run: From :func:`open_run`.
        cfg: The run config.
        fresh: The run's initial state (:func:`jaxdiff.pipeline.init_state`); also the
            structure that saved states are read into.
        tx: The run's optimizer (a warm start gives it fresh moments).
        steps_per_epoch: Optimizer steps per epoch of this run's data.

    Returns:
        ``(state, records)``: the latest checkpoint's state, or a warm start's (the export's
        raw and EMA parameters, fresh Adam moments, recorded in ``config.json`` under
        ``warm_starts``), or ``fresh``; and the metrics of the epochs before it.

    Raises:
        CheckpointError: If the saved state does not fit the run.
    """
    if run.warm_start is not None:
        raw, ema, epoch = _warm_params(run.warm_start, cfg, fresh.params, steps_per_epoch)
        if run.is_main:
            _record_warm_start(run.path, run.warm_start, epoch)
        state = warm_train_state(raw, ema, tx, epoch * steps_per_epoch)
        return state, read_metrics(run.path / "metrics.jsonl", epoch)
    if run.from_checkpoint:
        state, meta = ckpt.restore_checkpoint(run.path / "checkpoints", fresh)
        return state, read_metrics(run.path / "metrics.jsonl", int(meta["epoch"]))
    return fresh, []


def check_resume_config(saved: dict, cfg: Config, workdir: Path) -> None:
    """Refuse to continue a run under another config (only ``epochs`` may change).

    Args:
        saved: The run's recorded config (``config.json``'s ``config``).
        cfg: The config asked for now.
        workdir: The folder, for the message.

    Raises:
        CheckpointError: Naming every field that differs, or a change of ``epochs`` under a
            learning-rate schedule that depends on it.
    """
    a, b = Config.from_dict(saved).to_dict(), cfg.to_dict()
    if a["train"]["epochs"] != b["train"]["epochs"] and b["train"]["lr_schedule"] != "constant":
        raise ckpt.CheckpointError(
            f"{workdir} holds a run with a {b['train']['lr_schedule']} learning-rate schedule "
            f"over {a['train']['epochs']} epochs; resuming with --epochs "
            f"{b['train']['epochs']} would change its learning rates. Resume with the same "
            "--epochs, or start a new --workdir."
        )
    # the convolution implementation is how, not what: every registered one is tested equal
    # to XLA's, and `auto` may resolve to a faster one than the run started with
    for d in (a, b):
        d["train"].pop("epochs")
        d["model"].pop("conv_impl")
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


def read_metrics(path: Path, upto_epoch: int) -> list[dict]:
    """The records of ``metrics.jsonl`` up to ``upto_epoch`` (none if the file is missing)."""
    if not path.exists():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if r.get("epoch", 0) <= upto_epoch]


def write_metrics(path: Path, records: list[dict]) -> None:
    """Write ``metrics.jsonl`` atomically, one JSON line per record."""
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


def _check_start(workdir: Path, resume: bool, warm_start: str | Path | None) -> bool:
    """Refuse a start that would overwrite a run or cannot continue it; has checkpoints?"""
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
    if resume and not has_ckpt and read_metrics(workdir / "metrics.jsonl", 10**9):
        exports = sorted((workdir / "exports").glob("epoch_[0-9][0-9][0-9]"))
        hint = f" --warm-start {exports[-1]}" if exports else " --warm-start <an export>"
        raise ckpt.CheckpointError(
            f"{workdir} has metrics but no checkpoints in {ckdir} (checkpoints are not "
            f"committed); continue from its exported weights with{hint}, or use a new "
            "--workdir."
        )
    return has_ckpt


def _warm_params(src: Path, cfg: Config, target: Any, spe: int) -> tuple[Any, Any, int]:
    """The raw and EMA parameters of an export folder of this run, and its epoch."""
    check_readable_dir(src, "--warm-start", "an export (params.msgpack, config.json)")
    meta = ckpt.read_json(src / "config.json")
    if meta.get("weights") == "raw" and cfg.train.ema_decay > 0:
        raise ckpt.CheckpointError(
            f"{src} holds raw weights; pass the EMA folder {src.name.removesuffix('_raw')} "
            "(its _raw sibling is read too)."
        )
    check_resume_config(meta["config"], cfg, src)
    epoch = int(meta.get("epoch") or 0)
    if epoch <= 0 or int(meta.get("step", -1)) != epoch * spe:
        raise ckpt.CheckpointError(
            f"{src} does not record an epoch and step of this data ({spe} steps per epoch); "
            "warm starts need a folder written by --export-epochs for the same --limit."
        )
    raw_dir = src.with_name(src.name + "_raw") if cfg.train.ema_decay > 0 else src
    if not (raw_dir / "params.msgpack").exists():
        raise ckpt.CheckpointError(
            f"{src} holds EMA weights; continuing an EMA run also needs its raw weights "
            f"in {raw_dir}."
        )
    ema, _ = ckpt.load_exported(src, target)
    raw, _ = ckpt.load_exported(raw_dir, target)
    return raw, ema, epoch


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


def _record_warm_start(workdir: Path, warm_start: Path, epoch: int) -> None:
    """Append a warm start to ``config.json``'s ``warm_starts``."""
    cfg_json = ckpt.read_json(workdir / "config.json")
    entry = {"from": str(warm_start), "epoch": epoch, "note": "Adam moments reset"}
    warm_starts = [*cfg_json.get("warm_starts", []), entry]
    atomic_json(workdir / "config.json", {**cfg_json, "warm_starts": warm_starts})
