"""The native build: jaxdiff's oneDNN convolution kernels, compiled once per machine, on request.

This module is the one place that runs a compiler or loads a shared library. It compiles
``jaxdiff/kernels/csrc/onednn_conv.cc`` (three XLA FFI handlers: forward, input gradient,
kernel gradient) against the ``onednn-cpu-gomp`` wheel, caches the library under
``<cache>/onednn/<key>/`` (:func:`jaxdiff.paths.cache_root`; the key hashes the source, the
jax version, the oneDNN install and the flags), loads it and registers the handlers with JAX.

**When.** Only :func:`build` compiles. The drivers (``experiments/*.py``, through
:mod:`jaxdiff.app.cli`) and ``scripts/install.sh`` call it up front, with a progress line;
everything else (resolving ``conv_impl="auto"`` inside ``model.init``, a notebook) only
*loads* a library that is already built (:func:`available`), and otherwise runs the pure-JAX
convolutions: no compiler ever runs in the middle of a trace.

**Never a crash.** Any failure to build or load (not x86-64 Linux, no oneDNN, no compiler, a
failed compile, a library missing a symbol, an ``OSError`` from the loader, an
``AttributeError`` from a jax without ``jax.ffi``) is caught and recorded
(:func:`unavailable_reason`); :mod:`jaxdiff.kernels.registry` then runs the pure-JAX path and
:func:`warn_fallback` says so once per process, with the reason and the cost.
``JAXDIFF_ONEDNN=0`` switches the native path off.

bfloat16: oneDNN runs bf16 convolutions at speed only on CPUs with bf16 instructions
(``avx512_core_bf16`` and up, :func:`native_bf16`); on plain AVX-512 it emulates them (3.5x
slower than float32, measured) and on AVX2 it has none. :func:`cpu_isa` names the instruction
set oneDNN uses (``ONEDNN_MAX_CPU_ISA`` caps it, as for oneDNN itself).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from functools import cache
from pathlib import Path

from jaxdiff.paths import cache_root

_SOURCE = Path(__file__).parent / "csrc" / "onednn_conv.cc"
#: The FFI handlers the library must export (registered with JAX under these names).
SYMBOLS = (
    "jaxdiff_onednn_conv_fwd",
    "jaxdiff_onednn_conv_bwd_data",
    "jaxdiff_onednn_conv_bwd_weights",
)
# No -march=native: the source only calls oneDNN, which picks its kernels for the CPU at run
# time, so one library serves every x86-64 CPU.
_CXXFLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
#: Seconds a build takes, the progress line's estimate (measured: 4.9 s on a 2-core AMD EPYC
#: shared with a training job, load average 4.8).
BUILD_SECONDS = 5
#: What running without the native kernels costs, named in the fallback warning
#: (``docs/benchmarks.md``: ``fast`` against ``auto``, the UNet's fp32 training step in a scan
#: 2.1x on an AVX-512 host, its bf16 step 1.3x on an AVX2 host).
FALLBACK_COST = "training and sampling on CPU run about 1.3-2x slower"
_BUILD_HINT = "call jaxdiff.kernels.build() once per machine, or run scripts/install.sh"


class OneDNNUnavailable(RuntimeError):
    """The oneDNN convolution cannot be used on this machine (the message says why)."""


class KernelFallbackWarning(UserWarning):
    """The native kernels are not used; the pure-JAX convolutions run instead (slower)."""


# Why the kernels are not in use: the platform or JAXDIFF_ONEDNN=0 rules them out (expected,
# `auto` stays quiet), they are not built yet (build() would help), or building or loading
# them failed.
UNSUPPORTED, DISABLED, NOT_BUILT, FAILED = "unsupported", "disabled", "not built", "failed"


@dataclasses.dataclass
class _State:
    lib: ctypes.CDLL | None = None
    isa: int = 0
    reason: str | None = None
    kind: str | None = None  # None while loaded (or not yet probed), else one of the above
    settled: bool = False  # loaded, or ruled out for good in this process
    warned: bool = False


_STATE = _State()
_REGISTERED: set[str] = set()


def _reset() -> None:
    """Forget what this process found (tests: probe again, warn again)."""
    global _STATE
    _STATE = _State()
    native_bf16.cache_clear()


def _unsupported() -> str | None:
    """Why this platform has no native kernels (``None`` on x86-64 Linux)."""
    if sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64"):
        return None
    return f"built for x86-64 Linux only (this is {sys.platform} {platform.machine()})"


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
        "(or set JAXDIFF_ONEDNN_ROOT to a prefix holding include/oneapi/dnnl and lib/libdnnl.so.3)"
    )


def _library_path(inc: Path, lib: Path) -> Path:
    """Where the library for this source, jax, oneDNN install and flags lives in the cache."""
    import jax

    parts = [jax.__version__, str(inc), str((lib / "libdnnl.so.3").resolve()), *_CXXFLAGS]
    key = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), *map(str.encode, parts)]))
    return cache_root() / "onednn" / key.hexdigest()[:16] / "libjaxdiff_onednn.so"


def _compile(out: Path, inc: Path, lib: Path, verbose: bool) -> None:
    """Compile the FFI handlers into ``out`` (atomically), announcing it when ``verbose``."""
    import jax

    name = os.environ.get("CXX", "g++")
    cxx = shutil.which(name)
    if cxx is None:
        raise OneDNNUnavailable(
            f"no C++ compiler found ({name!r} is not on PATH; install g++ or set CXX)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(
            f"[jaxdiff] compiling native CPU kernels (once, ~{BUILD_SECONDS} s) into {out.parent}",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [cxx, *_CXXFLAGS, f"-I{jax.ffi.include_dir()}", f"-I{inc}", str(_SOURCE)]
        cmd += [f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-o", str(tmp_out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise OneDNNUnavailable(
                f"compiling {_SOURCE.name} failed (exit status {proc.returncode}; "
                f"{' '.join(cmd)}): {proc.stderr[-800:].strip()}"
            )
        os.replace(tmp_out, out)  # atomic: a concurrent build leaves one complete file
    if verbose:
        print(
            f"[jaxdiff] native CPU kernels built in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
            flush=True,
        )


def _load(path: Path) -> None:
    """Load the library at ``path`` and register its handlers with JAX."""
    import jax

    lib = ctypes.CDLL(str(path))
    # every symbol before registering any: a library missing one is not half-registered
    capsules = {name: jax.ffi.pycapsule(getattr(lib, name)) for name in SYMBOLS}
    lib.jaxdiff_onednn_isa.restype = ctypes.c_int
    lib.jaxdiff_onednn_has_bf16.restype = ctypes.c_int
    isa = int(lib.jaxdiff_onednn_isa())
    for name, capsule in capsules.items():
        if name not in _REGISTERED:
            jax.ffi.register_ffi_target(name, capsule, platform="cpu")
            _REGISTERED.add(name)
    _STATE.lib, _STATE.isa = lib, isa


def _probe(compile: bool, verbose: bool = False) -> None:
    """Load the library if it is built (building it first if ``compile``), or record why not."""
    s = _STATE
    if s.settled:
        return
    if os.environ.get("JAXDIFF_ONEDNN", "1") == "0":
        s.reason, s.kind, s.settled = "disabled by JAXDIFF_ONEDNN=0", DISABLED, True
        return
    unsupported = _unsupported()
    if unsupported:
        s.reason, s.kind, s.settled = unsupported, UNSUPPORTED, True
        return
    try:
        inc, lib = _find_onednn()
        path = _library_path(inc, lib)
        if not path.is_file():
            if not compile:
                s.reason, s.kind = f"they are not built on this machine ({_BUILD_HINT})", NOT_BUILT
                return
            _compile(path, inc, lib, verbose)
        _load(path)
    except Exception as e:  # never a crash: whatever goes wrong, the pure-JAX path runs
        s.lib = None
        s.reason = str(e) if isinstance(e, OneDNNUnavailable) else f"{type(e).__name__}: {e}"
        s.kind = FAILED
    else:
        s.reason = s.kind = None
    s.settled = True


def build(verbose: bool = True) -> bool:
    """Compile (once per machine) and load the native CPU kernels; never raises.

    The drivers and ``scripts/install.sh`` call this before anything is traced, so that the
    compiler runs announced (a progress line on stderr) and not inside ``model.init``. A
    library already in the cache is only loaded. Where building or loading fails, the pure-JAX
    path runs instead and one :class:`KernelFallbackWarning` names the reason and the cost.

    Args:
        verbose: Print the progress line when compiling (and why nothing is built where the
            kernels do not apply).

    Returns:
        Whether the native kernels are loaded and usable (:func:`available`).
    """
    _probe(compile=True, verbose=verbose)
    if _STATE.kind == FAILED:
        warn_fallback("fast")
    elif _STATE.kind in (UNSUPPORTED, DISABLED) and verbose:
        print(f"[jaxdiff] native CPU kernels not used: {_STATE.reason}", file=sys.stderr)
    return _STATE.lib is not None


def available() -> bool:
    """Whether the native kernels are loaded (loading a built library; never compiles).

    Returns:
        ``True`` once :func:`build` (here or in an earlier process on this machine) built
        them and they loaded.
    """
    _probe(compile=False)
    return _STATE.lib is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is ``False`` (``None`` when it is ``True``)."""
    _probe(compile=False)
    return _STATE.reason


