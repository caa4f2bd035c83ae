"""Tests for jaxdiff.fidelity.metrics: closed forms, equivalences, extremes, error messages."""

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.linalg

from jaxdiff.data import load_mnist, normalize
from jaxdiff.fidelity import evaluation as E
from jaxdiff.fidelity import metrics as M

DATA_DIR = os.environ.get(
    "JAXDIFF_DATA_DIR", str(Path(__file__).parents[1] / "../shared/data/mnist")
)


def _rand_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fd_same_set_is_zero_and_symmetric():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16))
    y = rng.normal(size=(400, 16)) * 1.3 + 0.2
    assert M.fd_from_features(x, x) == pytest.approx(0.0, abs=1e-9)
    assert M.fd_from_features(x, y) == pytest.approx(M.fd_from_features(y, x), rel=1e-10)
    assert M.fd_from_features(x, y) > 0.5


def test_fd_closed_form_diagonal_and_1d():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(want, rel=1e-12)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    got1 = M.frechet_distance(np.array([0.5]), np.array([[4.0]]), np.array([-1.0]), [[0.25]])
    assert got1 == pytest.approx(1.5**2 + 1.5**2, rel=1e-12)


def test_fd_matches_scipy_sqrtm_for_non_commuting_covariances():
    rng = np.random.default_rng(1)
    d = 20
    s1, s2 = _rand_cov(rng, d), _rand_cov(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    cov_mean = scipy.linalg.sqrtm(s1 @ s2).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * cov_mean)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        M.frechet_distance(mu2, s2, mu1, s1), rel=1e-10
    )


def test_fd_singular_covariance_is_finite_and_zero_for_itself():
    rng = np.random.default_rng(2)
    x = np.zeros((300, 10))
    x[:, :3] = rng.normal(size=(300, 3))  # rank-3 covariance, like dead ReLU units
    mu, s = M.feature_stats(x)
    assert M.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_fd_from_samples_approaches_closed_form():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20000, 4))
    y = rng.normal(size=(20000, 4)) * 2.0 + 1.0
    # closed form: 4 * 1^2 + 4 * (1 - 2)^2 = 8
    assert M.fd_from_features(x, y) == pytest.approx(8.0, rel=0.03)


def test_sqrtm_psd():
    rng = np.random.default_rng(4)
    s = _rand_cov(rng, 12)
    r = M.sqrtm_psd(s)
    np.testing.assert_allclose(r @ r, s, atol=1e-10)
    np.testing.assert_allclose(r, r.T, atol=1e-12)


def test_fd_bad_shapes():
    with pytest.raises(ValueError, match="feature dimensions differ"):
        M.fd_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="shapes do not match"):
        M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        M.fd_from_features(np.full((5, 3), np.nan), np.zeros((5, 3)))


def test_fd_bootstrap_deterministic_and_brackets_estimate():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(5000, 8))
    gen = rng.normal(size=(500, 8)) + 0.5
    mu, s = M.feature_stats(ref)
    lo, hi, reps = M.fd_bootstrap(gen, mu, s, jax.random.key(0), n_boot=100)
    lo2, hi2, _ = M.fd_bootstrap(gen, mu, s, jax.random.key(0), n_boot=100)
    assert (lo, hi) == (lo2, hi2)
    est = M.frechet_distance(*M.feature_stats(gen), mu, s)
    assert lo < est < hi and reps.shape == (100,)


def test_fd_bootstrap_spread_matches_repeated_sampling():
    # the interval's width should reflect how FD actually varies between independent draws
    rng = np.random.default_rng(13)
    d, n = 6, 400
    mu_ref, s_ref = np.zeros(d), np.eye(d)
    shift = np.full(d, 0.3)
    fds = [
        M.frechet_distance(*M.feature_stats(rng.normal(size=(n, d)) + shift), mu_ref, s_ref)
        for _ in range(60)
    ]
    gen = rng.normal(size=(n, d)) + shift
    lo, hi, reps = M.fd_bootstrap(gen, mu_ref, s_ref, jax.random.key(1), n_boot=300)
    true_sd = np.std(fds)
    assert 0.6 * true_sd < np.std(reps) < 1.6 * true_sd
    est = M.frechet_distance(*M.feature_stats(gen), mu_ref, s_ref)
    assert lo < est < hi
    assert hi - lo == pytest.approx(np.diff(np.quantile(reps, [0.025, 0.975]))[0], rel=1e-9)


