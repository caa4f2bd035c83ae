"""Train the MNIST feature network used by the fidelity metrics and write it as an asset.

Example:
    python experiments/train_classifier.py --epochs 6 --seed 0 \
        --data-dir ../shared/data/mnist --out jaxdiff/fidelity/assets/classifier.msgpack
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jaxdiff.app.cli import USER_ERRORS, check_paths, fail
from jaxdiff.data import load_mnist, normalize
from jaxdiff.fidelity import classifier as C


def main(argv: list[str] | None = None) -> None:
    """Parse flags, train, report test accuracy, save params and card."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(C.DEFAULT_PARAMS))
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-shift", type=int, default=2)
    args = p.parse_args(argv)
    try:
        check_paths(data_dir=args.data_dir, out_file=Path(args.out))
    except USER_ERRORS as err:
        sys.exit(fail(str(err)))

    x_tr, y_tr = load_mnist("train", args.data_dir)
    x_te, y_te = load_mnist("test", args.data_dir)
    t0 = time.time()
    state = C.train_classifier(
        x_tr, y_tr, args.epochs, args.seed, args.lr, args.batch_size, args.max_shift,
        log=lambda rec: print(json.dumps(rec), flush=True),
    )  # fmt: skip
    acc = C.accuracy(state.params, normalize(x_te), y_te)
    card = {
        "test_accuracy": acc,
        "train_seconds": round(time.time() - t0, 1),
        "training": {
            "command": "python experiments/train_classifier.py " + " ".join(sys.argv[1:]),
            "epochs": args.epochs,
            "seed": args.seed,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "max_shift": args.max_shift,
            "optimizer": "adam, cosine decay to 1%",
            "data": "MNIST train (60000); accuracy on MNIST test (10000)",
        },
    }
    card = C.save_classifier(state.params, card, args.out)
    print(json.dumps({"test_accuracy": acc, "out": args.out, "sha256": card["sha256"]}))


if __name__ == "__main__":
    main()
