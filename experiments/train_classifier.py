"""Train an MNIST feature network used by the fidelity metrics and write it as an asset.

``--arch`` picks the network from :data:`jaxdiff.fidelity.classifier.FEATURE_NETWORKS`
(``lenet``, the default, or ``mlp``); ``--out`` defaults to that network's shipped file.
Parameters and card are written atomically; a per-epoch log goes beside them
(``<stem>_train_log.jsonl``) when ``--log`` is given.

Example:
    python experiments/train_classifier.py --epochs 8 --seed 0 \
        --data-dir ../shared/data/mnist --out runs/classifier/classifier.msgpack
    python experiments/train_classifier.py --arch mlp --epochs 20 --seed 1 --lr 1e-3 \
        --data-dir ../shared/data/mnist --out runs/classifier_mlp/mlp.msgpack
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
from jaxdiff.paths import atomic_write


def main(argv: list[str] | None = None) -> None:
    """Parse flags, train, report test accuracy, save params and card."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=tuple(C.FEATURE_NETWORKS), default=C.DEFAULT_FEATURES)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="destination .msgpack (default: the shipped one)")
    p.add_argument("--log", action="store_true", help="also write <stem>_train_log.jsonl")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-shift", type=int, default=2)
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else C.feature_network(args.arch).params_file
    try:
        check_paths(data_dir=args.data_dir, out_file=out)
    except USER_ERRORS as err:
        sys.exit(fail(str(err)))

    x_tr, y_tr = load_mnist("train", args.data_dir)
    x_te, y_te = load_mnist("test", args.data_dir)
    records: list[dict] = []

    def log(rec: dict) -> None:
        records.append(rec)
        print(json.dumps(rec), flush=True)

    t0 = time.time()
    state = C.train_classifier(
        x_tr, y_tr, args.epochs, args.seed, args.lr, args.batch_size, args.max_shift,
        log=log, network=args.arch,
    )  # fmt: skip
    seconds = round(time.time() - t0, 1)
    acc = C.accuracy(state.params, normalize(x_te), y_te, network=args.arch)
    card = {
        "test_accuracy": acc,
        "train_seconds": seconds,
        "training": {
            "command": "python experiments/train_classifier.py " + " ".join(sys.argv[1:]),
            "arch": args.arch,
            "epochs": args.epochs,
            "seed": args.seed,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "max_shift": args.max_shift,
            "optimizer": "adam, cosine decay to 1%",
            "data": "MNIST train (60000); accuracy on MNIST test (10000)",
        },
    }
    card = C.save_classifier(state.params, card, out, network=args.arch)
    if args.log:
        lines = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(out.with_name(out.stem + "_train_log.jsonl"), lines)
    print(json.dumps({"test_accuracy": acc, "out": str(out), "sha256": card["sha256"]}))


if __name__ == "__main__":
    main()
