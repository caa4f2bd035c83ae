"""Checkpoints: the only module that imports orbax.

A run's workdir holds ``checkpoints/<epoch>/`` directories written by an orbax
``CheckpointManager`` (each written to a temporary name and renamed when complete, so a
killed process never leaves a checkpoint that a restore would read), keeping the last few.
Each holds the whole :class:`~jaxdiff.train.TrainState` and a JSON item with the config and
progress. :func:`export_params` writes a small standalone parameter file (msgpack + config
JSON) for committing final models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from jaxdiff.config import Config
from jaxdiff.paths import atomic_write


class CheckpointError(RuntimeError):
    """Raised for missing or inconsistent checkpoints."""


def _manager(directory: Path, max_to_keep: int | None = 3, read_only: bool = False):
    # Readers open without ``create``; orbax's ``read_only`` mode only adds log noise.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep if not read_only else None,
        enable_async_checkpointing=False,
        create=not read_only,
    )
    return ocp.CheckpointManager(directory.absolute(), options=options)


def save(directory: str | os.PathLike, epoch: int, state: Any, meta: dict, keep: int = 3) -> None:
    """Save a train state after ``epoch`` epochs, atomically, keeping the last ``keep``.

    Args:
        directory: The checkpoints folder (e.g. ``workdir/checkpoints``).
        epoch: Completed epochs; the checkpoint's step number.
        state: A pytree (the :class:`~jaxdiff.train.TrainState`).
        meta: JSON-ready metadata (config, epoch, step, ...).
        keep: How many checkpoints to keep.

    Raises:
        CheckpointError: If writing fails (e.g. a full disk); earlier checkpoints are kept.
    """
    directory = Path(directory)
    mngr = _manager(directory, max_to_keep=keep)
    state = jax.device_get(state)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    try:
        mngr.save(epoch, args=args)
        mngr.wait_until_finished()
    except OSError as err:  # e.g. ENOSPC: orbax renames only complete checkpoints
        last = mngr.latest_step()
        kept = f"the last good one (epoch {last}) is kept" if last is not None else "none kept"
        raise CheckpointError(
            f"could not write the epoch-{epoch} checkpoint to {directory} ({err}); {kept}. "
            "Free disk space (or choose another --workdir) and rerun with --resume."
        ) from None
    finally:
        mngr.close()


def latest_epoch(directory: str | os.PathLike) -> int | None:
    """Return the epoch of the newest complete checkpoint, or ``None`` if there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    mngr = _manager(directory, read_only=True)
    step = mngr.latest_step()
    mngr.close()
    return step


def read_meta(directory: str | os.PathLike, epoch: int | None = None) -> dict:
    """Read the metadata JSON of a checkpoint (the latest when ``epoch`` is ``None``).

    Raises:
        CheckpointError: If there is no complete checkpoint.
    """
    directory = Path(directory)
    epoch = latest_epoch(directory) if epoch is None else epoch
    if epoch is None:
        raise CheckpointError(f"no complete checkpoint in {directory}.")
    mngr = _manager(directory, read_only=True)
    out = mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    mngr.close()
    return dict(out["meta"])


def restore_checkpoint(
    directory: str | os.PathLike, target: Any, epoch: int | None = None
) -> tuple[Any, dict]:
    """Restore a train state into the structure of ``target``.

    Args:
        directory: The checkpoints folder.
        target: A pytree with the expected structure, shapes and dtypes (a fresh state).
        epoch: Which checkpoint; the latest complete one when ``None``.

    Returns:
        ``(state, meta)``.

    Raises:
        CheckpointError: If there is no checkpoint, or it does not match ``target`` (another
            architecture or optimizer).
    """
    directory = Path(directory)
    epoch = latest_epoch(directory) if epoch is None else epoch
    if epoch is None:
        raise CheckpointError(f"no complete checkpoint in {directory}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.device_get(target))
    mngr = _manager(directory, read_only=True)
    try:
        out = mngr.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {directory / str(epoch)} does not match this model/optimizer "
            f"(another architecture or config?): {str(err)[:300]}"
        ) from err
    finally:
        mngr.close()
    state = out["state"]
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(target), strict=True):
        if np.shape(got) != np.shape(want):
            raise CheckpointError(
                f"checkpoint {directory / str(epoch)} holds shape {np.shape(got)} where this "
                f"model has {np.shape(want)}: another architecture."
            )
    return state, dict(out["meta"])


def export_params(path: str | os.PathLike, cfg: Config, params: Any, extra: dict | None = None):
    """Write parameters as a small standalone file pair for committing final models.

    Writes ``<path>/params.msgpack`` and ``<path>/config.json`` (atomically, via rename).

    Args:
        path: Output folder.
        cfg: The run's config (needed to rebuild the model).
        params: Parameters to export (usually the EMA parameters).
        extra: Extra JSON metadata (epoch, step, ...).
    """
    path = Path(path)
    atomic_write(path / "params.msgpack", serialization.to_bytes(jax.device_get(params)))
    atomic_write(
        path / "config.json", json.dumps({"config": cfg.to_dict(), **(extra or {})}, indent=2)
    )


def load_exported(path: str | os.PathLike, target: Any) -> tuple[Any, dict]:
    """Load parameters written by :func:`export_params`.

    Args:
        path: Folder holding ``params.msgpack`` and ``config.json``.
        target: Parameter pytree of the expected structure (e.g. from ``model.init``).

    Returns:
        ``(params, meta)``.

    Raises:
        CheckpointError: If files are missing or do not match ``target``.
    """
    path = Path(path)
    try:
        blob = (path / "params.msgpack").read_bytes()
    except OSError as err:
        raise CheckpointError(f"no params.msgpack in {path}.") from err
    try:
        params = serialization.from_bytes(target, blob)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{path}/params.msgpack does not match the model: {err}") from err
    return params, read_json(path / "config.json")


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file, with a clear error when it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
