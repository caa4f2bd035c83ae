"""oneDNN's convolution through the XLA FFI equals XLA's, forward and backward.

These tests need the native kernels: they build them once (``jaxdiff.kernels.build``) and
skip, with the reason, where they cannot be built (not x86-64 Linux, no C++ compiler). What
happens then (the pure-JAX fallback and its warning) is tested in ``tests/test_kernels.py``.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_ops import _inputs, _value_and_grads

from jaxdiff import kernels
from jaxdiff.kernels import conv, native, onednn

ROOT = Path(__file__).resolve().parents[1]
X86_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"
HAS_CXX = shutil.which(os.environ.get("CXX", "g++")) is not None


@pytest.fixture(scope="module")
def built():
    """The native kernels, built (or loaded) once; a skip where they cannot be built."""
    if not X86_LINUX:
        pytest.skip("the oneDNN kernels are built for x86-64 Linux only")
    if not HAS_CXX and not native.available():
        pytest.skip("no C++ compiler (g++, or $CXX) on PATH to build the oneDNN kernels")
    # With a compiler and the package's dependencies the build must succeed: a silent
    # fallback would hide a broken build behind the slower path.
    assert native.build(verbose=False), native.unavailable_reason()


needs_onednn = pytest.mark.usefixtures("built")

# (batch, height, width, c_in, c_out, kernel): the UNet's and classifier's layers, odd shapes.
SHAPES = [
    (4, 28, 28, 1, 32, 3),
    (3, 14, 14, 64, 64, 3),
    (2, 9, 13, 5, 3, 3),
    (2, 28, 28, 1, 8, 5),
    (2, 7, 7, 6, 4, 1),
    (2, 12, 10, 3, 5, 7),
    (2, 28, 28, 1, 16, 7),  # the starter's first layer (oneDNN under "fast-onednn")
]


@needs_onednn
def test_available_once_built():
    assert native.available() and native.unavailable_reason() is None


@needs_onednn
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp32_equals_reference_forward_and_backward(shape):
    x, kernel, cot = _inputs(*shape)
    y, (dx, dk) = _value_and_grads(onednn.conv2d_onednn, x, kernel, cot, jnp.float32)
    y0, (dx0, dk0) = _value_and_grads(conv.conv2d_reference, x, kernel, cot, jnp.float32)
    np.testing.assert_allclose(y, y0, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dx, dx0, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dk, dk0, atol=2e-4 * float(jnp.abs(dk0).max()), rtol=1e-4)


@needs_onednn
@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
def test_bf16_within_bf16_rounding(shape):
    x, kernel, cot = _inputs(*shape, seed=1)
    y, (dx, dk) = _value_and_grads(onednn.conv2d_onednn, x, kernel, cot, jnp.bfloat16)
    y0, (dx0, dk0) = _value_and_grads(conv.conv2d_reference, x, kernel, cot, jnp.float32)
    for a, b in ((y, y0), (dx, dx0), (dk, dk0)):
        a = a.astype(jnp.float32)
        # bf16 inputs carry 2^-8 relative rounding; sums of k*k*c terms stay within a few %.
        assert float(jnp.abs(a - b).max()) < 0.03 * float(jnp.abs(b).max())
    out = onednn.conv2d_onednn(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16


@needs_onednn
def test_inside_scan_equals_outside_and_is_deterministic():
    x, kernel, cot = _inputs(2, 14, 14, 8, 8, 3)

    def grads(x):
        return jax.grad(lambda x, k: jnp.sum(onednn.conv2d_onednn(x, k) * cot), (0, 1))(x, kernel)

    def body(c, _):
        dx, dk = grads(x + c)
        return c, (dx, dk)

    _, (dxs, dks) = jax.jit(lambda: jax.lax.scan(body, jnp.float32(0), None, length=3))()
    dx, dk = jax.jit(grads)(x)
    for i in range(3):
        np.testing.assert_array_equal(dxs[i], dx)
        np.testing.assert_array_equal(dks[i], dk)


@needs_onednn
def test_fast_onednn_sends_small_kernels_to_onednn_and_large_to_fourier():
    x, kernel3, _ = _inputs(2, 12, 12, 12, 6, 3)
    _, kernel7, _ = _inputs(2, 12, 12, 12, 6, 7)
    np.testing.assert_array_equal(
        onednn.conv2d_fast_onednn(x, kernel3), onednn.conv2d_onednn(x, kernel3)
    )
    np.testing.assert_array_equal(
        onednn.conv2d_fast_onednn(x, kernel7), conv.conv2d_fourier(x, kernel7)
    )
    # ... unless the large kernel has few input channels (the starter's first layer).
    assert onednn.ONEDNN_MAX_CIN < 12
    x1, kernel7_1, _ = _inputs(2, 12, 12, onednn.ONEDNN_MAX_CIN, 6, 7)
    np.testing.assert_array_equal(
        onednn.conv2d_fast_onednn(x1, kernel7_1), onednn.conv2d_onednn(x1, kernel7_1)
    )
    assert kernels.get_conv("fast-onednn") is onednn.conv2d_fast_onednn


@needs_onednn
def test_bad_inputs_get_one_clear_error():
    x = jnp.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        onednn.conv2d_onednn(x.astype(jnp.float16), jnp.zeros((3, 3, 3, 2), jnp.float16))
    with pytest.raises(ValueError, match="same dtype"):
        onednn.conv2d_onednn(x, jnp.zeros((3, 3, 3, 2), jnp.bfloat16))
    with pytest.raises(ValueError, match="kernel expects 4"):
        onednn.conv2d_onednn(x, jnp.zeros((3, 3, 4, 2)))
    with pytest.raises(ValueError, match="odd sizes"):
        onednn.conv2d_onednn(x, jnp.zeros((2, 2, 3, 2)))


_PROBE = """
import json, sys, warnings
import jax.numpy as jnp
from jaxdiff import kernels
from jaxdiff.kernels import conv, native
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    built = kernels.build(verbose=False) if "build" in sys.argv else None
    out = {"built": built, "available": kernels.available(), "why": kernels.unavailable_reason(),
           "auto": kernels.resolve_conv_impl("auto", "cpu")}
    if out["available"]:
        out["isa"] = native.cpu_isa()
        out["native_bf16"] = native.native_bf16()
    out["onednn_is"] = kernels.get_conv("onednn").__name__
