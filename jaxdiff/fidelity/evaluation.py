"""Fidelity evaluation of generated MNIST samples: one protocol, JSON-ready results, rankings.

Protocol (see ``docs/evaluation.md``), for ``N`` generated samples in the model scale:

- samples are clipped to [-0.5, 0.5] first (as any display of them is; ``clip=False`` to
  evaluate raw values); the fraction of pixels that were outside is reported;
- features and class probabilities come from a shipped classifier
  (:mod:`jaxdiff.fidelity.classifier`, 128-d penultimate layer; the LeNet unless a
  ``classifier`` is passed, e.g. ``default_classifier("mlp")``);
- **FD**: the generated features' Gaussian vs the Gaussian of *all* training images
  (60,000), with a bootstrap interval over the generated set;
- **KID**, **precision/recall**: against ``n_ref`` (default ``N``) training images drawn with
  the key (equal sizes: k-NN radii depend on the set size);
- **class balance** and **confidence** from the classifier's argmax / max probability;
- **memorisation**: pixel-space L2 distance of each sample to its nearest training image,
  compared with the same statistic for ``N`` real *test* images (novel real digits);
- **floor**: the same metrics for ``N`` real test images, i.e. what a perfect generator
  would score at this ``N``. FD is biased upward at finite ``N``, so numbers are comparable
  only at equal ``N`` (and with the same classifier, whose sha256 is recorded).

Typical use (a driver)::

    ref = prepare_reference(train_x, test_x, key, n=len(samples))
    scores = score_samples(samples, ref)
    metrics = evaluate_samples(samples, train_x, test_x, key, reference=ref, scores=scores)
    ranks = rank_samples(scores)   # index arrays for galleries
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.fidelity import classifier as C
from jaxdiff.fidelity import metrics as M


class SampleScores(NamedTuple):
    """Per-sample quantities computed once and shared by metrics and rankings.

    Attributes:
        images: The evaluated images ``(N, 28, 28, 1)`` (clipped if requested).
        features: Classifier features ``(N, 128)``.
        probs: Class probabilities ``(N, 10)``.
        nn_dist: L2 distance to the nearest training image ``(N,)``.
        nn_index: Index of that training image ``(N,)``.
        frac_out_of_range: Fraction of input pixels outside [-0.5, 0.5] before clipping.
    """

    images: np.ndarray
    features: np.ndarray
    probs: np.ndarray
    nn_dist: np.ndarray
    nn_index: np.ndarray
    frac_out_of_range: float


class Reference(NamedTuple):
    """Reference statistics of real MNIST, reusable across evaluations at one ``n``.

    Attributes:
        train_images: Training images ``(M, 28, 28, 1)`` (nearest-neighbour search).
        mu: Mean of all training features (float64).
        sigma: Covariance of all training features (float64).
        ref_features: Features of ``n_ref`` training images drawn with the key (KID, P/R).
        n: The sample size the floor was computed at (``None`` without test images).
        floor: Metrics of ``n`` real test images under this protocol (or ``None``).
        test_nn_dist: Nearest-training-image distances of those test images (or ``None``).
        classifier: The feature network used.
    """

    train_images: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    ref_features: np.ndarray
    n: int | None
    floor: dict | None
    test_nn_dist: np.ndarray | None
    classifier: C.Classifier


def _as_images(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        raise ValueError(
            f"{name} is uint8; pass model-scale float images (jaxdiff.data.normalize(x))."
        )
    x = x.astype(np.float32)
    if x.ndim == 3 and x.shape[1:] == (28, 28):
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
        raise ValueError(f"{name} must have shape (N, 28, 28, 1) or (N, 28, 28), got {x.shape}.")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 images, got {x.shape[0]}.")
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(1).sum())
        raise ValueError(f"{name}: {bad} images contain NaN or inf (diverged sampler?).")
    return x


def _stats(v: np.ndarray) -> dict:
    q = np.quantile(v, [0.05, 0.5, 0.95])
    return {
        "mean": float(v.mean()),
        "min": float(v.min()),
        "p05": float(q[0]),
        "median": float(q[1]),
        "p95": float(q[2]),
    }


def prepare_reference(
    train_images: Any,
    test_images: Any | None,
    key: jax.Array,
    n: int | None = None,
    n_ref: int | None = None,
    classifier: C.Classifier | None = None,
    n_boot: int = 200,
) -> Reference:
    """Compute the reference statistics (and the real-data floor at ``n``) once.

    Args:
        train_images: All training images ``(M, 28, 28, 1)``, model scale.
        test_images: Test images for the floor and the memorisation yardstick, or ``None``.
        key: PRNG key (reference subset, test subset, bootstraps).
        n: Sample size the floor is computed at (default: ``n_ref``, else 1000).
        n_ref: Size of the training subset for KID and precision/recall (default ``n``).
        classifier: Feature network; default the shipped one.
        n_boot: Bootstrap replicates for the floor's intervals.

    Returns:
        A :class:`Reference`.
    """
    clf = C.default_classifier() if classifier is None else classifier
    train = _as_images(train_images, "train_images")
    n = n if n is not None else (n_ref if n_ref is not None else 1000)
    n_ref = n if n_ref is None else n_ref
    if n_ref > len(train):
        raise ValueError(f"n_ref={n_ref} exceeds the {len(train)} training images.")
    k_ref, k_test, k_floor = jax.random.split(key, 3)
    train_feats = C.features(train, clf)
    mu, sigma = M.feature_stats(train_feats)
    ref_idx = np.asarray(jax.random.choice(k_ref, len(train), (n_ref,), replace=False))
    ref = Reference(train, mu, sigma, train_feats[ref_idx], None, None, None, clf)
    if test_images is None:
        return ref
    test = _as_images(test_images, "test_images")
    if n > len(test):
        raise ValueError(f"n={n} exceeds the {len(test)} test images available for the floor.")
    test_idx = np.asarray(jax.random.choice(k_test, len(test), (n,), replace=False))
    scores = score_samples(test[test_idx], ref, clip=False)
    floor = _metrics(scores, ref, k_floor, n_boot=n_boot)
    return ref._replace(n=n, floor=floor, test_nn_dist=scores.nn_dist)


def score_samples(samples: Any, reference: Reference, clip: bool = True) -> SampleScores:
    """Per-sample features, probabilities and nearest-training-image distances.

    Args:
        samples: ``(N, 28, 28, 1)`` (or ``(N, 28, 28)``) model-scale images.
        reference: From :func:`prepare_reference`.
        clip: Clip to [-0.5, 0.5] first.

    Returns:
        :class:`SampleScores`.
    """
    x = _as_images(samples, "samples")
    out = float(np.mean((x < -0.5) | (x > 0.5)))
    if clip:
        x = np.clip(x, -0.5, 0.5)
    clf = reference.classifier
    feats, probs = C.apply_batched(clf.params, x, network=clf.network)
    dist, idx = M.nn_distances(x, reference.train_images)
    return SampleScores(x, feats, probs, dist, idx, out)


def _kid_subsets(fx: np.ndarray, fy: np.ndarray, key: jax.Array) -> tuple[np.ndarray, ...]:
    """Random subsets of at most :data:`jaxdiff.fidelity.metrics.KID_MAX_N` features per side.

    KID holds ``n x n`` kernel matrices, so above that size (N = 10,000 evaluations) it is
    estimated on a random subset of each side; every other metric uses all samples.
    """
    out = []
    for i, f in enumerate((fx, fy)):
        if len(f) > M.KID_MAX_N:
            idx = jax.random.permutation(jax.random.fold_in(key, i), len(f))[: M.KID_MAX_N]
            f = f[np.sort(np.asarray(idx))]
        out.append(f)
    return tuple(out)


def _metrics(
    s: SampleScores, ref: Reference, key: jax.Array, n_boot: int, k: int = 3, level: float = 0.95
) -> dict:
    k_fd, k_kid, k_kidb = jax.random.split(key, 3)
    fd = M.frechet_distance(*M.feature_stats(s.features), ref.mu, ref.sigma)
    fd_lo, fd_hi, _ = M.fd_bootstrap(s.features, ref.mu, ref.sigma, k_fd, n_boot, level)
    fx, fy = _kid_subsets(s.features, ref.ref_features, jax.random.fold_in(k_kid, 1))
    kid, kid_sd = M.kid(fx, fy, k_kid)
    kid_lo, kid_hi, _ = M.kid_bootstrap(fx, fy, k_kidb, n_boot, level)
    precision, recall = M.precision_recall(ref.ref_features, s.features, k=k)
    hist = M.class_histogram(s.probs)
    kl, tv = M.class_divergence(hist)
    return {
        "n": len(s.features),
        "fd": fd,
        "fd_ci": [fd_lo, fd_hi],
        "kid": kid,
        "kid_subset_std": kid_sd,
        "kid_ci": [kid_lo, kid_hi],
        "kid_n": len(fx),
        "precision": precision,
        "recall": recall,
        "class_hist": [float(h) for h in hist],
        "class_kl": kl,
        "class_tv": tv,
        "confidence": M.mean_confidence(s.probs),
        "frac_confident_0.9": float((s.probs.max(1) >= 0.9).mean()),
        "nn_dist": _stats(s.nn_dist),
    }


def evaluate_samples(
    samples: Any,
    ref_train_images: Any,
    ref_test_images: Any | None,
    key: jax.Array,
    *,
    reference: Reference | None = None,
    scores: SampleScores | None = None,
    n_boot: int = 200,
    k: int = 3,
    level: float = 0.95,
    clip: bool = True,
    classifier: C.Classifier | None = None,
) -> dict:
    """Evaluate generated samples; returns a JSON-ready dict.

    Args:
        samples: ``(N, 28, 28, 1)`` model-scale samples.
        ref_train_images: All training images (model scale); ignored if ``reference`` given.
        ref_test_images: Test images for the floor/yardstick, or ``None``; ignored likewise.
        key: PRNG key (reference subsets, bootstraps, KID subsets).
        reference: Precomputed :func:`prepare_reference` output (reuse across models at one
            ``N``); built from the images and ``fold_in(key, 0)`` when ``None``.
        scores: Precomputed :func:`score_samples` output for ``samples``.
        n_boot: Bootstrap replicates for the FD and KID intervals.
        k: Neighbour rank of precision/recall.
        level: Confidence level of the intervals.
        clip: Clip samples to [-0.5, 0.5] before scoring.
        classifier: Feature network; default the shipped one.

    Returns:
        Dict with ``n, fd, fd_ci, kid, kid_ci, kid_subset_std, precision, recall, class_hist,
        class_kl, class_tv, confidence, frac_confident_0.9, nn_dist`` (mean/min/p05/median/p95),
        ``nn_dist_ratio`` (median sample / median test distance to the training set, when test
        images are given), ``frac_out_of_range``, ``floor`` (the same metrics for ``N`` real
        test images), ``protocol`` (reference sizes, k, level, classifier sha256 and accuracy)
        and ``seconds``.
    """
    t0 = time.time()
    n = len(np.asarray(samples))
    if reference is None:
        reference = _sized_reference(ref_train_images, ref_test_images, key, n, classifier, n_boot)
    if scores is None:
        scores = score_samples(samples, reference, clip=clip)
    if len(scores.features) != n:
        raise ValueError(f"scores hold {len(scores.features)} samples, samples hold {n}.")
    out = _metrics(scores, reference, jax.random.fold_in(key, 1), n_boot, k, level)
    out["frac_out_of_range"] = scores.frac_out_of_range
    if reference.test_nn_dist is not None:
        out["nn_dist_ratio"] = float(np.median(scores.nn_dist) / np.median(reference.test_nn_dist))
    out["floor"] = reference.floor
    if reference.n is not None and reference.n != n:
        out["floor_note"] = f"floor computed at n={reference.n}, samples n={n}: not comparable"
    out["protocol"] = _protocol(reference, clip=clip, k=k, level=level, n_boot=n_boot)
    out["seconds"] = round(time.time() - t0, 2)
    return out


def _sized_reference(
    train: Any | None,
    test: Any | None,
    key: jax.Array,
    n: int,
    classifier: C.Classifier | None,
    n_boot: int,
) -> Reference:
    """:func:`evaluate_samples`' reference when none is given: set sizes matched to ``n``."""
    if train is None:
        raise ValueError("pass ref_train_images (all MNIST training images) or reference=.")
    return prepare_reference(
        train,
        test,
        jax.random.fold_in(key, 0),
        n=n if test is None else min(n, len(test)),
        n_ref=min(n, len(train)),
        classifier=classifier,
        n_boot=n_boot,
    )


def _protocol(ref: Reference, *, clip: bool, k: int, level: float, n_boot: int) -> dict:
    """The ``protocol`` entry of :func:`evaluate_samples`: what its numbers are measured against."""
    return {
        "clip": clip,
        "k": k,
        "ci_level": level,
        "n_boot": n_boot,
        "fd_reference": f"all {len(ref.train_images)} training images",
        "kid_pr_reference": f"{len(ref.ref_features)} random training images",
        "floor": f"{ref.n} random test images" if ref.n else None,
        "kid_kernel": "(x.y/d + 1)^3, unbiased MMD^2",
        "classifier_sha256": ref.classifier.card.get("sha256"),
        "classifier_test_accuracy": ref.classifier.card.get("test_accuracy"),
        "features": f"classifier penultimate layer ({ref.mu.shape[0]}-d)",
        "feature_network": ref.classifier.network,
    }


def rank_samples(scores: SampleScores, n_show: int = 16, n_per_class: int = 8) -> dict:
    """Indices for quality-ranked galleries.

    Args:
        scores: From :func:`score_samples`.
        n_show: Number of images in each best/worst list.
        n_per_class: Images per predicted class.

    Returns:
        Dict of integer numpy arrays: ``confident`` (highest classifier confidence first),
        ``unconfident`` (lowest first), ``nn_closest`` (smallest distance to the training set
        first: candidates for memorisation) with ``nn_closest_train`` (index of the matched
        training image), ``nn_farthest`` (largest first: least like any training digit) and
        ``per_class`` (a list of 10 arrays: samples predicted as that digit, most confident
        first; may be shorter than ``n_per_class``).
    """
    conf = scores.probs.max(1)
    pred = scores.probs.argmax(1)
    by_conf = np.argsort(-conf, kind="stable")
    by_nn = np.argsort(scores.nn_dist, kind="stable")
    per_class = [by_conf[pred[by_conf] == c][:n_per_class] for c in range(scores.probs.shape[1])]
    return {
        "confident": by_conf[:n_show],
        "unconfident": by_conf[::-1][:n_show],
        "nn_closest": by_nn[:n_show],
        "nn_closest_train": scores.nn_index[by_nn[:n_show]],
        "nn_farthest": by_nn[::-1][:n_show],
        "per_class": per_class,
    }


