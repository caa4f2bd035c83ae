"""Evaluate sample fidelity offline with a shipped MNIST feature network.

Samples a checkpoint with the jitted samplers (or reads a ``.npy`` of samples) and writes a
metrics JSON (Frechet distance and KID with bootstrap CIs, precision/recall, class balance,
confidence, memorisation) and quality-ranked galleries.

Example:
    python experiments/evaluate.py --checkpoint runs/ddpm --n 1000
    python experiments/evaluate.py --checkpoint runs/ddpm --n 1000 --sampler ddim --steps 100
    python experiments/evaluate.py --samples ../shared/anchors/starter_ep50_samples.npy --n 1000
    python experiments/evaluate.py --samples runs/eval/samples.npy --n 1000 --features mlp \
        --out runs/eval_mlp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdiff.app.cli import add_sampling_flags, evaluate_command
from jaxdiff.fidelity.classifier import DEFAULT_FEATURES, FEATURE_NETWORKS


def main(argv: list[str] | None = None) -> int:
    """Parse flags and evaluate."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None, help="run workdir or params folder")
    p.add_argument("--samples", type=Path, default=None, help="a .npy of model-scale samples")
    p.add_argument(
        "--n", type=int, default=1000, help="number of samples (metrics compare at equal N)"
    )
    p.add_argument("--eval-seed", type=int, default=0, help="seed of reference subsets/bootstraps")
    p.add_argument(
        "--features",
        choices=tuple(FEATURE_NETWORKS),
        default=DEFAULT_FEATURES,
        help="feature network of the metrics: lenet (default; every published number) or mlp\n"
        "(a second, independently trained space; docs/evaluation.md)",
    )
    p.add_argument("--batch", type=int, default=500, help="samples per jitted sampler call")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder")
    add_sampling_flags(p)
    return evaluate_command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