def _naive_unbiased_mmd2(x, y):
    kxx, kyy, kxy = M.polynomial_kernel(x, x), M.polynomial_kernel(y, y), M.polynomial_kernel(x, y)
    n, m = len(x), len(y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def test_weighted_mmd2_matches_naive_and_counts_equal_duplicates_without_self_pairs():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) + 0.3
    kxx, kyy, kxy = M.polynomial_kernel(x, x), M.polynomial_kernel(y, y), M.polynomial_kernel(x, y)
    got = M.weighted_mmd2(kxx, kyy, kxy, np.ones(40), np.ones(30))
    assert got == pytest.approx(_naive_unbiased_mmd2(x, y), rel=1e-10)
    # 0/1 weights == the estimator on the subset
    wx = np.zeros(40)
    wx[:25] = 1
    got = M.weighted_mmd2(kxx, kyy, kxy, wx, np.ones(30))
    assert got == pytest.approx(_naive_unbiased_mmd2(x[:25], y), rel=1e-10)


def test_kid_near_zero_for_same_distribution_and_positive_for_different():
    rng = np.random.default_rng(7)
    d = 16
    a, b = rng.normal(size=(1000, d)), rng.normal(size=(1000, d))
    c = rng.normal(size=(1000, d)) * 1.2 + 0.3
    same, _ = M.kid(a, b, jax.random.key(0))
    diff, _ = M.kid(a, c, jax.random.key(0))
    lo, hi, _ = M.kid_bootstrap(a, b, jax.random.key(1), n_boot=100)
    assert lo < 0.0 < hi  # the interval covers the true value 0
    assert abs(same) < 0.1 * diff
    lo_d, _, _ = M.kid_bootstrap(a, c, jax.random.key(1), n_boot=100)
    assert lo_d > 0.0


def test_kid_unbiased_at_small_n():
    # mean over many tiny-sample estimates stays near 0 (a biased MMD would be clearly > 0)
    rng = np.random.default_rng(8)
    vals = [
        M.kid(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)), jax.random.key(0))[0]
        for _ in range(200)
    ]
    biased = []
    for _ in range(50):
        x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
        biased.append(
            M.polynomial_kernel(x, x).mean()
            + M.polynomial_kernel(y, y).mean()
            - 2 * M.polynomial_kernel(x, y).mean()
        )
    se = np.std(vals) / np.sqrt(len(vals))
    assert abs(np.mean(vals)) < 3 * se
    assert np.mean(biased) > 10 * se


def test_kid_subsets_and_errors():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) + 0.5
    full, sd0 = M.kid(a, b, jax.random.key(0), subset_size=1000)
    sub, sd = M.kid(a, b, jax.random.key(0), n_subsets=50, subset_size=100)
    assert sd0 == 0.0 and sd > 0.0
    assert sub == pytest.approx(full, rel=0.15)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        M.kid(a, b[:, :5], jax.random.key(0))


def test_precision_recall_extremes():
    rng = np.random.default_rng(10)
    real = rng.normal(size=(400, 8)).astype(np.float32)
    assert M.precision_recall(real, real) == (1.0, 1.0)
    p, r = M.precision_recall(real, real + 100.0)
    assert (p, r) == (0.0, 0.0)
    # mode collapse: fakes all near one real point -> precise but no recall
    fake = real[:1] + 0.01 * rng.normal(size=(400, 8)).astype(np.float32)
    p, r = M.precision_recall(real, fake)
    assert p == 1.0 and r < 0.05


def test_knn_radii_matches_bruteforce():
    rng = np.random.default_rng(11)
    f = rng.normal(size=(123, 5)).astype(np.float32)
    d = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))
    want = np.sort(d, 1)[:, 3]
    np.testing.assert_allclose(M.knn_radii(f, k=3, chunk=50), want, rtol=1e-4, atol=1e-4)


