"""oneDNN convolutions for XLA:CPU, called through the XLA FFI.

XLA's CPU backend runs 3x3 convolutions at about half the speed of oneDNN, PyTorch's CPU
convolution library (measured on the UNet's layers: ``benchmarks/conv_layers.py``). This
module is the one place that talks to oneDNN: it compiles ``jaxdiff/csrc/onednn_conv.cc``
(three FFI handlers: forward, input gradient, kernel gradient) against the ``onednn-cpu-gomp``
wheel once per machine, caches the shared library, registers the handlers with JAX, and
exposes :func:`conv2d_onednn`, a 'SAME' stride-1 convolution with a ``jax.custom_vjp``. The
same library carries jaxdiff's own kernel for the starter block's LayerNorm + GELU
(``jaxdiff/csrc/plane_ln_gelu.cc``, used by :func:`jaxdiff.fused.layer_norm_gelu_native`),
compiled with ``-march=native``; the cache key names the CPU model and flags.

Nothing happens at import. The first call of :func:`available` (made when a model resolves
``conv_impl="auto"`` on CPU) builds or loads the library; if anything is missing (no C++
compiler, no oneDNN headers, not x86-64 Linux) it records why and ``auto`` keeps the
pure-XLA path. ``JAXDIFF_ONEDNN=0`` switches it off; ``JAXDIFF_CACHE_DIR`` moves the cache
(default ``~/.cache/jaxdiff``).

bfloat16: oneDNN runs bf16 convolutions at speed only on CPUs with bf16 instructions
(``avx512_core_bf16`` and up, :func:`native_bf16`); on plain AVX-512 it emulates them (3.5x
slower than float32, measured) and on AVX2 it has none. Elsewhere bf16 inputs are convolved
in float32 (the casts fuse into the neighbouring XLA ops) and the result is rounded back to
bf16, which is at least as accurate. :func:`cpu_isa` names the instruction set oneDNN uses
(``ONEDNN_MAX_CPU_ISA`` caps it, as for oneDNN itself).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxdiff.paths import cache_root

_SOURCE = Path(__file__).parent / "csrc" / "onednn_conv.cc"
#: Built into the same library: the starter block's LayerNorm + GELU (:mod:`jaxdiff.fused`).
_LN_SOURCE = Path(__file__).parent / "csrc" / "plane_ln_gelu.cc"
_TARGETS = ("fwd", "bwd_data", "bwd_weights")
_LN_TARGETS = ("jaxdiff_plane_ln_gelu_fwd", "jaxdiff_plane_ln_gelu_bwd")
# -march=native: the LayerNorm kernel's channel loops vectorise for this CPU (the cache key
# names the CPU, so a library is never loaded on another one).
_CXXFLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fopenmp",
    "-std=c++17",
    "-shared",
    "-fPIC",
)


def _cpu_signature() -> str:
    """The CPU model and feature flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
    return "\n".join(keep)


class OneDNNUnavailable(RuntimeError):
    """The oneDNN convolution cannot be used on this machine (the message says why)."""


def _prefixes() -> list[Path]:
    """Install prefixes where the onednn wheels put ``lib/`` and ``include/``."""
    roots = [os.environ.get("JAXDIFF_ONEDNN_ROOT"), sysconfig.get_paths()["data"], sys.prefix]
    return [Path(r) for r in dict.fromkeys(r for r in roots if r)]


