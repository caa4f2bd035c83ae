"""Train the course's DDPM (the starter recipe by default) on MNIST.

Example:
    python experiments/ddpm.py --lr 2e-4
    python experiments/ddpm.py --epochs 1 --limit 2048 --workdir runs/quick
"""

from __future__ import annotations

import sys

from jaxdiff.app.cli import common_parser, config_from_args, run_training


def main(argv: list[str] | None = None) -> int:
    """Parse flags and train."""
    parser = common_parser(__doc__, kind="ddpm")
    args = parser.parse_args(argv)
    return run_training(config_from_args(args, parser, kind="ddpm"), args)


if __name__ == "__main__":
    sys.exit(main())
