import gzip
import struct

import numpy as np
import pytest

from jaxdiff.data import DataError, load_mnist, normalize, read_idx, resolve_data_dir, to_uint8


def _write_idx(path, arr, magic=None, gz=True, cut=0):
    arr = np.asarray(arr, np.uint8)
    magic = magic if magic is not None else (2051 if arr.ndim == 3 else 2049)
    raw = struct.pack(">I", magic) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    raw = raw[: len(raw) - cut] if cut else raw
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def test_reader_roundtrip_gz_and_raw(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    _write_idx(tmp_path / "a.gz", imgs)
    _write_idx(tmp_path / "b", imgs, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", 2051, 5), imgs)
    np.testing.assert_array_equal(read_idx(tmp_path / "b", 2051, 5), imgs)
    labels = np.arange(7) % 10
    _write_idx(tmp_path / "l.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "l.gz", 2049, 7), labels)


def test_truncated_file(tmp_path):
    _write_idx(tmp_path / "a.gz", np.zeros((5, 28, 28)), cut=100)
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "a.gz", 2051, 5)


def test_wrong_magic(tmp_path):
    _write_idx(tmp_path / "a.gz", np.zeros((5, 28, 28)), magic=2049 + 0x100)
    with pytest.raises(DataError, match="wrong magic number"):
        read_idx(tmp_path / "a.gz", 2051, 5)
    _write_idx(tmp_path / "b.gz", np.zeros(5))
    with pytest.raises(DataError, match="expected 2051"):
        read_idx(tmp_path / "b.gz", 2051, 5)


def test_wrong_count_and_not_gzip(tmp_path):
    _write_idx(tmp_path / "a.gz", np.zeros((5, 28, 28)))
    with pytest.raises(DataError, match="holds 5 items, expected 60000"):
        read_idx(tmp_path / "a.gz", 2051, 60000)
    (tmp_path / "c.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot be read"):
        read_idx(tmp_path / "c.gz")


def test_missing_files_message(tmp_path):
    with pytest.raises(DataError) as err:
        load_mnist("train", tmp_path, fetch=False)
    msg = str(err.value)
    assert str(tmp_path) in msg and "train-images-idx3-ubyte.gz" in msg and "--data-dir" in msg


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDIFF_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir("explicit").name == "explicit"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("JAXDIFF_DATA_DIR")
    assert resolve_data_dir(None).parts[-2:] == ("jaxdiff", "mnist")


def test_real_mnist(data_dir):
    x, y = load_mnist("test", data_dir, fetch=False)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and y.shape == (10000,)
    assert np.bincount(y).min() > 800
    xf = normalize(x[:10])
    assert xf.shape == (10, 28, 28, 1) and xf.dtype == np.float32
    assert xf.min() == -0.5 and xf.max() == 0.5
    np.testing.assert_array_equal(to_uint8(xf), x[:10])
