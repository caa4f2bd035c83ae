"""Tests for jaxdiff.fidelity.classifier: loop-friendly conv gradient, training, asset."""

import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.data import load_mnist, normalize
from jaxdiff.fidelity import classifier as C

DATA_DIR = os.environ.get(
    "JAXDIFF_DATA_DIR", str(Path(__file__).parents[1] / "../shared/data/mnist")
)


@pytest.mark.parametrize("impl", ["auto", "fast", "loopsafe"])
def test_lenet_convolves_through_ops_paths_with_the_reference_values_and_gradients(impl):
    x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1), minval=-0.5, maxval=0.5)
    params = C.LeNet(conv_impl="xla").init(jax.random.key(1), x)

    def loss(p, impl):
        feats, logits = C.LeNet(conv_impl=impl).apply(p, x)
        return jnp.sum(feats**2) + jnp.sum(logits * jnp.arange(10.0))

    np.testing.assert_allclose(loss(params, impl), loss(params, "xla"), rtol=1e-5)
    got = jax.grad(loss)(params, impl)
    want = jax.grad(loss)(params, "xla")
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()))


def test_shift_moves_pixels_and_keeps_shape():
    img = jnp.zeros((28, 28), jnp.uint8).at[10, 12].set(255)
    outs = [C._shift_one(img, jax.random.key(i), 2) for i in range(20)]
    for o in outs:
        assert o.shape == (28, 28) and int(o.sum()) == 255  # one pixel moved, none lost
        r, c = np.argwhere(np.asarray(o))[0]
        assert abs(r - 10) <= 2 and abs(c - 12) <= 2
    assert len({tuple(np.argwhere(np.asarray(o))[0]) for o in outs}) > 1
    assert C._shift_one(img, jax.random.key(0), 0) is img


def test_train_epoch_deterministic_and_learns():
    x, y = load_mnist("train", DATA_DIR)
    x, y = jnp.asarray(x[:1024]), jnp.asarray(y[:1024])
    tx = C.make_classifier_optimizer(5e-3, 64)
    epoch = C.make_train_epoch(tx, batch_size=64)
    s0 = C.init_state(jax.random.key(0), tx)
    s1, m1 = epoch(s0, x, y, jax.random.key(1))
    s1b, m1b = epoch(s0, x, y, jax.random.key(1))
    assert int(s1.step) == 16
    for a, b in zip(
        jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s1b.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    s = s1
    for e in range(2, 5):
        s, m = epoch(s, x, y, jax.random.key(e))
    assert float(m["loss"]) < 0.5 * float(m1["loss"])


def test_optimizer_rejects_bad_args():
    with pytest.raises(ValueError, match="positive"):
        C.make_classifier_optimizer(0.0, 10)


@pytest.fixture(scope="module")
def shipped():
    return C.load_classifier()


def test_shipped_classifier_card_and_accuracy(shipped):
    card = shipped.card
    assert card["sha256"] == C.sha256_file(C.DEFAULT_PARAMS)
    assert C.DEFAULT_PARAMS.stat().st_size < 1_000_000
    assert card["test_accuracy"] >= 0.992
    x, y = load_mnist("test", DATA_DIR)
    acc = C.accuracy(shipped.params, normalize(x), y)
    assert acc >= 0.992
    assert acc == pytest.approx(card["test_accuracy"], abs=2e-4)


def test_features_and_probs_shapes_and_chunking(shipped):
    x, _ = load_mnist("test", DATA_DIR)
    x = normalize(x[:37])
    f = C.features(x, shipped)
    p = C.predict_proba(x, shipped)
    assert f.shape == (37, C.FEATURE_DIM) and f.dtype == np.float32 and (f >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    f2, p2 = C.apply_batched(shipped.params, x[..., 0], batch_size=10)  # (N,28,28) accepted
    np.testing.assert_allclose(f2, f, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p2, p, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\)"):
        C.features(np.zeros((3, 32, 32, 1)), shipped)
    with pytest.raises(ValueError, match="NaN"):
        C.features(np.full((2, 28, 28, 1), np.nan), shipped)


def test_checksum_mismatch_and_missing_file(tmp_path):
    dst = tmp_path / "clf.msgpack"
    shutil.copy(C.DEFAULT_PARAMS, dst)
    shutil.copy(C.DEFAULT_CARD, tmp_path / "clf.json")
    assert C.load_classifier(dst).card["sha256"] == C.sha256_file(dst)
    raw = bytearray(dst.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    dst.write_bytes(bytes(raw))
    with pytest.raises(C.ClassifierChecksumError, match="sha256.*corrupted or was replaced"):
        C.load_classifier(dst)
    with pytest.raises(FileNotFoundError, match="missing"):
        C.load_classifier(tmp_path / "nope.msgpack")


def test_save_load_roundtrip(tmp_path):
    tx = C.make_classifier_optimizer(1e-3, 10)
    params = C.init_state(jax.random.key(3), tx).params
    card = C.save_classifier(params, {"test_accuracy": 0.5}, tmp_path / "c.msgpack")
    assert json.loads((tmp_path / "c.json").read_text()) == card
    loaded = C.load_classifier(tmp_path / "c.msgpack")
    for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_train_classifier_is_the_documented_composition_of_its_epochs():
    x, y = load_mnist("train", DATA_DIR)
    x, y = x[:256], y[:256]
    logs = []
    got = C.train_classifier(x, y, epochs=2, seed=3, lr=1e-3, batch_size=64, log=logs.append)
    key = jax.random.key(3)
    tx = C.make_classifier_optimizer(1e-3, 2 * 4)
    s = C.init_state(jax.random.fold_in(key, 0), tx)
    epoch = C.make_train_epoch(tx, 64)
    for e in (1, 2):
        s, _ = epoch(s, jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key, e))
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(s), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r["epoch"] for r in logs] == [1, 2] and int(got.step) == 8
