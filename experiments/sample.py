"""Draw samples from a saved run (checkpoint or exported params) without retraining.

Example:
    python experiments/sample.py --checkpoint runs/ddpm --n 64 --seed 0
    python experiments/sample.py --checkpoint runs/ddpm --n 64 --sampler ddim --steps 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdiff.app.cli import add_sampling_flags, sample_command


def main(argv: list[str] | None = None) -> int:
    """Parse flags and sample."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="run workdir or params folder")
    p.add_argument(
        "--out", type=Path, default=None, help="output prefix (default <ckpt>/samples_<seed>)"
    )
    p.add_argument("--n", type=int, default=64, help="number of samples")
    add_sampling_flags(p)
    return sample_command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
