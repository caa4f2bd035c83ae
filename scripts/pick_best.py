"""Print the value attached to the evaluation with the lowest FD (a queue's selection rule).

Usage:
    python scripts/pick_best.py EVAL_DIR=VALUE [EVAL_DIR=VALUE ...]

Each EVAL_DIR holds an ``experiments/evaluate.py`` ``metrics.json``. The rule is fixed before
the numbers exist, so a queued run can choose, e.g., a learning rate or a sampler from the
evaluations before it without a person in the loop. Prints the chosen VALUE and, on stderr,
every candidate's FD.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Parse ``DIR=VALUE`` pairs and print the VALUE of the lowest FD."""
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    scored = []
    for arg in argv:
        folder, value = arg.split("=", 1)
        path = Path(folder) / "metrics.json"
        if not path.exists():
            print(f"pick_best: {path} does not exist; run that evaluation first", file=sys.stderr)
            return 1
        fd = float(json.loads(path.read_text())["fd"])
        print(f"pick_best: {folder}: FD {fd:.2f}", file=sys.stderr)
        scored.append((fd, value))
    print(min(scored)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