def expected_absence() -> bool:
    """Whether the kernels are absent by design here (another platform, ``JAXDIFF_ONEDNN=0``).

    ``auto`` then runs the pure-JAX path without a warning; a failure or a missing build
    warns (:func:`warn_fallback`).
    """
    _probe(compile=False)
    return _STATE.kind in (UNSUPPORTED, DISABLED)


def warn_fallback(fallback: str, reason: str | None = None, cost: str = FALLBACK_COST) -> None:
    """Warn, once per process, that the pure-JAX ``fallback`` runs instead of the native path.

    Args:
        fallback: The implementation that runs instead (e.g. ``"fast"``).
        reason: Why; default :func:`unavailable_reason`.
        cost: What it costs (default :data:`FALLBACK_COST`).
    """
    if _STATE.warned:
        return
    _STATE.warned = True
    why = reason or unavailable_reason() or "unknown"
    warnings.warn(
        f"jaxdiff's native CPU kernels (oneDNN convolutions) are not used: {why}. Falling back "
        f"to the pure-JAX convolutions ({fallback!r}): {cost}.",
        KernelFallbackWarning,
        stacklevel=3,
    )


def require() -> None:
    """Load the native kernels, or raise why they cannot run here (never compiles).

    Raises:
        OneDNNUnavailable: Where the library is not built, cannot be built or cannot be
            loaded (the message says why and what to use instead).
    """
    _require()


