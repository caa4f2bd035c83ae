"""MNIST loading: IDX reader with validation, data-folder resolution, normalisation.

The four canonical MNIST files (``train-images-idx3-ubyte`` and friends, gzipped or raw) are
read from a folder resolved in this order: an explicit ``data_dir`` argument (the
``--data-dir`` flag), the ``JAXDIFF_DATA_DIR`` environment variable, then a user cache folder
(``~/.cache/jaxdiff/mnist``). When the files are absent there, they are obtained through
tensorflow-datasets if it is installed, else downloaded from the canonical mirror and checked
against their published SHA-256 sums. Offline, one error says where to put which files.

Images stay ``uint8`` until a batch is drawn; :func:`normalize` maps them to the starter's
scale ``x / 255 - 0.5`` with a trailing channel axis (NHWC).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path

import numpy as np

ENV_VAR = "JAXDIFF_DATA_DIR"
DEFAULT_CACHE = Path.home() / ".cache" / "jaxdiff" / "mnist"
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

#: File stem -> (sha256 of the .gz file, expected IDX magic, expected item count).
FILES: dict[str, tuple[str, int, int]] = {
    "train-images-idx3-ubyte": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        2051,
        60000,
    ),
    "train-labels-idx1-ubyte": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        2049,
        60000,
    ),
    "t10k-images-idx3-ubyte": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        2051,
        10000,
    ),
    "t10k-labels-idx1-ubyte": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        2049,
        10000,
    ),
}
SPLITS = {"train": "train", "test": "t10k"}


class DataError(RuntimeError):
    """Raised when MNIST files are missing, truncated or malformed."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder MNIST is read from.

    Args:
        data_dir: Explicit folder (the ``--data-dir`` flag); takes precedence.

    Returns:
        ``data_dir`` if given, else ``$JAXDIFF_DATA_DIR`` if set, else the user cache folder.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_CACHE


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = folder / name
        if path.is_file():
            return path
    return None


def read_idx(path: str | os.PathLike, magic: int | None = None, count: int | None = None):
    """Read one IDX file (gzipped or raw) into a ``uint8`` array, validating it.

    Args:
        path: File to read; a ``.gz`` suffix means gzip.
        magic: Expected magic number (2049 for labels, 2051 for images), or ``None``.
        count: Expected number of items (first dimension), or ``None``.

    Returns:
        A ``uint8`` array of shape ``(count,)`` for labels or ``(count, rows, cols)``.

    Raises:
        DataError: If the file is not gzip when named so, has the wrong magic number,
            an unexpected item count or image size, or is truncated or too long.
    """
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read as an IDX file ({err}); replace it.") from err
    if len(raw) < 8:
        raise DataError(f"{path}: truncated ({len(raw)} bytes, no IDX header); replace it.")
    (got_magic,) = struct.unpack(">I", raw[:4])
    if got_magic not in (2049, 2051) or (magic is not None and got_magic != magic):
        want = magic if magic is not None else "2049 or 2051"
        raise DataError(
            f"{path}: wrong magic number {got_magic} (expected {want}); "
            "this is not the right MNIST IDX file."
        )
    ndim = got_magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header; replace the file.")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    if count is not None and dims[0] != count:
        raise DataError(f"{path}: holds {dims[0]} items, expected {count}; wrong or cut file.")
    if ndim == 3 and dims[1:] != (28, 28):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28.")
    expected = int(np.prod(dims))
    body = len(raw) - header
    if body != expected:
        kind = "truncated" if body < expected else "too long"
        raise DataError(
            f"{path}: {kind}: {body} data bytes, header promises {expected}; replace the file."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _missing_message(folder: Path, missing: list[str]) -> str:
    names = "\n".join(f"  {s}.gz" for s in missing)
    return (
        f"MNIST files not found in {folder} and could not be fetched (offline?).\n"
        f"Put these files (gzipped or raw IDX) in that folder:\n{names}\n"
        f"or point to a folder holding them with --data-dir DIR or {ENV_VAR}=DIR."
    )


def _download(folder: Path, stems: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        sha, _, _ = FILES[stem]
        with urllib.request.urlopen(MIRROR + stem + ".gz", timeout=30) as resp:
            data = resp.read()
        if hashlib.sha256(data).hexdigest() != sha:
            raise DataError(f"downloaded {stem}.gz does not match its sha256; not saved.")
        tmp = folder / (stem + ".gz.part")
        tmp.write_bytes(data)
        tmp.replace(folder / (stem + ".gz"))


def _from_tfds(split: str):  # pragma: no cover - needs tensorflow and internet
    import tensorflow_datasets as tfds

    ds = tfds.as_numpy(tfds.load("mnist", split=split, batch_size=-1))
    return ds["image"][..., 0].astype(np.uint8), ds["label"].astype(np.uint8)


def load_mnist(
    split: str = "train", data_dir: str | os.PathLike | None = None, fetch: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split as ``uint8`` arrays.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        data_dir: Folder with the IDX files; see :func:`resolve_data_dir`.
        fetch: If the files are absent, try tensorflow-datasets, then a verified download.

    Returns:
        ``(images, labels)``: ``uint8`` arrays of shapes ``(N, 28, 28)`` and ``(N,)``.

    Raises:
        ValueError: For an unknown split.
        DataError: If files are missing (with instructions) or malformed.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'.")
    folder = resolve_data_dir(data_dir)
    stems = [f"{SPLITS[split]}-images-idx3-ubyte", f"{SPLITS[split]}-labels-idx1-ubyte"]
    missing = [s for s in stems if _find(folder, s) is None]
    if missing and fetch:
        try:
            return _from_tfds(split)
        except Exception:  # noqa: BLE001 - any tfds failure falls through to download
            pass
        try:
            _download(folder, missing)
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - offline or mirror gone
            raise DataError(_missing_message(folder, missing)) from err
        missing = [s for s in stems if _find(folder, s) is None]
    if missing:
        raise DataError(_missing_message(folder, missing))
    arrays = []
    for stem in stems:
        _, magic, count = FILES[stem]
        arrays.append(read_idx(_find(folder, stem), magic=magic, count=count))
    images, labels = arrays
    if labels.max() > 9:
        raise DataError(f"{folder}: labels outside 0..9; wrong label file.")
    return images, labels


def normalize(images):
    """Map ``uint8`` images to the starter's scale with a channel axis.

    Args:
        images: ``uint8`` array ``(..., 28, 28)`` (numpy or jax).

    Returns:
        ``float32`` array ``(..., 28, 28, 1)`` with values ``x / 255 - 0.5`` in [-0.5, 0.5].
    """
    return (images.astype(np.float32) / 255.0 - 0.5)[..., None]


def to_uint8(x):
    """Map model-scale images back to displayable ``uint8`` (inverse of :func:`normalize`).

    Args:
        x: Array ``(..., 28, 28)`` or ``(..., 28, 28, 1)`` in the model scale.

    Returns:
        ``uint8`` numpy array ``(..., 28, 28)``, values clipped to [0, 255].
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim >= 3 and x.shape[-1] == 1:
        x = x[..., 0]
    return np.clip(np.rint((x + 0.5) * 255.0), 0, 255).astype(np.uint8)
