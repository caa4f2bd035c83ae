import jax
import numpy as np
import pytest

from jaxdiff.app import checkpoint as ckpt
from jaxdiff.app.runner import fit, load_run
from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.pipeline import build, init_params
from jaxdiff.train import init_train_state

CFG = Config(
    model=ModelConfig(hidden=(4,), kernel_size=3),
    process=ProcessConfig(T=50),
    train=TrainConfig(batch_size=32, epochs=1),
)


def _state(cfg, seed=0):
    pieces = build(cfg)
    return init_train_state(init_params(pieces, jax.random.PRNGKey(seed)), pieces.tx)


def test_roundtrip_and_keep_last(tmp_path):
    s = _state(CFG, 1)
    for e in (1, 2, 3, 4):
        ckpt.save(tmp_path, e, s, {"epoch": e}, keep=2)
    assert ckpt.latest_epoch(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3", "4"]
    restored, meta = ckpt.restore_checkpoint(tmp_path, _state(CFG, 2))
    assert meta["epoch"] == 4
    for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_partial_checkpoint_is_never_read(tmp_path):
    s = _state(CFG)
    ckpt.save(tmp_path, 1, s, {"epoch": 1})
    # a save killed mid-write leaves only a temporary folder behind
    (tmp_path / "2.orbax-checkpoint-tmp-123").mkdir()
    assert ckpt.latest_epoch(tmp_path) == 1


def test_other_architecture_is_a_clear_error(tmp_path):
    ckpt.save(tmp_path, 1, _state(CFG), {"epoch": 1})
    other = Config(model=ModelConfig(hidden=(8,), kernel_size=3), process=CFG.process)
    with pytest.raises(ckpt.CheckpointError, match="another architecture"):
        ckpt.restore_checkpoint(tmp_path, _state(other))
    with pytest.raises(ckpt.CheckpointError, match="no complete checkpoint"):
        ckpt.restore_checkpoint(tmp_path / "empty", _state(CFG))


def test_export_and_load_run(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28)).astype(np.uint8)
    state, _ = fit(CFG, tmp_path / "run", images=images, grid_n=0, progress=False)
    cfg, pieces, params, meta = load_run(tmp_path / "run")
    assert cfg == CFG and meta["epoch"] == 1
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.ema_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ckpt.export_params(tmp_path / "exp", cfg, params, {"epoch": 1})
    cfg2, _, params2, meta2 = load_run(tmp_path / "exp")
    assert cfg2 == CFG and meta2["epoch"] == 1
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint found"):
        load_run(tmp_path / "nothing")


def test_existing_run_and_config_mismatch_errors(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28)).astype(np.uint8)
    kw = dict(images=images, grid_n=0, progress=False)
    fit(CFG, tmp_path, **kw)
    with pytest.raises(ckpt.CheckpointError, match="--resume"):
        fit(CFG, tmp_path, **kw)
    other = Config(CFG.model, CFG.process, TrainConfig(batch_size=32, epochs=2, lr=1e-3))
    with pytest.raises(ckpt.CheckpointError, match="train.lr"):
        fit(other, tmp_path, resume=True, **kw)


def test_resume_accepts_another_convolution_implementation(tmp_path):
    # a run started with conv_impl "fast" resumes where `auto` now resolves to "fast-onednn"
    from dataclasses import replace

    from jaxdiff.app.rundir import check_resume_config as _check_resume_config

    saved = replace(CFG, model=replace(CFG.model, conv_impl="fast")).to_dict()
    faster = replace(CFG, model=replace(CFG.model, conv_impl="onednn"))
    _check_resume_config(saved, faster, tmp_path)
    wider = replace(CFG, model=replace(CFG.model, conv_impl="onednn", hidden=(8, 8, 8, 8)))
    with pytest.raises(ckpt.CheckpointError, match="model.hidden"):
        _check_resume_config(saved, wider, tmp_path)
