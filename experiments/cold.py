"""Train a cold-diffusion restorer with a (custom) image degradation on MNIST.

Same flags and artifacts as ``ddpm.py``, plus ``--degradation`` and ``--loss``, and the figures
``degradation_strip.png``, ``trajectory.png`` and ``restoration.png``.

Example:
    python experiments/cold.py                       # the custom degradation, full MNIST
    python experiments/cold.py --degradation blur --epochs 5
"""

from __future__ import annotations

import sys

from jaxdiff.app.cli import cold_figures_command, common_parser, config_from_args, run_training
from jaxdiff.start_states import start_fn_for


def main(argv: list[str] | None = None) -> int:
    """Parse flags, train, then draw the degradation and trajectory figures."""
    parser = common_parser(__doc__, kind="cold")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, parser, kind="cold")

    def factory(pieces, images):
        return start_fn_for(cfg, pieces, images=images)

    status = run_training(cfg, args, start_fn_factory=factory)
    return status or cold_figures_command(args)


if __name__ == "__main__":
    sys.exit(main())
