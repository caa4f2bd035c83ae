import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdiff.app.runner import fit
from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.losses import cold_loss, ddpm_loss
from jaxdiff.models import CNN
from jaxdiff.pipeline import build, init_params
from jaxdiff.schedules import linear, q_sample
from jaxdiff.train import (
    chunk_size,
    epoch_indices,
    init_train_state,
    make_optimizer,
    make_run_steps,
    make_train_step,
    warm_train_state,
)

SMALL = ModelConfig(hidden=(8, 8), kernel_size=3)


def _images(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)


def test_loss_falls_when_overfitting_a_batch_of_8():
    cfg = Config(model=SMALL, train=TrainConfig(lr=3e-3))
    pieces = build(cfg)
    state = init_train_state(init_params(pieces, jax.random.PRNGKey(0)), pieces.tx)
    step = jax.jit(make_train_step(pieces.loss_fn, pieces.tx))
    x = jnp.asarray(_images(8) / 255.0 - 0.5, jnp.float32)[..., None]
    key = jax.random.PRNGKey(1)
    losses = []
    for _ in range(60):
        state, m = step(state, x, key)
        losses.append(float(m["loss"]))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
    assert int(state.step) == 60


def test_train_step_jit_equals_eager_and_uses_fold_in():
    sched = linear(T=50)
    model = CNN(n_hidden=(4,), kernel_size=3)
    loss_fn = ddpm_loss(model.apply, sched)
    tx = make_optimizer(TrainConfig())
    p = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1))
    state = init_train_state(p, tx)
    step = make_train_step(loss_fn, tx)
    x = jax.random.uniform(jax.random.PRNGKey(2), (4, 28, 28, 1)) - 0.5
    key = jax.random.PRNGKey(3)
    s1, m1 = step(state, x, key)
    s2, m2 = jax.jit(step)(state, x, key)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    # the step's randomness is fold_in(key, state.step)
    want, _ = loss_fn(p, x, jax.random.fold_in(key, 0))
    np.testing.assert_allclose(m1["loss"], want, rtol=1e-6)
    _, m3 = step(s1, x, key)
    assert float(m3["loss"]) != float(m1["loss"])


def test_ema_tracks_params():
    sched = linear(T=50)
    model = CNN(n_hidden=(4,), kernel_size=3)
    tx = make_optimizer(TrainConfig(lr=1e-2))
    p = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1))
    step = jax.jit(make_train_step(ddpm_loss(model.apply, sched), tx, ema_decay=0.5))
    s0 = init_train_state(p, tx)
    x = jnp.zeros((2, 28, 28, 1))
    s1, _ = step(s0, x, jax.random.PRNGKey(0))
    for e, a, b in zip(
        jax.tree.leaves(s1.ema_params),
        jax.tree.leaves(s0.params),
        jax.tree.leaves(s1.params),
        strict=True,
    ):
        np.testing.assert_allclose(e, 0.1 * a + 0.9 * b, atol=1e-7)  # warm-up: min(.5, 1/10)
    s2, _ = step(s1, x, jax.random.PRNGKey(0))
    d = 2 / 11  # step 1: min(0.5, 2/11)
    for e, a, b in zip(
        jax.tree.leaves(s2.ema_params),
        jax.tree.leaves(s1.ema_params),
        jax.tree.leaves(s2.params),
        strict=True,
    ):
        np.testing.assert_allclose(e, d * a + (1 - d) * b, atol=1e-6)
    with pytest.raises(ValueError, match="ema_decay"):
        make_train_step(ddpm_loss(model.apply, sched), tx, ema_decay=1.0)


