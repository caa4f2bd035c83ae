"""Tests for the core assembly (jaxdiff.pipeline) and the sampler registry (jaxdiff.samplers)."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from jaxdiff import pipeline, recipes, samplers
from jaxdiff.app.runner import fit
from jaxdiff.sampling import ddim_sample, ddpm_sample

TINY = {"hidden": (4, 4), "kernel_size": 3, "T": 20, "limit": 128, "batch_size": 32}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (160, 28, 28)).astype(np.uint8)


def test_the_notebook_snippet_trains_and_samples_in_memory(images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = recipes.starter(epochs=2, **TINY)
    seen = []
    state = pipeline.train(cfg, images, on_epoch=lambda s, rec: seen.append(rec))
    x = pipeline.generate(cfg, pipeline.build(cfg), state.ema_params, jax.random.key(0), 5)
    assert x.shape == (5, 28, 28, 1) and np.isfinite(x).all()
    assert [r["epoch"] for r in seen] == [1, 2] and all(np.isfinite(r["loss"]) for r in seen)
    assert [r["step"] for r in seen] == [4, 8] and len(seen[0]["chunk_loss"]) == 1
    assert os.listdir(tmp_path) == []  # nothing written
    again = pipeline.train(cfg, images)
    np.testing.assert_array_equal(
        jax.tree.leaves(state.params)[0], jax.tree.leaves(again.params)[0]
    )


def test_in_memory_training_equals_fit_with_files(images, tmp_path):
    cfg = recipes.starter(epochs=2, **TINY)
    mem = pipeline.train(cfg, images)
    disk, _ = fit(cfg, tmp_path / "run", images=images, grid_n=0, progress=False)
    for a, b in zip(jax.tree.leaves(mem.params), jax.tree.leaves(disk.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and continuing an in-memory state from epoch 1 gives the same epoch 2
    one = pipeline.train(recipes.starter(epochs=1, **TINY), images)
    two = pipeline.train(cfg, images, state=one)
    for a, b in zip(jax.tree.leaves(mem.params), jax.tree.leaves(two.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_sampler_has_one_signature_and_returns_the_samples(images):
    ddpm = recipes.starter(epochs=1, **TINY)
    cold = recipes.melt(epochs=1, name="cnn", precision="fp32", **{**TINY, "T": 4})
    for cfg in (ddpm, cold):
        pieces = pipeline.build(cfg)
        params = pipeline.init_params(pieces, jax.random.key(0))
        opts = samplers.SamplerOptions(
            steps=2 if cfg.process.kind == "ddpm" else None,
            start=lambda key, n: jax.random.normal(key, (n, 28, 28, 1)) * 0.1,
        )
        for s in samplers.SAMPLERS.values():
            if s.kind != cfg.process.kind:
                continue
            x = s.draw(pieces, params, jax.random.key(1), 3, opts)
            assert np.asarray(x).shape == (3, 28, 28, 1), s.name


def test_registry_samplers_are_the_scans_themselves(images):
    cfg = recipes.starter(epochs=1, **TINY)
    pieces = pipeline.build(cfg)
    params = pipeline.init_params(pieces, jax.random.key(0))
    key = jax.random.key(2)
    got = pipeline.generate(cfg, pieces, params, key, 4, "ancestral")
    want, _ = ddpm_sample(
        pieces.apply_fn, params, pieces.sched, jax.random.fold_in(key, 0), (4, 28, 28, 1)
    )
    np.testing.assert_array_equal(got, np.asarray(want))
    got = pipeline.generate(cfg, pieces, params, key, 4, "ddim", steps=5, clip_x0="data")
    want, _ = ddim_sample(
        pieces.apply_fn,
        params,
        pieces.sched,
        jax.random.fold_in(key, 0),
        (4, 28, 28, 1),
        5,
        clip=(-0.5, 0.5),
    )
    np.testing.assert_array_equal(got, np.asarray(want))


def test_registry_errors_name_the_fix():
    cfg = recipes.starter()
    with pytest.raises(ValueError, match="does not fit a ddpm run; use ancestral, ddim, dpmpp"):
        samplers.get_sampler("cold2", cfg)
    with pytest.raises(ValueError, match="applies to ddim, dpmpp, not 'ancestral'"):
        samplers.get_sampler("ancestral", cfg, samplers.SamplerOptions(clip="data"))
    with pytest.raises(ValueError, match="cold sampling needs start states"):
        samplers.get_sampler("cold2", recipes.melt())
    with pytest.raises(ValueError, match="already registered"):
        samplers.register(samplers.SAMPLERS["ddim"])
    assert samplers.default_sampler(recipes.melt()) == "cold2"
    assert samplers.default_sampler(recipes.melt(noise_schedule="constant")) == "cold1"
