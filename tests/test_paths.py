"""Bad paths fail early with one clear line; writes are atomic; a full disk keeps checkpoints."""

import errno
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import paths
from jaxdiff.app import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
UNWRITABLE = Path("/proc/jaxdiff-nope")  # refuses new files even for root


def _run(*args):
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def _one_clear_line(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture()
def samples_files(tmp_path):
    good = np.random.default_rng(0).uniform(-0.5, 0.5, (8, 28, 28)).astype(np.float32)
    files = {
        "pickled": tmp_path / "obj.npy",
        "shape": tmp_path / "shape.npy",
        "uint8": tmp_path / "uint8.npy",
        "unit": tmp_path / "unit.npy",
        "nan": tmp_path / "nan.npy",
        "good": tmp_path / "good.npy",
    }
    np.save(files["pickled"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(files["shape"], good.reshape(8, 784))
    np.save(files["uint8"], ((good + 0.5) * 255).astype(np.uint8))
    np.save(files["unit"], good + 0.5)
    np.save(files["nan"], np.where(good > 0.4, np.nan, good))
    np.save(files["good"], good)
    return files


def test_load_samples_checks_shape_dtype_range_and_count(samples_files):
    f = samples_files
    for name, msg in (
        ("pickled", "holds pickled objects"),
        ("shape", "has shape (8, 784)"),
        ("uint8", "dtype uint8 (raw pixels?)"),
        ("unit", "looks like [0, 1] pixels"),
        ("nan", "NaN or infinite"),
    ):
        with pytest.raises(paths.PathError) as info:
            paths.load_samples(f[name])
        assert msg in str(info.value) and str(f[name]) in str(info.value)
    x = paths.load_samples(f["good"], 5)
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    with pytest.raises(paths.PathError, match="holds 8 samples, fewer than --n 9"):
        paths.load_samples(f["good"], 9)
    with pytest.raises(paths.PathError, match="does not exist"):
        paths.load_samples(f["good"].with_name("missing.npy"))


def test_writable_checks_name_the_flag_and_create_nothing(tmp_path):
    with pytest.raises(paths.PathError, match="--workdir /proc/jaxdiff-nope/run is not writable"):
        paths.check_writable_dir(UNWRITABLE / "run", "--workdir")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(paths.PathError, match="is a file, not a folder"):
        paths.check_writable_dir(f, "--out")
    with pytest.raises(paths.PathError, match="is a file, so the folder cannot be created"):
        paths.check_writable_dir(f / "sub", "--out")
    with pytest.raises(paths.PathError, match="is a folder; give a file path"):
        paths.check_writable_file(tmp_path, "--out")
    deep = tmp_path / "a" / "b"
    assert paths.check_writable_dir(deep, "--workdir") == deep and not (tmp_path / "a").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe left nothing
    with pytest.raises(paths.PathError, match="holds no checkpoint"):
        paths.check_checkpoint(tmp_path)


def test_every_driver_rejects_bad_paths_before_any_work(tmp_path, samples_files, data_dir):
    work = tmp_path / "w"
    _one_clear_line(
        _run("experiments/ddpm.py", "--workdir", UNWRITABLE / "x", "--data-dir", data_dir),
        "--workdir",
        "not writable",
    )
    _one_clear_line(
        _run("experiments/cold.py", "--workdir", work, "--data-dir", tmp_path / "nodata"),
        "--data-dir",
        "does not exist",
    )
    assert not work.exists()  # nothing was written before the error
    _one_clear_line(
        _run("experiments/evaluate.py", "--samples", "/etc/passwd", "--n", "10"),
        "--samples /etc/passwd",
        "pickled",
    )
    _one_clear_line(
        _run("experiments/evaluate.py", "--samples", samples_files["unit"], "--n", "4"),
        "looks like [0, 1] pixels",
    )
    _one_clear_line(
        _run(
            "experiments/evaluate.py",
            *("--samples", samples_files["good"], "--n", "4", "--out", UNWRITABLE),
        ),
        "--out",
        "not writable",
    )
    _one_clear_line(
        _run("experiments/sample.py", "--checkpoint", tmp_path, "--n", "2"),
        "--checkpoint",
        "holds no checkpoint",
    )
    _one_clear_line(
        _run("experiments/export.py", "--checkpoint", tmp_path / "none", "--out", tmp_path / "o"),
        "--checkpoint",
        "does not exist",
    )
    _one_clear_line(
        _run("experiments/import_torch.py", "--state-dict", tmp_path, "--out", tmp_path / "o"),
        "--state-dict",
        "is a folder",
    )
    _one_clear_line(
        _run("experiments/calibrate_metrics.py", "--out", UNWRITABLE, "--data-dir", data_dir),
        "--out",
        "not writable",
    )
    _one_clear_line(
        _run("experiments/train_classifier.py", "--out", tmp_path, "--data-dir", data_dir),
        "--out",
        "is a folder; give a file path",
    )


def test_atomic_writes_leave_the_old_file_or_none(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    paths.atomic_json(target, {"fd": 1.0})
    with pytest.raises(OSError, match="No space left"):
        with paths.atomic_path(target) as tmp:
            tmp.write_text('{"fd": ')  # half a file ...
            raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk fills
    assert target.read_text() == '{\n  "fd": 1.0\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left

    def failing_save(f, arr, allow_pickle=False):
        f.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(paths.np, "save", failing_save)
    with pytest.raises(OSError):
        paths.atomic_npy(tmp_path / "samples.npy", np.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    monkeypatch.undo()
    # figures and exported parameters go the same way
    from jaxdiff.app import plotting

    plotting.save_grid(np.zeros((4, 28, 28, 1)), tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "metrics.json"]


def test_full_disk_during_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    state = {"w": jnp.arange(4.0), "step": jnp.int32(1)}
    ckdir = tmp_path / "checkpoints"
    ckpt.save(ckdir, 1, state, {"epoch": 1})

    def full_disk(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    newer = {"w": jnp.arange(4.0) * 2, "step": jnp.int32(2)}
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.save(ckdir, 2, newer, {"epoch": 2})
    msg = str(info.value)
    assert "No space left" in msg and "(epoch 1) is kept" in msg and "--resume" in msg
    monkeypatch.undo()
    assert ckpt.latest_epoch(ckdir) == 1
    restored, meta = ckpt.restore_checkpoint(ckdir, jax.tree.map(jnp.zeros_like, state))
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert meta["epoch"] == 1
