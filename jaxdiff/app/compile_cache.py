"""JAX's persistent compilation cache for the drivers, applied on request (never at import).

Compiling the scanned training epoch and the samplers is most of a short run's start-up on
a CPU (measured in ``docs/benchmarks.md``, *Time to the first epoch*). With the cache on,
XLA's compiled programs are written to disk, and the next process that traces the same
program (the same model, batch, precision and jax version) loads it instead of compiling.
Results are unchanged: a loaded program is the one that was compiled.

The folder is ``<cache_root>/xla/<tag>``, where the tag names the jax version, the machine
type and the host's vector extensions: XLA:CPU compiles for the instructions of the CPU it
runs on, so a cache shared between machines (a home folder on NFS) must not hand an
AVX-512 program to a CPU without AVX-512.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

from jaxdiff.paths import cache_root

#: Set to ``0`` to leave the cache off.
ENV_VAR = "JAXDIFF_XLA_CACHE"
#: Programs that compile faster than this are not written (jax's own default is 1 s).
MIN_COMPILE_SECONDS = 0.5


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor()


def cache_tag() -> str:
    """The name of this host's cache folder: jax version, machine and CPU-feature digest.

    Returns:
        e.g. ``"jax0.10.2-x86_64-1a2b3c4d5e6f"``.
    """
    import jax

    digest = hashlib.sha256(_cpu_flags().encode()).hexdigest()[:12]
    return f"jax{jax.__version__}-{platform.machine()}-{digest}"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache for this process.

    Called by the command-line drivers (:func:`jaxdiff.app.cli.tune_process`), not by the
    library's ``fit`` or ``generate``. A ``JAX_COMPILATION_CACHE_DIR`` the user set
    (jax's own setting) is kept as it is; ``JAXDIFF_XLA_CACHE=0`` leaves the cache off.
    Programs compiled before the call are not cached; later ones are.

    Args:
        path: The folder to use (default ``<cache_root>/xla/<cache_tag()>``).

    Returns:
        The cache folder in use, or None when the cache is left off.
    """
    import jax

    if os.environ.get(ENV_VAR, "1") == "0":
        return None
    current = jax.config.jax_compilation_cache_dir
    if current and path is None:
        return Path(current)
    folder = Path(path) if path is not None else cache_root() / "xla" / cache_tag()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache only costs compile time; never fail a run for it
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder
