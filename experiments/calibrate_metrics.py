"""Calibrate the fidelity metrics on sets of known quality, and score the starter anchors.

Writes ``calibration.json`` (all metrics) and ``calibration.md`` (the table) to ``--out``; in
a feature space other than the default LeNet (``--features mlp``) the files are
``calibration_<name>.json`` / ``.md``. With ``--floor N [N ...]`` it scores only real test
digits instead: the real-data floor at each N exactly as ``experiments/evaluate.py
--eval-seed SEED --features NAME`` records it under ``floor`` (reference and test subset from
``jax.random.key(SEED)``), written to ``floor_<name>.json`` / ``.md``.

Example:
    python experiments/calibrate_metrics.py --n 1000 --seed 0 \
        --data-dir ../shared/data/mnist --anchors ../shared/anchors --out runs/calibration
    python experiments/calibrate_metrics.py --features mlp --floor 1000 5000 --seed 0 \
        --data-dir ../shared/data/mnist --out runs/calibration
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxdiff.app.cli import USER_ERRORS, check_paths, fail
from jaxdiff.data import load_mnist, normalize
from jaxdiff.fidelity import classifier as C
from jaxdiff.fidelity import evaluation as E
from jaxdiff.paths import atomic_write, check_readable_dir


def floors(
    train: np.ndarray,
    test: np.ndarray,
    ns: list[int],
    seed: int,
    n_boot: int,
    classifier: C.Classifier,
) -> dict[str, dict]:
    """The real-data floor at each N, as ``evaluate.py --eval-seed seed`` computes it.

    Args:
        train: Model-scale training images.
        test: Model-scale test images.
        ns: Sample sizes.
        seed: The evaluation seed (``jax.random.key(seed)`` draws the subsets).
        n_boot: Bootstrap resamples of each interval.
        classifier: Feature network.

    Returns:
        ``{"real test, N = n": metrics of n random test images}`` in the order of ``ns``.
    """
    rows = {}
    for n in ns:
        ref = E.prepare_reference(
            train, test, jax.random.key(seed), n=n, n_boot=n_boot, classifier=classifier
        )
        rows[f"real test, N = {n}"] = ref.floor
    return rows


def markdown(rows: dict[str, dict], classifier: C.Classifier, command: str, what: str) -> str:
    """The Markdown file of a result: a line naming the feature space, the table, the command.

    Args:
        rows: Name -> metrics (:func:`jaxdiff.fidelity.evaluation.metrics_table`).
        classifier: The feature network that scored them.
        command: The command line that produced them.
        what: What the rows are (start of the heading line).

    Returns:
        The file's text.
    """
    head = (
        f"{what} in the `{classifier.network}` feature space (sha256 "
        f"`{classifier.card.get('sha256')}`):\n\n"
    )
    return head + E.metrics_table(rows) + f"\n\n`{command}`\n"


def main(argv: list[str] | None = None) -> None:
    """Parse flags, build the sets, evaluate each with one reference, write JSON + table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--anchors", default=None, help="folder with starter_ep*_samples.npy")
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--out", default="runs/calibration")
    p.add_argument(
        "--features",
        choices=tuple(C.FEATURE_NETWORKS),
        default=C.DEFAULT_FEATURES,
        help="feature network (default lenet)",
    )
    p.add_argument(
        "--floor",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="only the real-data floor at each N (evaluate.py's `floor`), to floor_<name>.*",
    )
    args = p.parse_args(argv)
    try:
        check_paths(data_dir=args.data_dir, out_dir=Path(args.out))
        if args.anchors:
            check_readable_dir(args.anchors, "--anchors", "starter_ep*_samples.npy files")
        if args.floor and min(args.floor) < 2:
            raise ValueError(f"--floor sizes must be at least 2, got {args.floor}")
        clf = C.default_classifier(args.features)
    except USER_ERRORS as err:
        sys.exit(fail(str(err)))

    x_tr, _ = load_mnist("train", args.data_dir)
    x_te, y_te = load_mnist("test", args.data_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    command = "python experiments/calibrate_metrics.py " + " ".join(sys.argv[1:])
    if args.floor:
        rows = floors(normalize(x_tr), normalize(x_te), args.floor, args.seed, args.n_boot, clf)
        record = {
            "features": clf.network,
            "features_sha256": clf.card.get("sha256"),
            "features_test_accuracy": clf.card.get("test_accuracy"),
            "eval_seed": args.seed,
            "n_boot": args.n_boot,
            "command": command,
            "what": "N random MNIST test digits scored as samples against the training set: "
            "the `floor` that evaluate.py records at this N and --eval-seed",
            "floors": rows,
        }
        stem = f"floor_{clf.network}"
        atomic_write(out / f"{stem}.json", json.dumps(record, indent=1) + "\n")
        what = f"Real-data floor (eval seed {args.seed})"
        atomic_write(out / f"{stem}.md", markdown(rows, clf, command, what))
        print(E.metrics_table(rows))
        print(f"total {time.time() - t0:.1f}s")
        return

    extra = {}
    if args.anchors:
        for path in sorted(Path(args.anchors).glob("starter_ep*_samples.npy")):
            extra[f"anchor {path.stem.replace('_samples', '')}"] = np.load(path)[: args.n]

    def log(name: str, m: dict) -> None:
        print(
            f"{name}: fd={m['fd']:.2f} kid={m['kid']:.4f} p={m['precision']:.3f} "
            f"r={m['recall']:.3f} kl={m['class_kl']:.3f} conf={m['confidence']:.3f} "
            f"({m['seconds']}s)",
            flush=True,
        )

    rows = E.calibrate(
        normalize(x_tr), normalize(x_te), y_te, args.seed, args.n, args.n_boot, extra, log, clf
    )
    if clf.network == C.DEFAULT_FEATURES:  # the published files keep their names and form
        stem, text = "calibration", E.metrics_table(rows) + "\n"
    else:
        stem = f"calibration_{clf.network}"
        text = markdown(rows, clf, command, f"Calibration (N = {args.n}, seed {args.seed})")
    atomic_write(out / f"{stem}.json", json.dumps(rows, indent=1) + "\n")
    atomic_write(out / f"{stem}.md", text)
    print(E.metrics_table(rows))
    print(f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
