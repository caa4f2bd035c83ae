"""The PyTorch starter importer: jaxdiff's CNN with imported weights computes PyTorch's output."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.app.torch_import import StateDictError, params_from_state_dict

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT / ".." / "shared" / "anchors"


def _fake_state_dict(rng, hidden=(4, 6), over_channels=False):
    from jaxdiff.models.layers import starter_frequencies
    from jaxdiff.schedules import make_schedule

    sched = make_schedule("linear", 1000, 1e-4, 0.02)
    sd = {
        "beta": np.asarray(sched.beta),
        "alpha": np.asarray(sched.alpha_bar),
        "gt.freq": starter_frequencies(),
    }
    cin = 1
    for i, c in enumerate(hidden):
        sd[f"gt.blocks.{i}.net.0.weight"] = rng.standard_normal((c, cin, 7, 7)) * 0.1
        sd[f"gt.blocks.{i}.net.0.bias"] = rng.standard_normal(c) * 0.1
        ln = (c, 28, 28) if over_channels else (28, 28)
        sd[f"gt.blocks.{i}.net.1.weight"] = 1 + rng.standard_normal(ln) * 0.1
        sd[f"gt.blocks.{i}.net.1.bias"] = rng.standard_normal(ln) * 0.1
        cin = c
    sd[f"gt.blocks.{len(hidden)}.weight"] = rng.standard_normal((1, cin, 3, 3)) * 0.1
    sd[f"gt.blocks.{len(hidden)}.bias"] = rng.standard_normal(1) * 0.1
    fan = 32
    for idx, out in zip((0, 2, 4, 6), (128, 128, 128, hidden[0]), strict=True):
        sd[f"gt.time_embed.{idx}.weight"] = rng.standard_normal((out, fan)) * 0.1
        sd[f"gt.time_embed.{idx}.bias"] = rng.standard_normal(out) * 0.1
        fan = out
    return {k: np.asarray(v, np.float32) for k, v in sd.items()}


@pytest.mark.parametrize("over_channels", [False, True])
def test_import_reads_the_architecture_and_fits_the_model(over_channels):
    from jaxdiff.models import build_model

    sd = _fake_state_dict(np.random.default_rng(0), over_channels=over_channels)
    cfg, params = params_from_state_dict(sd)
    assert cfg.model.hidden == (4, 6) and cfg.model.kernel_size == 7
    assert cfg.model.ln_over_channels is over_channels
    assert (cfg.process.T, cfg.process.beta1, cfg.process.beta2) == (1000, 1e-4, 0.02)
    model = build_model(cfg.model)
    x, t = jnp.zeros((2, 28, 28, 1)), jnp.full((2,), 0.5)
    want = jax.tree.map(jnp.shape, model.init(jax.random.key(0), x, t))
    assert jax.tree.map(jnp.shape, params) == want
    assert np.all(np.isfinite(model.apply(params, x, t)))


def test_import_rejects_what_is_not_a_starter_state_dict():
    sd = _fake_state_dict(np.random.default_rng(1))
    with pytest.raises(StateDictError, match="no 'gt.time_embed.6.weight'"):
        params_from_state_dict({k: v for k, v in sd.items() if k != "gt.time_embed.6.weight"})
    with pytest.raises(StateDictError, match="not a linear schedule"):
        params_from_state_dict({**sd, "beta": sd["beta"] ** 2})
    with pytest.raises(StateDictError, match="frequencies"):
        params_from_state_dict({**sd, "gt.freq": sd["gt.freq"] * 2})
    bad = dict(sd)
    bad["gt.blocks.1.net.0.weight"] = np.zeros((6, 5, 7, 7), np.float32)
    with pytest.raises(StateDictError, match="block 1 takes 5 channels; expected 4"):
        params_from_state_dict(bad)


def _torch_cnn(sd):
    torch = pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(
        "torch_starter", ROOT / "benchmarks/torch_starter.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.CNN()
    state = {k[3:]: torch.from_numpy(v) for k, v in sd.items() if k.startswith("gt.")}
    state["frequencies"] = state.pop("freq")
    net.load_state_dict(state)
    return torch, net.eval()


@pytest.mark.parametrize("epoch", [5, 50])
def test_imported_anchor_weights_match_pytorch_forward(epoch):
    pytest.importorskip("torch")
    path = ANCHORS / f"starter_ep{epoch}.pt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    from jaxdiff.app.torch_import import read_state_dict
    from jaxdiff.models import build_model

    sd = read_state_dict(path)
    cfg, params = params_from_state_dict(sd)
    torch, net = _torch_cnn(sd)
    rng = np.random.default_rng(epoch)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    t = np.linspace(0.001, 1.0, 8).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    for impl in ("xla", "auto"):
        model = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "conv_impl": impl}))
        got = np.asarray(model.apply(params, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t)))
        got = got.transpose(0, 3, 1, 2)
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < 2e-5, (impl, err)


def test_import_driver_writes_a_loadable_params_folder(tmp_path):
    pytest.importorskip("torch")
    path = ANCHORS / "starter_ep10.pt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    out = tmp_path / "imported"
    r = subprocess.run(
        [
            sys.executable,
            "experiments/import_torch.py",
            "--state-dict",
            str(path),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["hidden"] == [16, 32, 32, 16]
    from jaxdiff.app.runner import load_run

    cfg, _, params, meta = load_run(out)
    assert cfg.model.hidden == (16, 32, 32, 16) and meta["source"] == str(path)
    r = subprocess.run(
        [
            sys.executable,
            "experiments/import_torch.py",
            "--state-dict",
            "/etc/passwd",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "is not a PyTorch state_dict file" in r.stderr
    assert "Traceback" not in r.stderr


def test_training_gradients_match_pytorch_on_anchor_weights():
    """One training step's loss and every parameter gradient equal PyTorch's (both conv paths).

    The gradient of PyTorch's ``state_dict`` layout maps to jaxdiff's layout by the importer's
    own transposes, so ``params_from_state_dict`` of the PyTorch gradients is the reference.
    """
    pytest.importorskip("torch")
    path = ANCHORS / "starter_ep24.pt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    from jaxdiff.app.torch_import import read_state_dict
    from jaxdiff.models import build_model

    sd = read_state_dict(path)
    cfg, params = params_from_state_dict(sd)
    torch, net = _torch_cnn(sd)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    t = rng.uniform(0.001, 0.999, 16).astype(np.float32)
    eps = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    net.zero_grad()
    pred = net(torch.from_numpy(x), torch.from_numpy(t))
    loss_t = torch.mean((pred - torch.from_numpy(eps)) ** 2)
    loss_t.backward()
    names = dict(net.named_parameters())
    grad_sd = {
        k: (names[k[3:]].grad.numpy() if k.startswith("gt.") and k[3:] in names else v)
        for k, v in sd.items()
    }
    _, want = params_from_state_dict(grad_sd)
    xj, ej = jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(eps.transpose(0, 2, 3, 1))
    for impl in ("xla", "auto"):
        model = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "conv_impl": impl}))

        def loss(p, model=model):
            return jnp.mean((model.apply(p, xj, jnp.asarray(t)) - ej) ** 2)

        val, got = jax.value_and_grad(loss)(params)
        np.testing.assert_allclose(float(val), loss_t.item(), rtol=1e-5)
        for (kp, g), w in zip(
            jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want), strict=True
        ):
            name = jax.tree_util.keystr(kp)
            if "CNNBlock" in name and "Conv_0" in name and "bias" in name:
                # the plane LayerNorm removes each channel's mean: these biases get no gradient
                assert float(jnp.abs(g).max()) < 1e-7 and float(jnp.abs(w).max()) < 1e-7, name
                continue
            err = float(jnp.abs(g - w).max() / jnp.abs(w).max())
            assert err < 1e-4, (impl, name, err)