def _find_onednn() -> tuple[Path, Path]:
    """Return (include dir, lib dir) of an installed oneDNN 3.x."""
    for root in _prefixes():
        inc, lib = root / "include", root / "lib"
        if (inc / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and (lib / "libdnnl.so.3").exists():
            return inc, lib
    raise OneDNNUnavailable(
        "oneDNN headers or library not found under "
        f"{[str(p) for p in _prefixes()]}; install them with "
        "`pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0` "
        "(or set JAXDIFF_ONEDNN_ROOT to a prefix holding include/oneapi/dnnl and lib/libdnnl.so.3)."
    )


def _cache_dir() -> Path:
    return cache_root() / "onednn"


def _build(inc: Path, lib: Path) -> Path:
    """Compile the FFI handlers once per (source, jax, oneDNN, compiler); return the .so."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise OneDNNUnavailable("no C++ compiler found (set CXX, or install g++).")
    jax_inc = Path(jax.ffi.include_dir())
    sources = [_SOURCE.read_bytes(), _LN_SOURCE.read_bytes()]
    parts = [jax.__version__, str(inc), cxx, *_CXXFLAGS, _cpu_signature()]
    key = hashlib.sha256(b"\0".join([*sources, *map(str.encode, parts)])).hexdigest()[:16]
    out = _cache_dir() / key / "libjaxdiff_onednn.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"[jaxdiff] compiling the native CPU kernels (once) into {out}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [cxx, *_CXXFLAGS, f"-I{jax_inc}", f"-I{inc}", str(_SOURCE), str(_LN_SOURCE)]
        cmd += [f"-L{lib}", "-ldnnl"]
        cmd += [f"-Wl,-rpath,{lib}", "-o", str(tmp_out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise OneDNNUnavailable(
                f"compiling {_SOURCE.name} and {_LN_SOURCE.name} failed ({' '.join(cmd)}):\n"
                + proc.stderr[-2000:]
            )
        os.replace(tmp_out, out)  # atomic: a concurrent build leaves one complete file
    return out


@cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """Build, load and register the handlers once per process: (library, why not)."""
    if os.environ.get("JAXDIFF_ONEDNN", "1") == "0":
        return None, "disabled by JAXDIFF_ONEDNN=0"
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"built for x86-64 Linux only (this is {sys.platform} {platform.machine()})"
    try:
        lib = ctypes.CDLL(str(_build(*_find_onednn())))
    except (OneDNNUnavailable, OSError) as e:
        return None, str(e)
    for symbol in (*(f"jaxdiff_onednn_conv_{name}" for name in _TARGETS), *_LN_TARGETS):
        jax.ffi.register_ffi_target(symbol, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    lib.jaxdiff_onednn_has_bf16.restype = ctypes.c_int
    lib.jaxdiff_onednn_isa.restype = ctypes.c_int
    return lib, None


def available() -> bool:
    """Whether the oneDNN convolution can run here (builds the kernels on first call).

    Returns:
        ``True`` on x86-64 Linux with oneDNN and a C++ compiler, unless ``JAXDIFF_ONEDNN=0``.
    """
    return _load()[0] is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is ``False`` (``None`` when it is ``True``)."""
    return _load()[1]


def require() -> None:
    """Build and load the native kernels, or raise why they cannot run here.

    Raises:
        OneDNNUnavailable: Where the library cannot be built or loaded (the message says why
            and what to use instead).
    """
    _require()


def _require() -> ctypes.CDLL:
    lib, why = _load()
    if lib is None:
        raise OneDNNUnavailable(
            f"conv_impl 'onednn' is not available: {why}. Use conv_impl 'auto' (falls back "
            "to XLA's convolution) or 'loopsafe'."
        )
    return lib


#: oneDNN's ``dnnl_cpu_isa_t`` values (``oneapi/dnnl/dnnl_types.h``); each ISA's bits
#: contain those of the ISAs below it.
ISA_BITS = {
    "sse41": 0x1,
    "avx": 0x3,
    "avx2": 0x7,
    "avx2_vnni": 0xF,
    "avx2_vnni_2": 0x1F,
    "avx512_core": 0x27,
    "avx512_core_vnni": 0x67,
    "avx512_core_bf16": 0xE7,
    "avx512_core_fp16": 0x1EF,
    "avx512_core_amx": 0xFEF,
    "avx512_core_amx_fp16": 0x1FEF,
}


@cache
def _isa_value() -> int:
    return int(_require().jaxdiff_onednn_isa())


def has_isa(name: str) -> bool:
    """Whether oneDNN's effective instruction set includes ``name`` (a key of :data:`ISA_BITS`).

    Args:
        name: An ISA name, e.g. ``"avx512_core_bf16"`` or ``"avx512_core_amx"``.

    Returns:
        ``True`` if the CPU has it and ``ONEDNN_MAX_CPU_ISA`` does not cap it away.

    Raises:
        ValueError: For a name not in :data:`ISA_BITS`.
        OneDNNUnavailable: Where oneDNN cannot run.
    """
    if name not in ISA_BITS:
        raise ValueError(f"unknown oneDNN ISA {name!r}; choose from {sorted(ISA_BITS)}.")
    bits = ISA_BITS[name]
    return _isa_value() & bits == bits


def cpu_isa() -> str:
    """The name of the most capable instruction set oneDNN uses on this CPU.

    Returns:
        A key of :data:`ISA_BITS`, e.g. ``"avx2"`` or ``"avx512_core_amx"`` (``"unknown"``
        for a value this table does not know).

    Raises:
        OneDNNUnavailable: Where oneDNN cannot run.
    """
    value = _isa_value()
    return next((n for n, b in ISA_BITS.items() if b == value), "unknown")


@cache
def native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively (``avx512_core_bf16`` and up)."""
    return has_isa("avx512_core_bf16") and bool(_require().jaxdiff_onednn_has_bf16())


def _call(name: str, out: jax.ShapeDtypeStruct, *args: jax.Array) -> jax.Array:
    return jax.ffi.ffi_call(f"jaxdiff_onednn_conv_{name}", out, vmap_method="sequential")(*args)


@jax.custom_vjp
def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _call("fwd", jax.ShapeDtypeStruct((*x.shape[:3], kernel.shape[3]), x.dtype), x, kernel)


def _conv_fwd(x, kernel):
    return _conv(x, kernel), (x, kernel)


def _conv_bwd(res, dy):
    x, kernel = res
    dy = dy.astype(x.dtype)
    dx = _call("bwd_data", jax.ShapeDtypeStruct(x.shape, x.dtype), dy, kernel)
    dk = _call("bwd_weights", jax.ShapeDtypeStruct(kernel.shape, jnp.float32), x, dy)
    return dx, dk.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d_onednn(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'SAME' stride-1 cross-correlation (NHWC x HWIO) by oneDNN, with oneDNN gradients.

    Same contract as :func:`jaxdiff.ops.conv2d_reference`. The forward pass, the input
    gradient and the kernel gradient (accumulated in ``float32``) are each one oneDNN
    primitive, built once per shape and cached. ``bfloat16`` inputs are convolved natively
    where the CPU has bf16 instructions (:func:`native_bf16`), else in ``float32`` and
    rounded back.

    Args:
        x: Input ``(B, H, W, Cin)``, ``float32`` or ``bfloat16``.
        kernel: Kernel ``(kh, kw, Cin, Cout)``, odd sizes, same dtype as ``x``.

    Returns:
        Output ``(B, H, W, Cout)`` in ``x.dtype``.

    Raises:
        OneDNNUnavailable: Where oneDNN cannot run (the message says why and what to use).
        ValueError: For other dtypes (only ``float32`` and ``bfloat16``).
    """
    from jaxdiff.ops import _check_shapes

    _check_shapes(x.shape, kernel.shape, "NHWC")
    _require()
    if x.dtype not in (jnp.float32, jnp.bfloat16) or kernel.dtype != x.dtype:
        raise ValueError(
            f"conv2d_onednn takes float32 or bfloat16 x and a kernel of the same dtype, got "
            f"{x.dtype} and {kernel.dtype}."
        )
    if x.dtype == jnp.bfloat16 and not native_bf16():
        return _conv(x.astype(jnp.float32), kernel.astype(jnp.float32)).astype(x.dtype)
    return _conv(x, kernel)