# ------------------------------------------------------------------ calibration corruptions


def gaussian_blur(x: Any, sigma: float) -> jax.Array:
    """Blur images with a separable Gaussian (edge padding, radius ``ceil(3 sigma)``).

    Args:
        x: ``(N, 28, 28, 1)`` images.
        sigma: Standard deviation in pixels (> 0).

    Returns:
        Blurred images, same shape.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}.")
    r = max(1, math.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g = jnp.asarray(g / g.sum(), jnp.float32)
    x = jnp.asarray(x, jnp.float32)
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    xp = sum(g[i] * xp[:, i : i + x.shape[1]] for i in range(2 * r + 1))
    return sum(g[i] * xp[:, :, i : i + x.shape[2]] for i in range(2 * r + 1))


def add_noise(x: Any, sigma: float, key: jax.Array) -> jax.Array:
    """Add i.i.d. Gaussian pixel noise.

    Args:
        x: Images.
        sigma: Noise standard deviation in the model scale (the data span 1.0).
        key: PRNG key.

    Returns:
        ``x + sigma * eps``.
    """
    x = jnp.asarray(x, jnp.float32)
    return x + sigma * jax.random.normal(key, x.shape)


def _digit_pool(test_labels: Any, digit: int, n: int, n_test: int, n_train: int) -> np.ndarray:
    """Indices of the test images of ``digit``, checking that each set can hold ``n`` images."""
    labels = np.asarray(test_labels)
    if labels.shape != (n_test,):
        raise ValueError(f"test_labels must have shape ({n_test},), got {labels.shape}.")
    pool = np.flatnonzero(labels == digit)
    if n > len(pool) or n > n_test or n > n_train:
        raise ValueError(
            f"n={n} is too large: {len(pool)} test images of digit {digit}, "
            f"{n_test} test, {n_train} train images."
        )
    return pool


def calibration_sets(
    train_images: Any,
    test_images: Any,
    test_labels: Any,
    key: jax.Array,
    n: int = 1000,
    noise_sigmas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4),
    blur_sigmas: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0),
    digit: int = 1,
) -> dict[str, np.ndarray]:
    """Sets of ``n`` images whose quality order is known, for calibrating the metrics.

    - ``real test``: ``n`` random test images (the floor);
    - ``train copies``: ``n`` training images themselves (the memorisation signature:
      nearest-neighbour distance 0, FD/KID at the floor);
    - ``noise s``: the same test images plus Gaussian noise of std ``s`` (model scale);
    - ``blur s``: the same test images blurred with a Gaussian of std ``s`` pixels;
    - ``one digit``: ``n`` test images all of class ``digit`` (a mode collapse);
    - ``pure noise``: ``N(0, 1)`` images, the DDPM sampler's start state.

    Corruptions are applied to *test* images so that the noise-free end of each series is the
    floor and nearest-neighbour distances are not trivially zero.

    Args:
        train_images: ``(M, 28, 28, 1)`` model-scale training images.
        test_images: ``(T, 28, 28, 1)`` model-scale test images.
        test_labels: ``(T,)`` test labels (to build the one-digit set).
        key: PRNG key.
        n: Set size.
        noise_sigmas: Noise levels, increasing.
        blur_sigmas: Blur levels, increasing.
        digit: The digit of the collapsed set.

    Returns:
        Dict name -> images ``float32 (n, 28, 28, 1)``, in the order listed above.
    """
    train = _as_images(train_images, "train_images")
    test = _as_images(test_images, "test_images")
    pool = _digit_pool(test_labels, digit, n, len(test), len(train))
    k_test, k_train, k_digit, k_noise, k_pure = jax.random.split(key, 5)
    real = test[np.asarray(jax.random.choice(k_test, len(test), (n,), replace=False))]
    sets = {
        "real test": real,
        "train copies": train[np.asarray(jax.random.choice(k_train, len(train), (n,), False))],
    }
    for i, s in enumerate(noise_sigmas):
        sets[f"noise {s:g}"] = np.asarray(add_noise(real, s, jax.random.fold_in(k_noise, i)))
    for s in blur_sigmas:
        sets[f"blur {s:g}"] = np.asarray(gaussian_blur(real, s))
    one = pool[np.asarray(jax.random.choice(k_digit, len(pool), (n,), replace=False))]
    sets[f"one digit ({digit})"] = test[one]
    sets["pure noise"] = np.asarray(jax.random.normal(k_pure, real.shape, jnp.float32))
    return sets


def calibrate(
    train: Any,
    test: Any,
    test_labels: Any,
    seed: int = 0,
    n: int = 1000,
    n_boot: int = 200,
    extra: dict[str, Any] | None = None,
    log: Callable[[str, dict], None] | None = None,
    classifier: C.Classifier | None = None,
) -> dict[str, dict]:
    """Score known image sets under one protocol: the scale on which FD and KID are read.

    Builds one reference (:func:`prepare_reference`), the sets of
    :func:`calibration_sets` plus ``extra`` (e.g. the PyTorch starter's samples), and
    evaluates each with :func:`evaluate_samples`. Keys: the reference uses
    ``fold_in(key, 0)``, the sets ``fold_in(key, 1)``, set ``i``'s evaluation
    ``fold_in(key, 100 + i)``, with ``key = jax.random.key(seed)``.

    Args:
        train: Training images, model scale ``(N, 28, 28)`` or ``(N, 28, 28, 1)``.
        test: Test images, the same scale.
        test_labels: Test labels.
        seed: Seed of every draw.
        n: Images per set (and in the reference).
        n_boot: Bootstrap resamples of each confidence interval.
        extra: More named image sets, evaluated after the built-in ones.
        log: Called as ``log(name, metrics)`` after each set.
        classifier: Feature network; default the shipped LeNet.

    Returns:
        ``{set name: metrics}`` in evaluation order.
    """
    key = jax.random.key(seed)
    ref = prepare_reference(
        train, test, jax.random.fold_in(key, 0), n=n, n_boot=n_boot, classifier=classifier
    )
    sets = calibration_sets(train, test, test_labels, jax.random.fold_in(key, 1), n=n)
    sets.update(extra or {})
    rows = {}
    for i, (name, x) in enumerate(sets.items()):
        k = jax.random.fold_in(key, 100 + i)
        rows[name] = evaluate_samples(x, None, None, k, reference=ref, n_boot=n_boot)
        if log is not None:
            log(name, rows[name])
    return rows


def metrics_table(rows: dict[str, dict]) -> str:
    """Format evaluation dicts as a Markdown table (FD and KID with their intervals).

    Args:
        rows: Name -> output of :func:`evaluate_samples`.

    Returns:
        A Markdown table, one row per entry.
    """
    head = "| set | N | FD [95% CI] | KID [95% CI] | precision | recall | class KL | "
    head += "confidence | NN dist median | NN ratio |"
    lines = [head, "|" + " --- |" * 10]
    for name, m in rows.items():
        fd = f"{m['fd']:.2f} [{m['fd_ci'][0]:.2f}, {m['fd_ci'][1]:.2f}]"
        kid = f"{m['kid']:.2f} [{m['kid_ci'][0]:.2f}, {m['kid_ci'][1]:.2f}]"
        ratio = m.get("nn_dist_ratio")
        cells = [
            name,
            str(m["n"]),
            fd,
            kid,
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['class_kl']:.3f}",
            f"{m['confidence']:.3f}",
            f"{m['nn_dist']['median']:.2f}",
            "-" if ratio is None else f"{ratio:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
