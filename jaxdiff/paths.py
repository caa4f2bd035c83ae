"""Path checks made before any work, and atomic file writes.

Every driver checks the paths it was given (``--data-dir``, ``--workdir``, ``--checkpoint``,
``--samples``, ``--out``, ``--state-dict``) before it compiles or trains anything; each
failure is one :class:`PathError` line that names the flag, the path, what is wrong and the
fix. Every file jaxdiff writes (metrics, configs, exported parameters, sample arrays,
figures) goes through :func:`atomic_write`: a temporary file in the same folder, then a
rename, so a killed process or a full disk leaves the old file or none, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


class PathError(ValueError):
    """A path given on the command line cannot be used; the message says why and the fix."""


def cache_root() -> Path:
    """The folder jaxdiff keeps its per-machine caches in (built kernels, compiled programs).

    ``$JAXDIFF_CACHE_DIR`` when set, else ``~/.cache/jaxdiff``. Nothing in it is a result:
    deleting it only costs a rebuild.

    Returns:
        The folder (not created here).
    """
    return Path(os.environ.get("JAXDIFF_CACHE_DIR") or Path.home() / ".cache" / "jaxdiff")


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """Check that ``path`` is, or can be created as, a folder this process can write into.

    Nothing is left behind (a probe file in the nearest existing folder is removed at once).

    Args:
        path: The folder.
        flag: The command-line flag that named it (for the message).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PathError: If it is a file, or its nearest existing ancestor is not a writable folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{flag} {path} is a file, not a folder; give a folder path.")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise PathError(
            f"{flag} {path}: {base} is a file, so the folder cannot be created; "
            "choose another path."
        )
    where = "it" if base == path.absolute() else f"its parent {base}"
    if not os.access(base, os.W_OK | os.X_OK) or not _can_create_in(base):
        raise PathError(
            f"{flag} {path} is not writable ({where} does not allow creating files); "
            "choose a folder you can write to."
        )
    return path


def _can_create_in(folder: Path) -> bool:
    """Probe by creating (and at once removing) a file in ``folder``.

    Permission bits do not bind root, and some file systems (``/proc``, read-only mounts)
    refuse what ``access`` allows.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_writable_file(path: str | os.PathLike, flag: str) -> Path:
    """Check that a file can be written at ``path`` (its folder exists or can be created).

    Args:
        path: The file path.
        flag: The command-line flag that named it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PathError: If ``path`` is a folder or its folder cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{flag} {path} is a folder; give a file path.")
    check_writable_dir(path.parent if str(path.parent) else Path("."), flag)
    return path


def check_readable_file(path: str | os.PathLike, flag: str, what: str) -> Path:
    """Check that ``path`` is an existing, readable file.

    Args:
        path: The file.
        flag: The command-line flag that named it.
        what: What the file should hold (for the message), e.g. ``"a .npy of samples"``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PathError: If it is missing, a folder or unreadable.
    """
    return _check_readable(Path(path), flag, want_dir=False, give=what)


def check_readable_dir(path: str | os.PathLike, flag: str, what: str) -> Path:
    """Check that ``path`` is an existing, readable folder.

    Args:
        path: The folder.
        flag: The command-line flag that named it.
        what: What the folder should hold (for the message).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PathError: If it is missing, a file or unreadable.
    """
    return _check_readable(Path(path), flag, want_dir=True, give=f"a folder with {what}")


def _check_readable(path: Path, flag: str, want_dir: bool, give: str) -> Path:
    """The checks of :func:`check_readable_file` and :func:`check_readable_dir`."""
    if not path.exists():
        raise PathError(f"{flag} {path} does not exist; give {give}.")
    if path.is_dir() != want_dir:
        raise PathError(f"{flag} {path} is a {'file' if want_dir else 'folder'}; give {give}.")
    if not os.access(path, os.R_OK | (os.X_OK if want_dir else 0)):
        raise PathError(f"{flag} {path} is not readable; check its permissions.")
    return path


