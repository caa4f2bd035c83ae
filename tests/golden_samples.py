"""Golden samples of the committed final models: the refactoring guard of issue 15.

Every ``results/*/final`` params folder must keep loading and sampling as it did when its
golden record was written. ``tests/golden/samples.json`` maps each folder to the SHA-256 of
its ``params.msgpack`` and of the samples that a few short, fixed sampler calls draw from it
(:func:`draw`); ``tests/golden/samples.npz`` holds those samples themselves.
``tests/test_golden.py`` redraws them and compares: bitwise where the process sees as many
CPU cores as the recording did, else to :data:`ATOL`.

Why the core count: XLA:CPU splits reductions (convolutions, matrix products) over its
thread pool, one thread per core the process may use, so the same code and weights give
samples that differ in the last bits between a 1-core and a 2-core process (measured: see
:data:`ATOL`). A refactoring error moves them by far more.

Write (or extend) the record with the code whose behaviour is to be kept, e.g. from a
worktree of the commit before a refactor, on as many cores as CI has (2)::

    git worktree add /tmp/pre <commit>
    PYTHONPATH=/tmp/pre python tests/golden_samples.py --write results/q1_alt/final
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).resolve().parent / "golden" / "samples.json"
ARRAYS = RECORD.with_suffix(".npz")

#: Largest absolute difference allowed per sampler call between processes with different
#: core counts (samples lie in about [-1, 1]): ten times or more the largest difference
#: measured between 1- and 2-core processes with the pre-refactoring code (c4cba89):
#: 2.2e-4 (DDIM, ddpm_alt: 4 clipped steps of a 4-epoch model amplify it), 8e-6 (DDIM,
#: the others), 6.4e-6 (cold, Alg. 2), 3.3e-6 (1000-step ancestral).
ATOL = {"ddim4_clip": 2e-3, "cold2_4_degraded": 1e-4, "cold2_4_fitted": 1e-4, "ancestral": 1e-4}


#: Allowed differences for bfloat16 models between hosts of different instruction sets
#: (:func:`isa`): XLA:CPU vectorises bf16 rounding differently with and without AVX-512, and
#: 4 clipped DDIM steps amplify it. Measured (2026-12-04, records from AVX-512 hosts redrawn on
#: an AVX2-only host, same code): largest absolute difference 5.3e-2 (q2_gaussian), largest
#: mean absolute difference 4.1e-3 (fast); float32 models stayed within :data:`ATOL`. About
#: three times those: a wrong layer or weight moves samples by tenths on average.
CROSS_ISA_BF16 = {"max": 0.15, "mean": 0.015}
#: Factor on :data:`ATOL` for float32 models between hosts of different instruction sets:
#: YNNPACK's fp32 GEMM kernels differ per CPU. Measured (2026-12-06, AVX-512 records redrawn
#: on an AVX-512 + AMX host): q1_default's 1000-step ancestral draw moved by 1.8e-4, 1.8x its
#: ATOL; every other fp32 call stayed within ATOL. Ten times ATOL is still a hundredth of
#: what a wrong layer or weight does.
CROSS_ISA_FP32_FACTOR = 10.0
#: The instruction set of records written before :func:`isa` was recorded (every earlier
#: session's host had AVX-512).
DEFAULT_ISA = "avx512"


def isa() -> str:
    """The vector instruction set XLA:CPU compiles for: ``avx512_amx``, ``avx512``, ``avx2``.

    AMX hosts are their own class: XLA:CPU's bf16 matrix products run on AMX tiles there,
    which round differently from AVX-512 (measured on 2026-12-06: the bf16 ``best`` model's
    4 clipped DDIM steps moved by up to 9.7e-3 against its AVX-512 record; fp32 models stayed
    within :data:`ATOL`).
    """
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags")).split()
    except (OSError, StopIteration):
        import platform

        return platform.machine()
    if "avx512f" in flags:
        return "avx512_amx" if "amx_bf16" in flags else "avx512"
    return "avx2" if "avx2" in flags else "x86"


def cores() -> int:
    """CPU cores this process may run on (what sizes XLA:CPU's thread pool)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


#: Runs whose record also holds their headline sampler (the slow paths: the 1000-step ancestral
#: sampler, the fitted start-state mixture).
FULL = {"results/q1_default/final", "results/q2_melt/final"}


def draw(final: Path, data_dir: str, full: bool = False) -> dict[str, np.ndarray]:
    """Two samples of each recorded sampler call of a final params folder.

    Every folder: DDPM, DDIM (4 steps, x0 clipped); cold, Alg. 2 (4 steps) from the first two
    test digits degraded to ``t = T``. With ``full``: also the ancestral sampler (DDPM) or
    Alg. 2 from the run's fitted start-state mixture (cold).
    """
    import jax.numpy as jnp

    from jaxdiff import generate, load_run
    from jaxdiff.data import load_mnist, normalize

    try:  # the core's start-state module, where present
        from jaxdiff.start_states import start_fn_for
    except ImportError:
        try:
            from jaxdiff.app.runner import start_fn_for
        except ImportError:  # the code before the layered packages (issue 15)
            from jaxdiff.runner import start_fn_for

    cfg, pieces, params, _ = load_run(final)
    key = jax.random.key(7)
    calls = {}
    if cfg.process.kind == "ddpm":
        calls["ddim4_clip"] = ({"sampler": "ddim", "steps": 4, "clip_x0": True}, None)
        if full:
            calls["ancestral"] = ({"sampler": "ancestral"}, None)
    else:
        x0 = jnp.asarray(normalize(load_mnist("test", data_dir)[0][:2]))
        t = jnp.full((2,), cfg.process.T)
        keys = jax.random.split(jax.random.key(3), 2)
        deg = pieces.degrade
        x_T = jax.vmap(lambda x, s, k: deg(x, s, k) if deg.stochastic else deg(x, s))(x0, t, keys)  # noqa: N806

        def fixed_start(_key, n):
            return x_T[:n]

        calls["cold2_4_degraded"] = ({"sampler": "cold2", "steps": 4}, fixed_start)
        if full:
            fitted = start_fn_for(cfg, pieces, data_dir)
            calls["cold2_4_fitted"] = ({"sampler": "cold2", "steps": 4}, fitted)
    out = {}
    for name, (kw, start) in calls.items():
        x = generate(cfg, pieces, params, key, 2, batch=2, start=start, **kw)
        out[name] = np.ascontiguousarray(x, dtype=np.float32)
    return out


def record_entry(final: Path, data_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The golden record of one final folder and its samples.

    Returns:
        ``({"params_sha256", "cores", "isa", "samples": {call: sha256}}, {call: samples})``.
    """
    rel = str(final.resolve().relative_to(ROOT))
    arrays = draw(final, data_dir, full=rel in FULL)
    entry = {
        "params_sha256": sha256((final / "params.msgpack").read_bytes()),
        "cores": cores(),
        "isa": isa(),
        "samples": {k: sha256(v.tobytes()) for k, v in arrays.items()},
    }
    return entry, arrays


def main() -> None:
    """Write golden records for the given final folders (default: every results/*/final)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", nargs="*", default=None, help="final folders to (re)record")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    args = ap.parse_args()
    finals = [Path(p) for p in args.write] if args.write else sorted(ROOT.glob("results/*/final"))
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    arrays = dict(np.load(ARRAYS)) if ARRAYS.exists() else {}
    for final in finals:
        rel = str(final.resolve().relative_to(ROOT))
        record[rel], drawn = record_entry(final, args.data_dir)
        arrays = {k: v for k, v in arrays.items() if not k.startswith(f"{rel}:")}
        arrays.update({f"{rel}:{name}": x for name, x in drawn.items()})
        print(rel, record[rel]["samples"])
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(dict(sorted(record.items())), indent=2) + "\n")
    np.savez_compressed(ARRAYS, **dict(sorted(arrays.items())))


if __name__ == "__main__":
    main()
