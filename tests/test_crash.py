import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdiff.app import checkpoint as ckpt
from jaxdiff.app import runner
from jaxdiff.app.runner import TrainingDiverged, fit, load_run
from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.pipeline import build, init_state

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--limit",
    "2048",
    "--batch-size",
    "32",
    "--epochs",
    "3",
    "--T",
    "50",
    "--hidden",
    "4",
    "--kernel-size",
    "3",
    "--grid-n",
    "0",
    "--chunk-steps",
    "1",
    "--no-progress",
]


def _cmd(work, data_dir, *extra):
    return [
        sys.executable,
        "experiments/ddpm.py",
        *FLAGS,
        "--workdir",
        str(work),
        "--data-dir",
        data_dir,
        *extra,
    ]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, data_dir):
    ref = subprocess.run(
        _cmd(tmp_path / "ref", data_dir), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert ref.returncode == 0, ref.stderr[-2000:]

    work = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(work, data_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while ckpt.latest_epoch(work / "checkpoints") is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt.latest_epoch(work / "checkpoints")
    assert killed_at is not None and killed_at < 3, "the run finished before it was killed"

    res = subprocess.run(
        _cmd(work, data_dir, "--resume"), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    _, _, p_ref, m_ref = load_run(tmp_path / "ref")
    _, _, p_res, m_res = load_run(work)
    assert m_ref["epoch"] == m_res["epoch"] == 3 and m_ref["step"] == m_res["step"]
    for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_res), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    recs = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = Config(
        ModelConfig(hidden=(4,), kernel_size=3),
        ProcessConfig(T=50),
        TrainConfig(batch_size=32, epochs=1),
    )
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28)).astype(np.uint8)
    kw = dict(images=images, grid_n=0, progress=False)
    fit(cfg, tmp_path, **kw)
    good, _ = ckpt.restore_checkpoint(
        tmp_path / "checkpoints",
        init_state(cfg, build(cfg)),
    )

    real_build = runner.build

    def poisoned_build(c, **kw):
        pieces = real_build(c, **kw)

        def loss_fn(params, x0, key):
            loss, m = pieces.loss_fn(params, x0, key)
            return loss * np.nan, m

        return dataclasses.replace(pieces, loss_fn=loss_fn)

    monkeypatch.setattr(runner, "build", poisoned_build)
    two = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))
    with pytest.raises(TrainingDiverged, match="Last good checkpoint: epoch 1"):
        fit(two, tmp_path, resume=True, **kw)
    assert ckpt.latest_epoch(tmp_path / "checkpoints") == 1
    monkeypatch.setattr(runner, "build", real_build)
    after, _ = ckpt.restore_checkpoint(tmp_path / "checkpoints", good)
    for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_diverged_run_cli_message(tmp_path, data_dir):
    r = subprocess.run(
        [
            sys.executable,
            "experiments/ddpm.py",
            "--limit",
            "256",
            "--epochs",
            "1",
            "--T",
            "20",
            "--hidden",
            "4",
            "--kernel-size",
            "3",
            "--lr",
            "1e30",
            "--grid-n",
            "0",
            "--workdir",
            str(tmp_path),
            "--data-dir",
            data_dir,
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "loss became" in r.stderr and "Lower --lr" in r.stderr
    assert "Traceback" not in r.stderr
