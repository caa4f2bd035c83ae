"""Data parallelism with ``jax.sharding``: one code path for 1 and N devices, 1 and N hosts.

The batch is split over a 1-D device mesh (axis ``"data"``); parameters, optimizer state
and the ``uint8`` training set are replicated. XLA's SPMD partitioner inserts the gradient
all-reduce, so the training step is written once, for the global batch. Random draws use
partitionable threefry, so the numbers a run sees do not depend on the device count.

Multi-host: when the standard environment of ``jax.distributed.initialize()`` is present
(``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, or a cluster
it auto-detects such as SLURM), :func:`maybe_initialize_distributed` calls it before any
device is touched, and the mesh then spans every host's devices.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
_DIST_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")


def maybe_initialize_distributed() -> bool:
    """Initialise multi-host JAX when its environment is set; otherwise do nothing.

    Returns:
        Whether ``jax.distributed.initialize()`` was called.
    """
    if not any(os.environ.get(v) for v in _DIST_ENV):
        return False
    if jax.distributed.is_initialized():
        return True
    jax.distributed.initialize()
    return True


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all (global) devices, axis name ``"data"``.

    Args:
        devices: Devices to use (default: ``jax.devices()``, every host's).

    Returns:
        The mesh.
    """
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shardings(mesh: Mesh, batch_size: int) -> tuple[NamedSharding, NamedSharding]:
    """Batch and replicated shardings for ``mesh``, checking the batch splits evenly.

    Args:
        mesh: From :func:`data_mesh`.
        batch_size: Global batch size.

    Returns:
        ``(batch_sharding, replicated)``.

    Raises:
        ValueError: If ``batch_size`` is not a multiple of the number of devices.
    """
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"--batch-size {batch_size} does not split over {n} devices; use a multiple of {n}."
        )
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS)), NamedSharding(mesh, PartitionSpec())
