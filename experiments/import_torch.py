"""Import the course's PyTorch starter weights (a ``state_dict``) as jaxdiff parameters.

The output folder (``params.msgpack`` + ``config.json``) is what ``sample.py`` and
``evaluate.py`` take as ``--checkpoint``. Needs torch (``pip install torch==2.13.0``).

Example:
    python experiments/import_torch.py --state-dict ../shared/anchors/starter_ep50.pt \
        --out results/anchors/starter_ep50
    python experiments/sample.py --checkpoint results/anchors/starter_ep50 --sampler ancestral
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdiff.app.cli import import_torch_command


def main(argv: list[str] | None = None) -> int:
    """Parse flags and import."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--state-dict", type=Path, required=True, help="a starter .pt state_dict")
    p.add_argument("--out", type=Path, required=True, help="output params folder")
    return import_torch_command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