def test_class_balance():
    uniform = np.tile(np.eye(10), (5, 1))
    h = M.class_histogram(uniform)
    np.testing.assert_allclose(h, 0.1)
    assert M.class_divergence(h) == pytest.approx((0.0, 0.0), abs=1e-12)
    ones = np.zeros((7, 10))
    ones[:, 3] = 1
    kl, tv = M.class_divergence(M.class_histogram(ones))
    assert kl == pytest.approx(np.log(10)) and tv == pytest.approx(0.9)
    assert M.mean_confidence(np.full((4, 10), 0.1)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="probs must be"):
        M.class_histogram(np.zeros((3, 9)))


def test_nn_distances_matches_bruteforce_with_padding():
    rng = np.random.default_rng(12)
    train = rng.uniform(-0.5, 0.5, size=(1037, 28, 28, 1)).astype(np.float32)
    samples = rng.uniform(-0.5, 0.5, size=(77, 28, 28, 1)).astype(np.float32)
    samples[5] = train[1000]  # an exact copy (memorised) is found at distance ~0
    dist, idx = M.nn_distances(samples, train, query_chunk=20, train_chunk=300)
    d = np.sqrt(((samples.reshape(77, 1, -1) - train.reshape(1, 1037, -1)) ** 2).sum(-1))
    np.testing.assert_array_equal(idx, d.argmin(1))
    # squared: |a|^2 - 2ab + |b|^2 cancels to ~1e-5 for the copy, whose sqrt (~5e-3 on an
    # AVX2 host, smaller with AVX-512's GEMM) is no error of the method
    np.testing.assert_allclose(dist**2, d.min(1) ** 2, rtol=1e-4, atol=1e-4)
    assert idx[5] == 1000 and dist[5] < 0.01


# ------------------------------------------------------------------ evaluation (end to end)


@pytest.fixture(scope="module")
def small_eval():
    x_tr, _ = load_mnist("train", DATA_DIR)
    x_te, y_te = load_mnist("test", DATA_DIR)
    train, test = normalize(x_tr[:6000]), normalize(x_te[:3000])
    ref = E.prepare_reference(train, test, jax.random.key(0), n=300, n_boot=50)
    sets = E.calibration_sets(
        train, test, y_te[:3000], jax.random.key(1), n=300, noise_sigmas=(0.2,), blur_sigmas=(1.5,)
    )
    rows = {
        name: E.evaluate_samples(x, None, None, jax.random.key(2), reference=ref, n_boot=50)
        for name, x in sets.items()
    }
    return train, test, ref, sets, rows


def test_evaluate_samples_json_ready_and_calibrated(small_eval):
    _, _, ref, _, rows = small_eval
    real = rows["real test"]
    json.dumps(rows)  # JSON-ready
    for key in (
        "fd",
        "fd_ci",
        "kid",
        "kid_ci",
        "precision",
        "recall",
        "class_hist",
        "class_kl",
        "confidence",
        "nn_dist",
        "n",
        "floor",
        "protocol",
    ):
        assert key in real
    assert real["n"] == 300 and real["fd_ci"][0] <= real["fd_ci"][1]
    # the floor is the same protocol on the same test subset drawn by prepare_reference
    assert real["floor"]["n"] == 300
    # quality order: real < noise/blur < pure noise (FD and KID); collapse kills balance/recall
    for m in ("fd", "kid"):
        assert real[m] < rows["noise 0.2"][m] < rows["pure noise"][m]
        assert real[m] < rows["blur 1.5"][m] < rows["pure noise"][m]
    one = rows["one digit (1)"]
    assert one["class_kl"] > 2.0 and real["class_kl"] < 0.1
    assert one["recall"] < 0.3 < real["recall"]
    assert rows["pure noise"]["precision"] < 0.05
    # memorisation signature: training copies sit at distance 0
    assert rows["train copies"]["nn_dist"]["median"] < 1e-2 < real["nn_dist"]["median"]
    assert rows["train copies"]["nn_dist_ratio"] < 0.01


