"""Calibrate the fidelity metrics on sets of known quality, and score the starter anchors.

Writes ``calibration.json`` (all metrics) and ``calibration.md`` (the table) to ``--out``.

Example:
    python experiments/calibrate_metrics.py --n 1000 --seed 0 \
        --data-dir ../shared/data/mnist --anchors ../shared/anchors --out runs/calibration
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxdiff.app.cli import USER_ERRORS, check_paths, fail
from jaxdiff.data import load_mnist, normalize
from jaxdiff.fidelity import evaluation as E
from jaxdiff.paths import atomic_write, check_readable_dir


def main(argv: list[str] | None = None) -> None:
    """Parse flags, build the sets, evaluate each with one reference, write JSON + table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--anchors", default=None, help="folder with starter_ep*_samples.npy")
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--out", default="runs/calibration")
    args = p.parse_args(argv)
    try:
        check_paths(data_dir=args.data_dir, out_dir=Path(args.out))
        if args.anchors:
            check_readable_dir(args.anchors, "--anchors", "starter_ep*_samples.npy files")
    except USER_ERRORS as err:
        sys.exit(fail(str(err)))

    x_tr, _ = load_mnist("train", args.data_dir)
    x_te, y_te = load_mnist("test", args.data_dir)
    extra = {}
    if args.anchors:
        for path in sorted(Path(args.anchors).glob("starter_ep*_samples.npy")):
            extra[f"anchor {path.stem.replace('_samples', '')}"] = np.load(path)[: args.n]

    def log(name: str, m: dict) -> None:
        print(
            f"{name}: fd={m['fd']:.2f} kid={m['kid']:.4f} p={m['precision']:.3f} "
            f"r={m['recall']:.3f} kl={m['class_kl']:.3f} conf={m['confidence']:.3f} "
            f"({m['seconds']}s)",
            flush=True,
        )

    t0 = time.time()
    rows = E.calibrate(
        normalize(x_tr), normalize(x_te), y_te, args.seed, args.n, args.n_boot, extra, log
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "calibration.json", json.dumps(rows, indent=1) + "\n")
    atomic_write(out / "calibration.md", E.metrics_table(rows) + "\n")
    print(E.metrics_table(rows))
    print(f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
