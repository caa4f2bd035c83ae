"""The native kernels never crash a run: every failure falls back to pure JAX, with one warning.

Each case makes the native path fail in its own way (no compiler, a compiler that fails, a
library without the handlers, a jax without ``jax.ffi``'s functions, a run recorded with
``onednn`` loaded where the kernels are not built) and checks the one warning and that the
convolutions then compute exactly what the pure-JAX path computes. None of them compiles
anything or needs the network; none needs x86-64 Linux.
"""

import _ctypes
import shutil
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import kernels
from jaxdiff.app import checkpoint as ckpt
from jaxdiff.app.runner import load_run
from jaxdiff.config import Config, ModelConfig, ProcessConfig
from jaxdiff.kernels import conv, native
from jaxdiff.kernels.native import KernelFallbackWarning
from jaxdiff.pipeline import build, generate, init_params


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A process state as if new, an empty kernel cache, and a platform the kernels support.

    oneDNN's install is faked (two empty folders): nothing here gets as far as using it.
    Afterwards the real state is probed afresh (the library, where built, loads again).
    """
    monkeypatch.setenv("JAXDIFF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXDIFF_ONEDNN", raising=False)
    monkeypatch.setattr(native, "_unsupported", lambda: None)
    onednn_root = (tmp_path / "onednn" / "include", tmp_path / "onednn" / "lib")
    monkeypatch.setattr(native, "_find_onednn", lambda: onednn_root)
    native._reset()
    yield tmp_path
    native._reset()


def _expect_fast(warned, match):
    """One fallback warning matching ``match``, and the convolutions of the pure-JAX path."""
    assert len(warned) == 1, [str(w.message) for w in warned]
    assert warned[0].category is KernelFallbackWarning
    message = str(warned[0].message)
    assert match in message and "'fast'" in message and "slower" in message, message
    assert not native.available()
    assert kernels.resolve_conv_impl("auto", "cpu") == "fast"
    assert kernels.resolve_conv_impl("onednn", "cpu") == "fast"
    assert kernels.get_conv("fast-onednn") is conv.conv2d_fourier
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 9, 9, 3)), jnp.float32)
    for k in (3, 7):
        kernel = jnp.asarray(rng.standard_normal((k, k, 3, 4)), jnp.float32)
        for name in ("auto", "onednn", "fast-onednn"):
            np.testing.assert_array_equal(
                kernels.get_conv(name)(x, kernel), conv.conv2d_fourier(x, kernel)
            )


def _build(**kwargs):
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert kernels.build(verbose=False) is False
        _expect_fast(warned, **kwargs)  # resolving afterwards adds no second warning


def test_no_compiler_on_path(fresh, monkeypatch):
    monkeypatch.setenv("PATH", str(fresh / "empty"))
    monkeypatch.delenv("CXX", raising=False)
    _build(match="no C++ compiler found ('g++' is not on PATH")


def test_a_failed_compile(fresh, monkeypatch):
    cxx = fresh / "bad-cxx"
    cxx.write_text("#!/bin/sh\necho 'onednn_conv.cc:1: error: no luck' >&2\nexit 1\n")
    cxx.chmod(0o755)
    monkeypatch.setenv("CXX", str(cxx))
    _build(match="compiling onednn_conv.cc failed (exit status 1")
    assert "no luck" in native.unavailable_reason()


def _library(fresh):
    """Where the (faked) install's library goes: something there counts as built."""
    path = native._library_path(*native._find_onednn())
    path.parent.mkdir(parents=True)
    return path


def test_a_library_missing_a_symbol(fresh):
    # a real shared library without jaxdiff's handlers: Python's own _ctypes extension
    shutil.copy(_ctypes.__file__, _library(fresh))
    _build(match="jaxdiff_onednn_conv_fwd")


def test_a_jax_without_the_ffi_functions(fresh, monkeypatch):
    # an older jax: the library loads, but registering its handlers raises AttributeError
    _library(fresh).write_bytes(b"")
    lib = types.SimpleNamespace(**{name: object() for name in native.SYMBOLS})
    monkeypatch.setattr(native.ctypes, "CDLL", lambda path: lib)
    monkeypatch.delattr(jax.ffi, "pycapsule")
    _build(match="AttributeError")


def test_model_init_never_compiles(fresh, monkeypatch):
    # nothing built: a notebook's model.init runs the pure-JAX path and says how to build
    def compile_(*args, **kwargs):
        raise AssertionError("a compiler ran inside model.init")

    monkeypatch.setattr(native, "_compile", compile_)
    cfg = Config(model=ModelConfig(hidden=(4,), kernel_size=7))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        params = init_params(build(cfg), jax.random.key(0))
        _expect_fast(warned, match="jaxdiff.kernels.build()")
    assert jax.tree.leaves(params)


def test_a_recorded_onednn_run_loads_where_onednn_is_unavailable(fresh):
    cfg = Config(
        model=ModelConfig(hidden=(4,), kernel_size=3, conv_impl="onednn"),
        process=ProcessConfig(T=20),
    )
    fast = Config(
        model=ModelConfig(hidden=(4,), kernel_size=3, conv_impl="fast"), process=cfg.process
    )
    params = init_params(build(fast), jax.random.key(1))
    ckpt.export_params(fresh / "run", cfg, params, {"epoch": 1})
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        got_cfg, pieces, got_params, _ = load_run(fresh / "run")
        _expect_fast(warned, match="not built")
    assert got_cfg == fast  # the returned config names what runs
    x = generate(got_cfg, pieces, got_params, jax.random.key(2), 2, "ddim", steps=3)
    want = generate(fast, build(fast), params, jax.random.key(2), 2, "ddim", steps=3)
    np.testing.assert_array_equal(x, want)


def test_one_warning_per_process(fresh):
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        for name in ("auto", "onednn", "fast-onednn", "auto"):
            kernels.resolve_conv_impl(name, "cpu")
        assert kernels.resolve_conv_impl("onednn", "gpu") == "xla"
    assert len(warned) == 1 and "not built" in str(warned[0].message)