def test_scan_of_steps_equals_python_loop():
    cfg = Config(model=ModelConfig(hidden=(4,), kernel_size=3), process=ProcessConfig(T=50))
    pieces = build(cfg)
    state = init_train_state(init_params(pieces, jax.random.PRNGKey(0)), pieces.tx)
    images = jnp.asarray(_images(40))
    idx = epoch_indices(jax.random.PRNGKey(1), 0, 40, 8)
    key = jax.random.PRNGKey(2)
    # SGD: Adam's g / sqrt(v) would amplify float reassociation on near-zero gradients
    tx = optax.sgd(1e-2)
    state = init_train_state(state.params, tx)
    step = jax.jit(make_train_step(pieces.loss_fn, tx))
    loop_state = state
    for i in range(idx.shape[0]):
        batch = images[idx[i]].astype(jnp.float32)[..., None] / 255.0 - 0.5
        loop_state, _ = step(loop_state, batch, key)
    run_steps = make_run_steps(make_train_step(pieces.loss_fn, tx))
    scan_state, metrics = run_steps(state, images, idx, key)
    assert metrics["loss"].shape == (5,)
    for a, b in zip(jax.tree.leaves(scan_state), jax.tree.leaves(loop_state), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_epoch_indices():
    idx = epoch_indices(jax.random.PRNGKey(0), 3, 1000, 128)
    assert idx.shape == (7, 128)
    assert len(np.unique(np.asarray(idx))) == 7 * 128
    again = epoch_indices(jax.random.PRNGKey(0), 3, 1000, 128)
    np.testing.assert_array_equal(idx, again)
    other = epoch_indices(jax.random.PRNGKey(0), 4, 1000, 128)
    assert not np.array_equal(idx, other)
    with pytest.raises(ValueError, match="no full batch"):
        epoch_indices(jax.random.PRNGKey(0), 0, 100, 128)


def test_cold_loss_l1_with_identity_restorer_is_degradation_error():
    def degrade(x0, t):
        return x0 * (1.0 - t / 10.0)

    def identity(params, x, t):
        return x

    loss_fn = cold_loss(identity, degrade, 10, "l1")
    x0 = jnp.ones((64, 28, 28, 1))
    loss, _ = loss_fn(None, x0, jax.random.PRNGKey(0))
    # mean over t ~ U{1..10} of t/10 = 0.55
    assert float(loss) == pytest.approx(0.55, abs=0.08)
    with pytest.raises(ValueError, match="unknown loss norm"):
        cold_loss(identity, degrade, 10, "l3")


def test_resumed_run_equals_uninterrupted(tmp_path):
    images = _images(96)
    base = Config(
        model=ModelConfig(hidden=(4,), kernel_size=3),
        process=ProcessConfig(T=50),
        train=TrainConfig(batch_size=32, epochs=2, lr=1e-3, ema_decay=0.9),
    )
    kw = dict(images=images, grid_n=0, progress=False, chunk_steps=2)
    full, recs = fit(base, tmp_path / "a", **kw)
    one = Config(base.model, base.process, TrainConfig(**{**base.train.__dict__, "epochs": 1}))
    fit(one, tmp_path / "b", argv=["ddpm.py", "--epochs", "1"], **kw)
    resumed, recs_b = fit(base, tmp_path / "b", resume=True, argv=["ddpm.py", "--resume"], **kw)
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["invocations"] == [["ddpm.py", "--epochs", "1"], ["ddpm.py", "--resume"]]
    assert int(resumed.step) == int(full.step) == 6
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["epoch"] for r in recs_b] == [1, 2]
    assert recs_b[1]["loss"] == recs[1]["loss"]


