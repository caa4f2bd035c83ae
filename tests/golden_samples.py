"""Golden samples of the committed final models: the refactoring guard of issue 15.

Every ``results/*/final`` params folder must keep loading and sampling bitwise as it did when
its golden record was written. ``tests/golden/samples.json`` maps each folder to the SHA-256
of its ``params.msgpack`` and of the samples that a few short, fixed sampler calls draw from
it (:func:`draw`); ``tests/test_golden.py`` redraws them and compares.

Write (or extend) the record with the code whose behaviour is to be kept, e.g. from a
worktree of the commit before a refactor::

    python tests/golden_samples.py --write results/q1_alt/final
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


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


#: Runs whose record also holds their headline sampler (the slow paths: the 1000-step ancestral
#: sampler, the fitted start-state mixture).
FULL = {"results/q1_default/final", "results/q2_melt/final"}


def draw(final: Path, data_dir: str, full: bool = False) -> dict[str, str]:
    """Hash two samples of each recorded sampler call of a final params folder.

    Every folder: DDPM, DDIM (4 steps, x0 clipped); cold, Alg. 2 (4 steps) from the first two
    test digits degraded to ``t = T``. With ``full``: also the ancestral sampler (DDPM) or
    Alg. 2 from the run's fitted start-state mixture (cold).
    """
    import jax.numpy as jnp

    from jaxdiff import generate, load_run
    from jaxdiff.data import load_mnist, normalize

    try:  # the start-state module of the application layer, where present
        from jaxdiff.app.start_states import start_fn_for
    except ImportError:
        from jaxdiff.app.runner import start_fn_for

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
        out[name] = sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return out


def record_entry(final: Path, data_dir: str) -> dict:
    """The golden record of one final folder: its params hash and its sample hashes."""
    rel = str(final.resolve().relative_to(ROOT))
    return {
        "params_sha256": sha256((final / "params.msgpack").read_bytes()),
        "samples": draw(final, data_dir, full=rel in FULL),
    }


def main() -> None:
    """Write golden records for the given final folders (default: every results/*/final)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", nargs="*", default=None, help="final folders to (re)record")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    args = ap.parse_args()
    finals = [Path(p) for p in args.write] if args.write else sorted(ROOT.glob("results/*/final"))
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    for final in finals:
        rel = str(final.resolve().relative_to(ROOT))
        record[rel] = record_entry(final, args.data_dir)
        print(rel, record[rel]["samples"])
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(dict(sorted(record.items())), indent=2) + "\n")


if __name__ == "__main__":
    main()
