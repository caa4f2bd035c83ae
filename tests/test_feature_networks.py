"""Tests for the registry of fidelity feature networks (``lenet``, ``mlp``) and ``--features``."""

import importlib.util
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdiff.data import load_mnist, normalize
from jaxdiff.fidelity import classifier as C

ROOT = Path(__file__).resolve().parents[1]


def test_registry_names_default_and_assets():
    assert list(C.FEATURE_NETWORKS) == ["lenet", "mlp"]
    assert C.DEFAULT_FEATURES == "lenet"
    assert C.feature_network("lenet").params_file == C.DEFAULT_PARAMS
    for name, spec in C.FEATURE_NETWORKS.items():
        assert spec.name == name and spec.params_file.is_file()
        assert spec.params_file.with_suffix(".json").is_file()
        assert spec.params_file.stat().st_size < 1_048_576  # the large-file hook's limit


def test_unknown_name_gives_one_clear_error_listing_the_choices():
    for call in (
        lambda: C.feature_network("inception"),
        lambda: C.load_classifier(network="inception"),
        lambda: C.default_classifier("inception"),
        lambda: C.apply_batched(None, np.zeros((2, 28, 28, 1)), network="inception"),
    ):
        with pytest.raises(ValueError, match=r"unknown feature network 'inception'.*lenet, mlp"):
            call()


@pytest.fixture(scope="module")
def mlp():
    return C.load_classifier(network="mlp")


def test_mlp_loads_by_name_with_its_checksum_and_documented_card(mlp):
    spec = C.feature_network("mlp")
    card = mlp.card
    assert mlp.network == "mlp" and card["network"] == "mlp"
    assert card["sha256"] == C.sha256_file(spec.params_file)
    assert card["feature_dim"] == spec.feature_dim == 128
    assert card["architecture"] == spec.architecture
    assert card["training"]["command"].startswith("python experiments/train_classifier.py --arch")
    assert card["training"]["arch"] == "mlp" and card["training"]["seed"] == 1
    assert card["test_accuracy"] >= 0.97
    assert C.default_classifier("mlp").card == card
    # a path alone is recognised by its card; the LeNet card (no "network" key) is LeNet's
    assert C.load_classifier(spec.params_file).network == "mlp"
    assert C.load_classifier().network == "lenet"


def test_mlp_checksum_mismatch_and_wrong_network(tmp_path):
    spec = C.feature_network("mlp")
    dst = tmp_path / "m.msgpack"
    shutil.copy(spec.params_file, dst)
    shutil.copy(spec.params_file.with_suffix(".json"), tmp_path / "m.json")
    with pytest.raises(ValueError, match="describes a 'mlp' network, not 'lenet'"):
        C.load_classifier(dst, network="lenet")
    raw = bytearray(dst.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    dst.write_bytes(bytes(raw))
    with pytest.raises(C.ClassifierChecksumError, match="corrupted or was replaced.*--arch mlp"):
        C.load_classifier(dst, network="mlp")


@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_features_have_the_documented_dimension(name, data_dir):
    clf = C.default_classifier(name)
    x, _ = load_mnist("test", data_dir)
    x = normalize(x[:13])
    dim = C.feature_network(name).feature_dim
    f = C.features(x, clf)
    p = C.predict_proba(x, clf)
    assert f.shape == (13, dim) and f.dtype == np.float32 and np.all(np.isfinite(f))
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    f0, _ = C.apply_batched(clf.params, x[:0], network=name)
    assert f0.shape == (0, dim)


def test_mlp_classifies_real_test_digits(mlp, data_dir):
    x, y = load_mnist("test", data_dir)
    acc = C.accuracy(mlp.params, normalize(x[:2000]), y[:2000], network="mlp")
    assert acc >= 0.97


def test_mlp_features_differ_from_lenets(mlp, data_dir):
    x, _ = load_mnist("test", data_dir)
    x = normalize(x[:64])
    f_mlp, f_lenet = C.features(x, mlp), C.features(x, C.default_classifier())
    assert not np.allclose(f_mlp, f_lenet)
    assert (f_mlp < 0).any()  # GELU features may be negative; LeNet's ReLU ones may not


def test_mlp_trains_and_round_trips(tmp_path, data_dir):
    x, y = load_mnist("train", data_dir)
    x, y = x[:256], y[:256]
    a = C.train_classifier(x, y, epochs=1, seed=1, lr=1e-3, batch_size=64, network="mlp")
    assert int(a.step) == 4
    assert a.params["params"]["Dense_0"]["kernel"].shape == (784, 256)
    card = C.save_classifier(a.params, {"test_accuracy": 0.1}, tmp_path / "m.msgpack", "mlp")
    assert card["network"] == "mlp" and card["feature_dim"] == 128
    loaded = C.load_classifier(tmp_path / "m.msgpack")
    assert loaded.network == "mlp"
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(loaded.params), strict=True):
        np.testing.assert_array_equal(u, v)
    shutil.copy(tmp_path / "m.msgpack", tmp_path / "l.msgpack")  # MLP weights, a LeNet card
    (tmp_path / "l.json").write_text(json.dumps(dict(card, network="lenet")))
    with pytest.raises(ValueError, match="does not hold lenet parameters|other shapes"):
        C.load_classifier(tmp_path / "l.msgpack")


def _evaluate_main():
    spec = importlib.util.spec_from_file_location("evaluate", ROOT / "experiments/evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory, data_dir):
    x, _ = load_mnist("test", data_dir)
    path = tmp_path_factory.mktemp("samples") / "real.npy"
    np.save(path, normalize(x[-20:]))
    return path


def test_evaluate_features_mlp_rescores_saved_samples(tmp_path, samples_file, data_dir):
    main = _evaluate_main()
    out = tmp_path / "ev"
    argv = ["--samples", str(samples_file), "--n", "20", "--data-dir", data_dir, "--out"]
    assert main([*argv, str(out), "--features", "mlp"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    sha = C.default_classifier("mlp").card["sha256"]
    assert m["features"] == "mlp" and m["features_sha256"] == sha
    assert m["protocol"]["feature_network"] == "mlp" and m["protocol"]["classifier_sha256"] == sha
    assert m["n"] == 20 and m["samples"] == str(samples_file) and np.isfinite(m["fd"])
    assert m["class_kl"] < 1.0  # real digits, read by the MLP


def test_evaluate_features_flag_errors(tmp_path, samples_file, data_dir, monkeypatch, capsys):
    main = _evaluate_main()
    argv = ["--samples", str(samples_file), "--n", "20", "--data-dir", data_dir]
    with pytest.raises(SystemExit):
        main([*argv, "--features", "inception"])
    err = capsys.readouterr().err
    assert "--features: invalid choice: 'inception'" in err and "lenet" in err and "mlp" in err
    # a corrupted asset keeps the one-line checksum error, before anything is computed
    spec = C.feature_network("mlp")
    bad = tmp_path / "mlp.msgpack"
    raw = bytearray(spec.params_file.read_bytes())
    raw[100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    shutil.copy(spec.params_file.with_suffix(".json"), tmp_path / "mlp.json")
    monkeypatch.setitem(C.FEATURE_NETWORKS, "mlp", spec._replace(params_file=bad))
    C.default_classifier.cache_clear()
    try:
        assert main([*argv, "--out", str(tmp_path / "ev"), "--features", "mlp"]) == 2
    finally:
        C.default_classifier.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("error: classifier parameters") and "corrupted or was replaced" in err
    assert not (tmp_path / "ev" / "metrics.json").exists()
