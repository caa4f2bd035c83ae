import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxdiff.app.parallel import data_mesh, maybe_initialize_distributed, shardings

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import jax, numpy as np
from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.app.runner import fit
cfg = Config(ModelConfig(hidden=(4, 4), kernel_size=3), ProcessConfig(T=50),
             TrainConfig(batch_size=16, epochs=2, lr=1e-3))
images = np.random.default_rng(0).integers(0, 256, (64, 28, 28)).astype(np.uint8)
state, recs = fit(cfg, sys.argv[1], images=images, grid_n=0, progress=False, chunk_steps=1)
from jaxdiff.app.parallel import data_mesh, shardings
try:
    shardings(data_mesh(), 3)
    err = ""
except ValueError as e:
    err = str(e)
print(json.dumps({"devices": jax.device_count(), "err": err,
                  "losses": [l for r in recs for l in r["chunk_loss"]],
                  "param_sum": float(sum(np.abs(np.asarray(x)).sum()
                                         for x in jax.tree.leaves(state.params)))}))
"""


def _run(tmp_path, name, n_devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / name)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_two_devices_follow_one_device_trajectory(tmp_path):
    one = _run(tmp_path, "one", 1)
    two = _run(tmp_path, "two", 2)
    assert one["devices"] == 1 and two["devices"] == 2
    assert len(one["losses"]) == 8
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-4)
    assert two["param_sum"] == pytest.approx(one["param_sum"], rel=1e-4)
    assert one["err"] == "" and "does not split over 2 devices" in two["err"]


def test_shardings_and_errors():
    mesh = data_mesh()
    batch, repl = shardings(mesh, 8 * mesh.devices.size)
    assert isinstance(batch, NamedSharding) and batch.spec == PartitionSpec("data")
    assert repl.spec == PartitionSpec()
    assert mesh.devices.size == jax.device_count()


def test_no_distributed_env_means_no_init(monkeypatch):
    for v in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(v, raising=False)
    assert maybe_initialize_distributed() is False