def _require() -> ctypes.CDLL:
    if not available():
        raise OneDNNUnavailable(
            f"the oneDNN convolution is not available: {_STATE.reason}. Use conv_impl 'auto' "
            "or a name such as 'onednn' through jaxdiff.kernels.get_conv (both fall back to "
            "the pure-JAX path), or 'fast'."
        )
    return _STATE.lib


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


def has_isa(name: str) -> bool:
    """Whether oneDNN's effective instruction set includes ``name`` (a key of :data:`ISA_BITS`).

    Args:
        name: An ISA name, e.g. ``"avx512_core_bf16"`` or ``"avx512_core_amx"``.

    Returns:
        ``True`` if the CPU has it and ``ONEDNN_MAX_CPU_ISA`` does not cap it away.

    Raises:
        ValueError: For a name not in :data:`ISA_BITS`.
        OneDNNUnavailable: Where the native kernels are not available.
    """
    if name not in ISA_BITS:
        raise ValueError(f"unknown oneDNN ISA {name!r}; choose from {sorted(ISA_BITS)}.")
    _require()
    bits = ISA_BITS[name]
    return _STATE.isa & bits == bits


def cpu_isa() -> str:
    """The name of the most capable instruction set oneDNN uses on this CPU.

    Returns:
        A key of :data:`ISA_BITS`, e.g. ``"avx2"`` or ``"avx512_core_amx"`` (``"unknown"``
        for a value this table does not know).

    Raises:
        OneDNNUnavailable: Where the native kernels are not available.
    """
    _require()
    return next((n for n, b in ISA_BITS.items() if b == _STATE.isa), "unknown")


@cache
def native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively (``avx512_core_bf16`` and up).

    Raises:
        OneDNNUnavailable: Where the native kernels are not available.
    """
    return has_isa("avx512_core_bf16") and bool(_require().jaxdiff_onednn_has_bf16())
