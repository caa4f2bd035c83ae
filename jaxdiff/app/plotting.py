"""Figures: the only module of the library that imports matplotlib. Arrays in, files out.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure`), never
with pyplot, so importing this module changes nothing process-wide: a notebook keeps its own
backend, and no figure is left open in pyplot's registry.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxdiff.data import to_uint8
from jaxdiff.paths import atomic_path


def _subplots(*args, figsize: tuple[float, float], **kw):
    """``pyplot.subplots`` without pyplot: a new :class:`Figure` and its axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kw)


def _save(fig: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:  # a kill or full disk leaves the old figure or none
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def tile(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile model-scale images into one ``uint8`` mosaic (white strokes on black).

    Args:
        images: ``(N, 28, 28[, 1])`` in the model scale ([-0.5, 0.5]).
        ncol: Columns (default: ``ceil(sqrt(N))``).
        pad: Pixels between tiles.

    Returns:
        ``uint8`` array ``(rows * (28 + pad) + pad, ncol * (28 + pad) + pad)``.
    """
    imgs = to_uint8(images)
    n, h, w = imgs.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 128, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) :][:, :w] = imgs[i]
    return out


def save_grid(
    images: np.ndarray, path: str | os.PathLike, ncol: int | None = None, title: str = ""
) -> None:
    """Save a grid of model-scale images as a PNG (un-normalised: x + 0.5, clipped).

    Args:
        images: ``(N, 28, 28[, 1])`` in the model scale.
        path: Output PNG.
        ncol: Columns.
        title: Optional title.
    """
    mosaic = tile(np.asarray(images), ncol)
    fig, ax = _subplots(figsize=(mosaic.shape[1] / 60, mosaic.shape[0] / 60 + 0.3))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)
    _save(fig, path)


def plot_loss_curve(
    records: Sequence[dict], path: str | os.PathLike, title: str = "training loss"
) -> None:
    """Plot the per-step (running) and per-epoch mean loss from metrics records.

    Args:
        records: Dicts with ``epoch`` and ``loss`` (epoch mean) and optionally
            ``step_loss`` (a list of per-step losses, e.g. chunk means) and ``step``.
        path: Output PNG.
        title: Figure title.
    """
    fig, ax = _subplots(figsize=(5, 3.2))
    xs, ys = [], []
    for r in records:
        for i, v in enumerate(r.get("chunk_loss", [])):
            xs.append(r["epoch"] - 1 + (i + 1) / len(r["chunk_loss"]))
            ys.append(v)
    if xs:
        ax.plot(xs, ys, lw=0.7, alpha=0.6, label="running (chunk mean)")
    ep = [r["epoch"] for r in records]
    ax.plot(ep, [r["loss"] for r in records], "o-", ms=3, label="epoch mean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
    intervals: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> None:
    """Plot named ``(x, y)`` series on one axis.

    Args:
        series: Label -> ``(xs, ys)``.
        path: Output PNG.
        xlabel: X axis label.
        ylabel: Y axis label.
        title: Figure title.
        logy: Log-scale y axis.
        intervals: Label -> ``(lows, highs)``, drawn as error bars on that series.
    """
    fig, ax = _subplots(figsize=(5, 3.2))
    for label, (x, y) in series.items():
        lines = ax.plot(x, y, "o-", ms=3, label=label)
        if intervals and label in intervals:
            lo, hi = (np.asarray(v, float) for v in intervals[label])
            err = np.stack([np.asarray(y, float) - lo, hi - np.asarray(y, float)])
            ax.errorbar(x, y, yerr=err, fmt="none", ecolor=lines[0].get_color(), capsize=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)


def save_strip(
    strip: np.ndarray,
    path: str | os.PathLike,
    col_labels: Sequence[str] = (),
    title: str = "",
) -> None:
    """Save rows of images (e.g. a degradation across t, or a reverse trajectory).

    Args:
        strip: ``(rows, cols, 28, 28[, 1])`` in the model scale.
        path: Output PNG.
        col_labels: One label per column (e.g. ``t = ...``).
        title: Figure title.
    """
    strip = np.asarray(strip)
    rows, cols = strip.shape[:2]
    fig, axes = _subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(to_uint8(strip[r, c]), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    _save(fig, path)


def plot_bars(
    values: Sequence[float], labels: Sequence[str], path: str | os.PathLike, title: str = ""
) -> None:
    """Save a bar chart (e.g. the class histogram of generated digits).

    Args:
        values: Bar heights.
        labels: One label per bar.
        path: Output PNG.
        title: Figure title.
    """
    fig, ax = _subplots(figsize=(4, 2.6))
    ax.bar(range(len(values)), values, tick_label=list(labels))
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)
