"""Draw samples from a saved run (checkpoint or exported params) without retraining.

Example:
    python experiments/sample.py --checkpoint runs/ddpm --n 64 --seed 0
    python experiments/sample.py --checkpoint runs/ddpm --n 64 --sampler ddim --steps 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdiff.app.cli import add_sampling_conv_impl, sample_command


def main(argv: list[str] | None = None) -> int:
    """Parse flags and sample."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="run workdir or params folder")
    p.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default latest)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw parameters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sampler", default=None, help="ancestral|ddim|dpmpp (DDPM), cold1|cold2 (cold)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="DDIM (default 100) / dpmpp (20) / cold steps"
    )
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument(
        "--sample-noise",
        type=float,
        default=None,
        help="cold: step noise of the reverse process (default: the run's own)",
    )
    p.add_argument(
        "--clip-x0",
        nargs="?",
        const="wide",
        default=None,
        choices=("wide", "data"),
        help="ddim/dpmpp: clip predicted clean images, to [-1, 1] (wide, the default) or to "
        "the data range [-0.5, 0.5] (data)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output prefix (default <ckpt>/samples_<seed>)"
    )
    p.add_argument("--data-dir", default=None, help="MNIST folder (cold start-state fit)")
    add_sampling_conv_impl(p)
    return sample_command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
