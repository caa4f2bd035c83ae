"""The persistent compilation cache: a second process loads what the first compiled."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

from jaxdiff.app import compile_cache

ROOT = Path(__file__).resolve().parents[1]

# A training gradient of the starter CNN (Fourier 7x7 convolutions and, where oneDNN builds,
# its 3x3 FFI convolution), compiled with the cache on; prints its value digest, the cache
# folder and jax's cache-hit count.
CHILD = r"""
import hashlib, json
import jax, jax.numpy as jnp, numpy as np
from jaxdiff.app.compile_cache import enable_compilation_cache
from jaxdiff.config import ModelConfig
from jaxdiff.models import build_model

hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None)
folder = enable_compilation_cache()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
model = build_model(ModelConfig(hidden=(8, 8), conv_impl="auto"))
x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 28, 28, 1)), jnp.float32)
t = jnp.arange(4, dtype=jnp.float32)
params = model.init(jax.random.key(0), x, t)
loss = lambda p: jnp.mean(model.apply(p, x, t) ** 2)
g = jax.jit(jax.grad(loss))(params)
leaves = np.concatenate([np.asarray(v).ravel() for v in jax.tree.leaves(g)])
print(json.dumps({"folder": str(folder), "hits": len(hits),
                  "digest": hashlib.sha256(leaves.tobytes()).hexdigest()}))
"""


def _run_child(cache_dir: Path, **env) -> dict:
    full = {**os.environ, "JAXDIFF_CACHE_DIR": str(cache_dir), "JAXDIFF_XLA_CACHE": "1", **env}
    full.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=full, capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_compiled_program_with_equal_results(tmp_path):
    first = _run_child(tmp_path)
    folder = Path(first["folder"])
    assert folder.parent == tmp_path / "xla" and folder.name == compile_cache.cache_tag()
    written = sorted(p.name for p in folder.iterdir())
    assert first["hits"] == 0 and written, "the first process should compile and write"
    second = _run_child(tmp_path)
    assert second["hits"] >= 1, "the second process should load from the cache"
    assert sorted(p.name for p in folder.iterdir()) == written
    assert second["digest"] == first["digest"], "a loaded program gave other values"


def test_cache_can_be_switched_off(tmp_path):
    out = _run_child(tmp_path, JAXDIFF_XLA_CACHE="0")
    assert out["folder"] == "None" and out["hits"] == 0
    assert not (tmp_path / "xla").exists()


def test_cache_tag_names_jax_machine_and_cpu_features(monkeypatch):
    tag = compile_cache.cache_tag()
    assert tag.startswith(f"jax{jax.__version__}-")
    monkeypatch.setattr(compile_cache, "_cpu_flags", lambda: "sse2 avx2")
    avx2 = compile_cache.cache_tag()
    monkeypatch.setattr(compile_cache, "_cpu_flags", lambda: "sse2 avx2 avx512f")
    assert compile_cache.cache_tag() != avx2, "other CPU features must get another folder"


def test_a_jax_cache_dir_the_user_set_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDIFF_XLA_CACHE", "1")
    before = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        assert compile_cache.enable_compilation_cache() == tmp_path / "mine"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