def check_checkpoint(path: str | os.PathLike, flag: str = "--checkpoint") -> Path:
    """Check that ``path`` holds something :func:`jaxdiff.app.runner.load_run` can read.

    That is a run workdir (with ``checkpoints/``), a ``checkpoints`` folder, or an exported
    parameters folder (``params.msgpack`` and ``config.json``).

    Args:
        path: The folder.
        flag: The command-line flag that named it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PathError: If it is missing or holds none of these.
    """
    what = "a run (checkpoints/) or exported params (params.msgpack + config.json)"
    path = check_readable_dir(path, flag, what)
    if not (path / "params.msgpack").is_file() and (path / "final" / "params.msgpack").is_file():
        path = path / "final"  # a committed run: its exported final model
    if (path / "params.msgpack").is_file():
        if not (path / "config.json").is_file():
            raise PathError(
                f"{flag} {path} has params.msgpack but no config.json; copy the whole "
                "exported folder."
            )
        return path
    ck = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if any(p.is_dir() and p.name.isdigit() for p in ck.iterdir()):
        return path
    raise PathError(f"{flag} {path} holds no checkpoint; give a folder with {what}.")


def load_samples(path: str | os.PathLike, n: int | None = None, flag: str = "--samples"):
    """Load and check a ``.npy`` of generated samples in the model scale.

    jaxdiff expects ``float`` arrays of shape ``(N, 28, 28)`` or ``(N, 28, 28, 1)`` in the
    model scale (background ``-0.5``, ink ``+0.5``; unclipped samples may stray outside),
    with finite values.

    Args:
        path: The ``.npy`` file.
        n: Number of samples needed (the first ``n`` are returned); ``None`` for all.
        flag: The command-line flag that named it.

    Returns:
        ``float32`` samples ``(n, 28, 28, 1)``.

    Raises:
        PathError: If the file is missing, not a plain ``.npy`` array, or its shape, dtype,
            values or scale are not those of model-scale samples.
    """
    expect = "a .npy float array of shape (N, 28, 28) in the model scale [-0.5, 0.5]"
    path = check_readable_file(path, flag, expect)
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise PathError(f"{flag} {path} holds pickled objects; expected {expect}.") from None
        raise PathError(f"{flag} {path} is not a .npy array ({err}); expected {expect}.") from None
    except (OSError, EOFError) as err:
        raise PathError(
            f"{flag} {path} cannot be read as .npy ({err}); expected {expect}."
        ) from None
    if not isinstance(x, np.ndarray):
        raise PathError(
            f"{flag} {path} is a zip archive (.npz or .pt), not one .npy array; expected {expect}."
        )
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise PathError(f"{flag} {path} has shape {x.shape}; expected {expect}.")
    if not np.issubdtype(x.dtype, np.floating):
        raise PathError(
            f"{flag} {path} has dtype {x.dtype} (raw pixels?); expected {expect}: "
            "convert with x / 255 - 0.5."
        )
    if not np.all(np.isfinite(x)):
        raise PathError(f"{flag} {path} holds NaN or infinite values; the sampler diverged.")
    if x.size and x.min() >= 0.0:
        scale = "0..255" if x.max() > 1.5 else "[0, 1]"
        fix = "x / 255 - 0.5" if scale == "0..255" else "x - 0.5"
        raise PathError(
            f"{flag} {path} has no negative values: it looks like {scale} pixels, not the "
            f"model scale (background -0.5); convert with {fix}."
        )
    if n is not None and x.shape[0] < n:
        raise PathError(f"{flag} {path} holds {x.shape[0]} samples, fewer than --n {n}.")
    x = x[:n] if n is not None else x
    return x.astype(np.float32)[..., None]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix (so writers that infer a format from it,
    such as matplotlib's ``savefig``, still work). If the block raises (a full disk, a
    kill), the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The final file path; its folder is created if needed.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically.

    Args:
        path: The file.
        data: Its new content.
    """
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())


def atomic_json(path: str | os.PathLike, obj: Any, **kw: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (``kw`` go to ``json.dumps``)."""
    atomic_write(path, json.dumps(obj, indent=2, **kw))


def atomic_save(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Run ``writer(tmp_path)`` and rename the result onto ``path`` (e.g. ``np.save``)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def atomic_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` at ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)

    atomic_save(path, write)
