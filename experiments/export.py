"""Export one checkpoint of a run as a small standalone parameters folder.

The folder (``params.msgpack`` + ``config.json``) is what ``sample.py`` and ``evaluate.py``
accept as ``--checkpoint``, so a chosen epoch can be committed and re-scored without the
run's (git-ignored) checkpoints.

Example:
    python experiments/export.py --checkpoint results/fast --epoch 2 --out results/fast/ema_ep2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdiff.app.cli import export_command


def main(argv: list[str] | None = None) -> int:
    """Parse flags and export."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="run workdir")
    p.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default latest)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw parameters")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    return export_command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