def test_chunking_changes_nothing_and_cuts_equal_chunks(tmp_path):
    images = _images(160)  # 5 steps of 32 per epoch
    cfg = Config(
        model=ModelConfig(hidden=(4,), kernel_size=3),
        process=ProcessConfig(T=50),
        train=TrainConfig(batch_size=32, epochs=1, lr=1e-3),
    )
    kw = dict(images=images, grid_n=0, progress=False)
    whole, recs_w = fit(cfg, tmp_path / "a", chunk_steps=5, **kw)
    cut, recs_c = fit(cfg, tmp_path / "b", chunk_steps=4, **kw)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(cut), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(recs_w[0]["chunk_loss"]) == 1 and len(recs_c[0]["chunk_loss"]) == 2
    assert recs_c[0]["loss"] == pytest.approx(recs_w[0]["loss"], rel=1e-6)
    # 5 steps, at most 4 per call: 3 + 2, not 4 + 1; as equal as possible, never longer
    assert chunk_size(5, 4) == 3 and chunk_size(64, 39) == 32 and chunk_size(468, 39) == 39
    for steps in range(1, 60):
        for most in range(1, 12):
            size = chunk_size(steps, most)
            calls = -(-steps // size)
            assert size <= most and calls == -(-steps // most)  # no more calls than needed
            assert size == 1 or -(-steps // (size - 1)) > calls  # and the shortest such length


def _learning_rates(tx, steps: int) -> list[float]:
    """The step sizes of ``tx``: with a constant gradient Adam's bias-corrected step is the lr."""
    params = {"w": jnp.zeros(3)}
    opt_state, got = tx.init(params), []
    for _ in range(steps):
        updates, opt_state = tx.update({"w": jnp.ones(3)}, opt_state, params)
        got.append(-float(updates["w"][0]))
    return got


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_epoch():
    cfg = TrainConfig(lr=1e-2, epochs=2, lr_schedule="cosine", warmup_steps=2)
    got = _learning_rates(make_optimizer(cfg, steps_per_epoch=5), 10)
    k = np.arange(10)
    want = np.where(
        k < 2, 1e-2 * k / 2, 1e-2 * 0.5 * (1 + np.cos(np.pi * np.clip(k - 2, 0, 8) / 8))
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_optimizer(cfg)
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, 10\)"):
        make_optimizer(TrainConfig(epochs=2, lr_schedule="cosine", warmup_steps=10), 5)
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        make_optimizer(TrainConfig(lr_schedule="step"), 5)


def test_constant_schedule_warms_up_then_holds_the_learning_rate():
    got = _learning_rates(make_optimizer(TrainConfig(lr=1e-2, warmup_steps=4)), 8)
    want = 1e-2 * np.minimum(np.arange(8) / 4, 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        make_optimizer(TrainConfig(lr_schedule="constant", warmup_steps=-1))


def test_warm_state_continues_the_schedule_with_fresh_adam_moments():
    cfg = TrainConfig(lr=1e-2, epochs=2, lr_schedule="cosine", warmup_steps=2)
    tx = make_optimizer(cfg, steps_per_epoch=5)
    params = {"w": jnp.zeros(3)}
    state = warm_train_state(params, {"w": jnp.ones(3)}, tx, step=6)
    assert int(state.step) == 6 and float(state.ema_params["w"][0]) == 1.0
    # a fresh Adam's first step has the size of the learning rate, here the schedule's at step 6
    updates, _ = tx.update({"w": jnp.array([3.0, -0.5, 2.0])}, state.opt_state, params)
    lr6 = 1e-2 * 0.5 * (1 + np.cos(np.pi * 4 / 8))
    np.testing.assert_allclose(-np.asarray(updates["w"]), lr6 * np.array([1, -1, 1]), rtol=1e-5)


def test_warm_start_from_an_export_after_checkpoints_are_lost(tmp_path):
    import shutil

    from jaxdiff.app.checkpoint import CheckpointError

    images = _images(96)
    cfg = Config(
        model=ModelConfig(hidden=(4,), kernel_size=3),
        process=ProcessConfig(T=50),
        train=TrainConfig(batch_size=32, epochs=2, lr=1e-3, ema_decay=0.9),
    )
    kw = dict(images=images, grid_n=0, progress=False, chunk_steps=2)
    full, recs = fit(cfg, tmp_path / "a", export_epochs=(1,), **kw)
    shutil.rmtree(tmp_path / "a" / "checkpoints")
    with pytest.raises(CheckpointError, match=r"no checkpoints.*--warm-start \S*epoch_001"):
        fit(cfg, tmp_path / "a", resume=True, **kw)
    export = tmp_path / "a" / "exports" / "epoch_001"
    with pytest.raises(CheckpointError, match="pass the EMA folder epoch_001"):
        fit(cfg, tmp_path / "a", warm_start=export.with_name("epoch_001_raw"), **kw)
    other = Config(cfg.model, cfg.process, TrainConfig(**{**cfg.train.__dict__, "lr": 2e-3}))
    with pytest.raises(CheckpointError, match="train.lr: saved 0.001 vs now 0.002"):
        fit(other, tmp_path / "a", warm_start=export, **kw)
    warm, recs_w = fit(cfg, tmp_path / "a", warm_start=export, **kw)
    assert int(warm.step) == int(full.step) == 6
    assert [r["epoch"] for r in recs_w] == [1, 2] and recs_w[0] == recs[0]
    # same data order and keys; only the Adam moments were reset, so close but not equal
    assert recs_w[1]["loss"] != recs[1]["loss"]
    assert abs(recs_w[1]["loss"] - recs[1]["loss"]) < 0.05 * recs[1]["loss"]
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["warm_starts"] == [{"from": str(export), "epoch": 1, "note": "Adam moments reset"}]
    with pytest.raises(CheckpointError, match="continue it with --resume"):
        fit(cfg, tmp_path / "a", warm_start=export, **kw)
    # sampling an export records which weights it holds, whatever --weights said
    from jaxdiff.app.cli import draw_samples

    args = argparse.Namespace(checkpoint=export.with_name("epoch_001_raw"), epoch=None, n=2)
    args.seed, args.sampler, args.steps, args.eta, args.data_dir = 0, "ddim", 2, 0.0, None
    _, info = draw_samples(args)
    assert info["weights"] == "raw" and info["epoch"] == 1


def test_cosine_run_refuses_to_resume_with_other_epochs(tmp_path):
    from jaxdiff.app.checkpoint import CheckpointError

    images = _images(64)
    cfg = Config(
        model=ModelConfig(hidden=(4,), kernel_size=3),
        process=ProcessConfig(T=50),
        train=TrainConfig(batch_size=32, epochs=1, lr=1e-3, lr_schedule="cosine"),
    )
    kw = dict(images=images, grid_n=0, progress=False)
    fit(cfg, tmp_path / "r", **kw)
    longer = Config(cfg.model, cfg.process, TrainConfig(**{**cfg.train.__dict__, "epochs": 2}))
    with pytest.raises(CheckpointError, match="same --epochs"):
        fit(longer, tmp_path / "r", resume=True, **kw)


def test_clip_x0_needs_ddim_or_dpmpp_and_a_known_range():
    from jaxdiff.pipeline import generate

    cfg = Config(model=ModelConfig(hidden=(4,), kernel_size=3), process=ProcessConfig(T=10))
    pieces = build(cfg)
    params = init_params(pieces, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="applies to ddim, dpmpp, not 'ancestral'"):
        generate(cfg, pieces, params, jax.random.PRNGKey(1), 2, "ancestral", clip_x0=True)
    with pytest.raises(ValueError, match="--clip-x0 'tight' unknown"):
        generate(cfg, pieces, params, jax.random.PRNGKey(1), 2, "ddim", clip_x0="tight")
    # the data range clips harder than the wide one
    x = {
        c: generate(cfg, pieces, params, jax.random.PRNGKey(1), 2, "dpmpp", 3, clip_x0=c)
        for c in (False, "wide", "data")
    }
    assert all(np.all(np.isfinite(v)) for v in x.values())
    assert np.abs(x["data"]).max() <= np.abs(x[False]).max()


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_loss_weights_each_example_by_its_closed_form(prediction):
    from jaxdiff.schedules import v_target

    sched = linear(T=50)
    x0 = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1)) - 0.5

    def constant_net(params, z, t_frac):  # predicts `params` everywhere
        return jnp.full_like(z, params)

    key = jax.random.key(2)
    got, _ = ddpm_loss(constant_net, sched, prediction, "min_snr", snr_gamma=5.0)(0.1, x0, key)
    # the same draws as the loss makes, then the Min-SNR-5 weights by hand
    kt, ke = jax.random.split(key)
    t = np.asarray(jax.random.randint(kt, (6,), 1, 50))
    eps = jax.random.normal(ke, x0.shape, jnp.float32)
    target = eps if prediction == "eps" else jax.vmap(v_target, (None, 0, 0, 0))(sched, x0, t, eps)
    ab = np.asarray(sched.alpha_bar)[t]
    s = ab / (1 - ab)
    w = np.minimum(s, 5.0) / (s if prediction == "eps" else s + 1)
    per = np.mean((np.asarray(target) - 0.1) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(got, np.mean(w * per), rtol=1e-5)
    # unweighted v-loss is the plain MSE to v; the starter's loss is unchanged by the options
    plain, _ = ddpm_loss(constant_net, sched, prediction)(0.1, x0, key)
    np.testing.assert_allclose(plain, np.mean((np.asarray(target) - 0.1) ** 2), rtol=1e-5)


def test_ddpm_loss_rejects_unknown_options_clearly():
    sched = linear(T=10)
    with pytest.raises(ValueError, match="unknown prediction 'x0'"):
        ddpm_loss(lambda p, z, t: z, sched, prediction="x0")
    with pytest.raises(ValueError, match="unknown weighting 'p2'"):
        ddpm_loss(lambda p, z, t: z, sched, weighting="p2")


def test_v_prediction_model_gives_samplers_the_true_eps():
    from jaxdiff.schedules import eps_model, v_target

    sched = linear(T=100)
    x0 = jax.random.uniform(jax.random.key(0), (2, 4, 4, 1)) - 0.5
    eps = jax.random.normal(jax.random.key(1), x0.shape)
    t = jnp.array([3, 77])
    z = jax.vmap(q_sample, (None, 0, 0, 0))(sched, x0, t, eps)
    v = jax.vmap(v_target, (None, 0, 0, 0))(sched, x0, t, eps)
    oracle = lambda params, zz, t_frac: v  # noqa: E731 - the exact v of these two examples
    eps_fn = eps_model(oracle, sched, "v")
    np.testing.assert_allclose(eps_fn(None, z, t / 100.0), eps, atol=1e-5)
    assert eps_model(oracle, sched, "eps") is oracle
