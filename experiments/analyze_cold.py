"""Analyse a trained cold-diffusion run: restoration error against t, start-state samplers.

Writes ``restoration.json``, ``restoration_error.png``, ``start_states.json`` and one grid per
start-state sampler into ``--out`` (see :func:`jaxdiff.app.cold_analysis.analyze_cold_run`).

Example:
    python experiments/analyze_cold.py --checkpoint results/q2_melt --out results/q2_melt/analysis
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxdiff.app.cli import USER_ERRORS, check_paths, fail


def main(argv: list[str] | None = None) -> int:
    """Parse flags and write the analyses."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="cold run folder or export folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=int, default=1000, help="samples per start-state sampler")
    p.add_argument("--seed", type=int, default=0, help="seed of every key")
    p.add_argument("--n-restore", type=int, default=500, help="test digits restored per t")
    p.add_argument("--data-dir", default=None, help="MNIST folder (else $JAXDIFF_DATA_DIR)")
    args = p.parse_args(argv)
    try:
        check_paths(data_dir=args.data_dir, checkpoint=args.checkpoint, out_dir=args.out)
        from jaxdiff.app.cold_analysis import analyze_cold_run

        res = analyze_cold_run(
            args.checkpoint, args.out, args.n, args.seed, args.data_dir, args.n_restore
        )
    except USER_ERRORS as err:
        return fail(str(err))
    rows = res["start_states"]["rows"]
    print(json.dumps({k: round(v["fd"], 1) for k, v in rows.items() if "fd" in v}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
