import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import kernels

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kw):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, **kw
    )


def test_ddpm_then_sample(tmp_path, data_dir):
    work = tmp_path / "run"
    r = _run(
        [
            "experiments/ddpm.py",
            "--limit",
            "256",
            "--epochs",
            "1",
            "--T",
            "20",
            "--hidden",
            "4,4",
            "--grid-n",
            "4",
            "--export-epochs",
            "1",
            "--workdir",
            str(work),
            "--data-dir",
            data_dir,
            "--no-progress",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["epoch"] == 1
    assert (work / "exports" / "epoch_001" / "params.msgpack").exists()
    argv = json.loads((work / "config.json").read_text())["invocations"][0]
    assert argv[0] == "experiments/ddpm.py" and argv[argv.index("--limit") + 1] == "256"
    for name in (
        "config.json",
        "metrics.jsonl",
        "loss.png",
        "samples/epoch_001.png",
        "final/params.msgpack",
        "final/config.json",
    ):
        assert (work / name).exists(), name
    # no --conv-impl: "auto", recorded as the path it resolved to for this backend
    saved = json.loads((work / "config.json").read_text())["config"]["model"]["conv_impl"]
    assert saved == kernels.resolve_conv_impl("auto") and saved != "auto"
    rec = json.loads((work / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["step"] == 2 and rec["images_per_s"] > 0 and np.isfinite(rec["loss"])
    r = _run(
        [
            "experiments/sample.py",
            "--checkpoint",
            str(work),
            "--n",
            "5",
            "--seed",
            "0",
            "--sampler",
            "dpmpp",
            "--steps",
            "4",
            "--clip-x0",
            "data",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["sampler"] == "dpmpp"
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (5, 28, 28, 1) and np.all(np.isfinite(x))
    assert (tmp_path / "s.png").exists()
    r = _run(
        [
            "experiments/evaluate.py",
            "--checkpoint",
            str(work),
            "--n",
            "20",
            "--sampler",
            "ddim",
            "--steps",
            "5",
            "--clip-x0",
            "--out",
            str(tmp_path / "ev"),
            "--data-dir",
            data_dir,
        ]
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n"] == 20 and m["sampler"] == "ddim" and m["steps"] == 5 and m["clip_x0"] == "wide"
    assert m["conv_impl"] == kernels.resolve_conv_impl("auto")  # sampling defaults to the fast path
    assert m["fd"] > m["floor"]["fd"] and len(m["fd_ci"]) == 2 and m["sample_seconds"] > 0
    for name in ("confident", "unconfident", "nn_closest", "nn_farthest", "per_class"):
        assert (tmp_path / "ev" / f"{name}.png").exists(), name
    out = tmp_path / "exported"
    r = _run(
        ["experiments/export.py", "--checkpoint", str(work), "--weights", "raw", "--out", str(out)]
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["epoch"] == 1
    from jaxdiff.app.runner import load_run

    _, _, exported, meta = load_run(out)
    _, _, raw, _ = load_run(work, weights="raw")
    assert meta["weights"] == "raw"
    for a, b in zip(jax.tree.leaves(exported), jax.tree.leaves(raw), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Sampling may swap the convolution implementation; the model computes the same values.
    cfg_rec, pieces_rec, params_rec, _ = load_run(work)
    cfg_xla, pieces_xla, params_xla, _ = load_run(work, conv_impl="xla")
    assert cfg_rec.model.conv_impl == saved and cfg_xla.model.conv_impl == "xla"
    xt = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    t = jnp.array([0.1, 0.9])
    want = pieces_rec.model.apply(params_rec, xt, t)
    got = pieces_xla.model.apply(params_xla, xt, t)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(jnp.abs(want).max()))
    with pytest.raises(ValueError, match="unknown conv impl 'fft'"):
        load_run(work, conv_impl="fft")
    r = _run(["experiments/sample.py", "--checkpoint", str(work), "--conv-impl", "fft"])
    assert r.returncode == 2 and "unknown conv impl 'fft'" in r.stderr
    assert "Traceback" not in r.stderr
    # A committed run on a fresh clone has no checkpoints: its workdir loads final/.
    import shutil

    clone = tmp_path / "clone"
    shutil.copytree(work, clone, ignore=shutil.ignore_patterns("checkpoints"))
    _, _, from_clone, _ = load_run(clone)
    _, _, final, _ = load_run(work / "final")
    for a, b in zip(jax.tree.leaves(from_clone), jax.tree.leaves(final), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_flags_give_one_clear_error(tmp_path):
    r = _run(["experiments/ddpm.py", "--hidden", "16,x", "--workdir", str(tmp_path)])
    assert r.returncode == 2 and "comma-separated integers" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run(
        ["experiments/ddpm.py", "--beta1", "0.5", "--beta2", "0.1", "--workdir", str(tmp_path)]
    )
    assert r.returncode == 2 and "--beta1 < --beta2" in r.stderr
    r = _run(["experiments/ddpm.py", "--warmup-steps", "-1", "--workdir", str(tmp_path)])
    assert r.returncode == 2 and "--warmup-steps must be >= 0" in r.stderr
    cold = ["experiments/cold.py", "--degradation", "blur", "--workdir", str(tmp_path)]
    r = _run([*cold, "--degradation-option", "sigmax=4"])
    assert r.returncode == 2 and "has no option(s) ['sigmax']" in r.stderr
    r = _run([*cold, "--degradation-option", "sigma_max"])
    assert r.returncode == 2 and "takes NAME=VALUE" in r.stderr
    r = _run(["experiments/ddpm.py", "--res-blocks", "2", "--workdir", str(tmp_path)])
    assert r.returncode == 2 and "add --model unet" in r.stderr
    r = _run(["experiments/ddpm.py", "--model", "unet", "--res-blocks", "0"])
    assert r.returncode == 2 and "--res-blocks" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()  # a folder without MNIST: the loader names the files
    r = _run(
        [
            "experiments/ddpm.py",
            "--data-dir",
            str(tmp_path / "empty"),
            "--workdir",
            str(tmp_path / "w"),
            "--limit",
            "256",
            "--epochs",
            "1",
        ],
        env={
            "PATH": "",
            "HOME": str(tmp_path),
            "no_proxy": "*",
            "https_proxy": "http://127.0.0.1:9",
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
        },
    )
    assert r.returncode == 2 and "train-images-idx3-ubyte.gz" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run(["experiments/sample.py", "--checkpoint", str(tmp_path / "none")])
    assert r.returncode == 2 and "--checkpoint" in r.stderr and "does not exist" in r.stderr
    r = _run(["experiments/evaluate.py", "--n", "10"])
    assert r.returncode == 2 and "exactly one of --checkpoint" in r.stderr


def test_cold_trains_and_samples_a_users_own_degradation(tmp_path, data_dir):
    path = [str(ROOT / "docs" / "examples"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    work = tmp_path / "wipe"
    common = ["--data-dir", data_dir]
    r = _run(
        [
            "experiments/cold.py",
            "--degradation",
            "wipe:wipe",
            "--degradation-option",
            "softness=2",
            "--model",
            "cnn",
            "--hidden",
            "4,4",
            "--precision",
            "fp32",
            "--limit",
            "128",
            "--epochs",
            "1",
            "--warmup-steps",
            "0",
            "--grid-n",
            "0",
            "--workdir",
            str(work),
            "--no-progress",
            *common,
        ],
        env=env,
    )
    assert r.returncode == 0, r.stderr
    process = json.loads((work / "config.json").read_text())["config"]["process"]
    assert process["degradation"] == "wipe:wipe" and process["T"] == 28
    assert process["degradation_options"] == [["softness", 2]]
    out = tmp_path / "s"
    r = _run(
        [
            "experiments/sample.py",
            "--checkpoint",
            str(work),
            "--n",
            "4",
            "--out",
            str(out),
            *common,
        ],
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert np.load(f"{out}.npy").shape == (4, 28, 28, 1)
    # a degradation that breaks the contract stops before training, naming the property
    r = _run(
        [
            "experiments/cold.py",
            "--degradation",
            "wipe:wipe",
            "--degradation-option",
            "softness=-3",
            "--workdir",
            str(tmp_path / "bad"),
            *common,
        ],
        env=env,
    )
    assert r.returncode == 2 and "breaks" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad").exists()


def test_warmup_default_scales_to_short_runs_and_is_recorded():
    from jaxdiff.app.cli import common_parser, config_from_args

    def warmup(kind, *argv):
        parser = common_parser(None, kind)
        return config_from_args(parser.parse_args(list(argv)), parser, kind).train.warmup_steps

    assert warmup("cold") == 500  # the recipe: 10 epochs of 937 steps
    assert warmup("cold", "--epochs", "1", "--limit", "1024") == 1  # 16 steps: a tenth
    assert warmup("cold", "--epochs", "1", "--limit", "1024", "--warmup-steps", "3") == 3
    assert warmup("ddpm") == 0  # the starter has none