out["warnings"] = [str(w.message) for w in caught]
print(json.dumps(out))
"""


def _probe(tmp_path, *args, fresh_cache=True, **env):
    full = {**os.environ, **env}
    if fresh_cache:
        full["JAXDIFF_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=full, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_disabled_falls_back_quietly_for_auto_and_with_a_warning_for_a_name(tmp_path):
    out = _probe(tmp_path, "build", JAXDIFF_ONEDNN="0")
    assert not out["built"] and not out["available"] and "JAXDIFF_ONEDNN=0" in out["why"]
    assert out["auto"] == "fast" and out["onednn_is"] == "conv2d_fourier"
    assert len(out["warnings"]) == 1 and "JAXDIFF_ONEDNN=0" in out["warnings"][0]


@needs_onednn
def test_builds_into_a_fresh_cache_only_when_asked(tmp_path):
    out = _probe(tmp_path)  # a library that is not built is not built by resolving "auto"
    assert not out["available"] and "not built" in out["why"] and out["auto"] == "fast"
    assert not (tmp_path / "cache" / "onednn").exists()
    out = _probe(tmp_path, "build")
    assert out["built"] and out["auto"] in ("onednn", "fast-onednn") and not out["warnings"]
    assert out["onednn_is"] == "conv2d_onednn"
    assert len(list((tmp_path / "cache" / "onednn").glob("*/libjaxdiff_onednn.so"))) == 1
    out = _probe(tmp_path)  # built once: later processes load it
    assert out["available"] and out["auto"] in ("onednn", "fast-onednn")


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


@needs_onednn
def test_isa_matches_the_cpu_and_picks_auto():
    flags = _cpu_flags()
    assert native.cpu_isa() in native.ISA_BITS
    assert native.has_isa("avx2") == ("avx2" in flags)
    assert native.has_isa("avx512_core_bf16") == ({"avx512f", "avx512_bf16"} <= flags)
    assert native.has_isa("avx512_core_amx") == ({"amx_bf16", "amx_tile"} <= flags)
    assert native.native_bf16() == native.has_isa("avx512_core_bf16")
    amx = native.has_isa("avx512_core_amx")
    assert kernels.resolve_conv_impl("auto", "cpu") == ("onednn" if amx else "fast-onednn")
    with pytest.raises(ValueError, match="unknown oneDNN ISA 'avx9'"):
        native.has_isa("avx9")


@needs_onednn
@pytest.mark.parametrize(
    ("cap", "auto", "bf16"),
    [("AVX2", "fast-onednn", False), ("AVX512_CORE", "fast-onednn", False)],
)
def test_capped_isa_keeps_the_fourier_path_and_emulated_bf16_off(tmp_path, cap, auto, bf16):
    # ONEDNN_MAX_CPU_ISA caps what oneDNN uses: without AMX `auto` keeps the Fourier path for
    # large kernels, and without bf16 instructions bf16 is convolved in float32.
    if not native.has_isa(cap.lower()):
        pytest.skip(f"this CPU lacks {cap}")
    out = _probe(tmp_path, fresh_cache=False, ONEDNN_MAX_CPU_ISA=cap)
    assert out["isa"] == cap.lower()
    assert out["auto"] == auto and out["native_bf16"] is bf16


@needs_onednn
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_starter_cnn_on_the_onednn_path_equals_the_fourier_path(precision):
    # the same parameters through conv_impl "onednn" (oneDNN's direct convolutions, what
    # `auto` picks with AMX) and "fast" (Fourier convolutions): same values and gradients up
    # to rounding.
    from jaxdiff.config import ModelConfig
    from jaxdiff.models import build_model

    models = {
        impl: build_model(ModelConfig(precision=precision, conv_impl=impl))
        for impl in ("onednn", "fast")
    }
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
    t = jnp.array([0.05, 0.3, 0.6, 0.95])
    params = models["fast"].init(jax.random.key(1), x, t)

    def loss(m, p):
        return jnp.mean(jnp.square(m.apply(p, x, t)))

    out = {k: jax.jit(jax.value_and_grad(partial(loss, m)))(params) for k, m in models.items()}
    tol = 1e-4 if precision == "fp32" else 2e-2
    (l1, g1), (l2, g2) = out["onednn"], out["fast"]
    assert abs(float(l1) - float(l2)) <= tol * abs(float(l2))
    top = max(float(jnp.abs(b).max()) for b in jax.tree.leaves(g2))
    flat1 = jax.tree_util.tree_flatten_with_path(g1)[0]
    for (path, a), b in zip(flat1, jax.tree.leaves(g2), strict=True):
        name = jax.tree_util.keystr(path)
        if "CNNBlock" in name and "Conv_0" in name and "bias" in name:
            # a conv bias before a plane LayerNorm cancels in it: rounding noise on both paths
            assert max(float(jnp.abs(a).max()), float(jnp.abs(b).max())) <= 1e-4 * top, name
        else:  # fp32: per parameter; bf16: on the largest gradient's scale (bf16 rounding)
            scale = float(jnp.abs(b).max()) if precision == "fp32" else top
            assert float(jnp.abs(a - b).max()) <= tol * scale, name