def test_evaluate_samples_without_reference_and_errors(small_eval):
    train, test, _, sets, rows = small_eval
    # same shapes as the fixture (compiled functions are reused); reference built inside
    m = E.evaluate_samples(sets["real test"], train, test, jax.random.key(3), n_boot=50)
    assert m["n"] == 300 and m["floor"]["n"] == 300 and "floor_note" not in m
    assert m["fd"] == pytest.approx(rows["real test"]["fd"], rel=1e-6)  # FD vs all of train
    with pytest.raises(ValueError, match="ref_train_images"):
        E.evaluate_samples(sets["real test"], None, None, jax.random.key(0))
    with pytest.raises(ValueError, match="uint8"):
        E.evaluate_samples(np.zeros((5, 28, 28), np.uint8), train, None, jax.random.key(0))
    bad = sets["real test"][:10].copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        E.evaluate_samples(bad, train, None, jax.random.key(0))


def test_rank_samples(small_eval):
    _, _, ref, sets, _ = small_eval
    x = np.concatenate([sets["real test"][:50], sets["pure noise"][:50]])
    scores = E.score_samples(x, ref)
    r = E.rank_samples(scores, n_show=10, n_per_class=5)
    conf = scores.probs.max(1)
    assert np.all(np.diff(conf[r["confident"]]) <= 0)
    assert np.all(np.diff(conf[r["unconfident"]]) >= 0)
    assert np.all(np.diff(scores.nn_dist[r["nn_closest"]]) >= 0)
    assert (r["nn_farthest"] >= 50).all()  # pure noise is farthest from every training digit
    np.testing.assert_array_equal(r["nn_closest_train"], scores.nn_index[r["nn_closest"]])
    assert len(r["per_class"]) == 10
    for c, idx in enumerate(r["per_class"]):
        assert len(idx) <= 5 and (scores.probs[idx].argmax(1) == c).all()


def test_blur_and_noise():
    x = np.zeros((1, 28, 28, 1), np.float32)
    x[0, 14, 14, 0] = 1.0
    b = np.asarray(E.gaussian_blur(x, 1.0))
    assert b.sum() == pytest.approx(1.0, rel=1e-5) and b.max() < 0.2
    assert b[0, 14, 13, 0] == pytest.approx(b[0, 13, 14, 0], rel=1e-6)
    n = np.asarray(E.add_noise(np.zeros((100, 28, 28, 1)), 0.3, jax.random.key(0)))
    assert n.std() == pytest.approx(0.3, rel=0.02)
    with pytest.raises(ValueError, match="sigma"):
        E.gaussian_blur(x, 0.0)


def test_kid_above_its_size_limit_uses_equal_random_subsets_and_all_else_uses_every_sample(
    small_eval, monkeypatch
):
    _, _, ref, sets, rows = small_eval
    x = sets["real test"]
    monkeypatch.setattr(M, "KID_MAX_N", 100)
    m = E.evaluate_samples(x, None, None, jax.random.key(2), reference=ref, n_boot=50)
    assert m["kid_n"] == 100 and m["n"] == len(x) == 300
    assert m["fd"] == rows["real test"]["fd"]  # FD, precision and recall still use all samples
    assert m["recall"] == rows["real test"]["recall"]
    assert rows["real test"]["kid_n"] == 300


def test_saturated_share_counts_samples_mostly_far_out_of_range():
    x = np.zeros((4, 28, 28), np.float32)
    x[0] = 2.0  # every pixel beyond +-1
    x[1, :20] = -3.0  # 20 of 28 rows: 71% of pixels
    x[2, :10] = 5.0  # 36%: not saturated
    assert M.saturated_share(x) == 0.5
    assert M.saturated_share(np.full((3, 28, 28, 1), 0.5)) == 0.0  # the data range's edge
    assert M.saturated_share(x, limit=4.0) == 0.0  # only sample 2 passes 4, on 36% of pixels


def test_saturated_share_of_no_samples_is_one_clear_error():
    with pytest.raises(ValueError, match="N > 0"):
        M.saturated_share(np.zeros((0, 28, 28)))
