"""Figures: the only module of the library that imports matplotlib. Arrays in, files out.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure`), never
with pyplot, so importing this module changes nothing process-wide: a notebook keeps its own
backend, and no figure is left open in pyplot's registry.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
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


# --------------------------------------------------------------------------- report figures
# Used by the report builder (report/builder.py); the functions above are unchanged.


def save_panels(
    panels: Sequence[np.ndarray],
    labels: Sequence[str],
    path: str | os.PathLike,
    ncol: int | None = None,
    title: str = "",
    panel_ncol: int | None = None,
) -> None:
    """Save labelled panels side by side, each a tiled grid of model-scale images.

    Used for sample grids through training: one panel per epoch.

    Args:
        panels: Each ``(N, 28, 28[, 1])`` in the model scale (tiled with :func:`tile`).
        labels: One label per panel (drawn above it).
        path: Output PNG.
        ncol: Panels per row (default: all in one row).
        title: Figure title.
        panel_ncol: Image columns inside each panel (default ``ceil(sqrt(N))``).

    Raises:
        ValueError: If there are no panels or the label count differs.
    """
    if not len(panels):
        raise ValueError("save_panels needs at least one panel.")
    if len(labels) != len(panels):
        raise ValueError(f"got {len(panels)} panels but {len(labels)} labels; give one each.")
    mosaics = [tile(np.asarray(p), panel_ncol) for p in panels]
    ncol = ncol or len(mosaics)
    nrow = math.ceil(len(mosaics) / ncol)
    h, w = max(m.shape[0] for m in mosaics), max(m.shape[1] for m in mosaics)
    fig, axes = _subplots(
        nrow, ncol, figsize=(ncol * w / 55, nrow * (h / 55 + 0.25) + 0.2), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(mosaics):
            ax.imshow(mosaics[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    _save(fig, path)


def plot_ci_panels(
    panels: Sequence[dict],
    path: str | os.PathLike,
    title: str = "",
    ncol: int | None = None,
    legend_below: bool = False,
) -> None:
    """Plot metric series with confidence intervals, one axis per panel.

    Each panel is a dict with ``series`` (label -> ``(x, y)`` or ``(x, y, lo, hi)``: points
    with an optional interval, drawn as error bars), and optionally ``xlabel``, ``ylabel``,
    ``title``, ``hlines`` (label -> y: reference levels drawn as dashed horizontal lines),
    ``points`` (label -> ``(x, y)``, scalars or sequences: reference markers, one marker
    style per label), ``logx``, ``logy`` and
    ``legend`` (default ``True``; series keep their colours across panels, so one legend
    can serve all).

    Args:
        panels: The panels (left to right, then top to bottom).
        path: Output PNG.
        title: Figure title.
        ncol: Panels per row (default: all in one row).
        legend_below: One legend for the whole figure, below the panels, instead of one per
            panel (for crowded panels; each label is listed once).

    Raises:
        ValueError: If there are no panels.
    """
    if not len(panels):
        raise ValueError("plot_ci_panels needs at least one panel.")
    ncol = ncol or len(panels)
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = _subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    order: dict[str, int] = {}  # one colour per series label across all panels
    for p in panels:
        for label in p.get("series", {}):
            order.setdefault(label, len(order))
    color = {label: colors[i % len(colors)] for label, i in order.items()}
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.axis("off")
            continue
        _draw_ci_panel(ax, panels[i], color, legend=not legend_below)
    if title:
        fig.suptitle(title, fontsize=9)
    handles = _legend_handles(axes.flat) if legend_below else {}
    fig.tight_layout()
    if handles:  # hung below the axes; the tight bounding box of _save takes it in
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=2,
            fontsize=7,
        )
    _save(fig, path)


def _draw_ci_panel(ax: Axes, p: dict, color: dict[str, str], legend: bool) -> None:
    """Draw one panel of :func:`plot_ci_panels` on ``ax`` (with its own legend if ``legend``)."""
    for label, s in p.get("series", {}).items():
        x, y = np.asarray(s[0], float), np.asarray(s[1], float)
        c = color[label]
        if len(s) == 4 and s[2] is not None and s[3] is not None:
            lo, hi = np.asarray(s[2], float), np.asarray(s[3], float)
            yerr = np.stack([np.maximum(y - lo, 0), np.maximum(hi - y, 0)])
            ax.errorbar(x, y, yerr=yerr, fmt="o-", ms=3, lw=1, capsize=2, color=c, label=label)
        else:
            ax.plot(x, y, "o-", ms=3, lw=1, color=c, label=label)
    styles = ("--", ":", "-.")
    for j, (label, yv) in enumerate(p.get("hlines", {}).items()):
        ax.axhline(yv, ls=styles[j % 3], lw=1, color="0.35", label=label)
    for j, (label, (xv, yv)) in enumerate(p.get("points", {}).items()):
        ax.plot(
            np.atleast_1d(xv),
            np.atleast_1d(yv),
            marker="*x+"[j % 3],
            ms=8,
            ls="none",
            color="k",
            label=label,
        )
    if p.get("logx"):
        ax.set_xscale("log")
    if p.get("logy"):
        ax.set_yscale("log")
    ax.set_xlabel(p.get("xlabel", ""))
    ax.set_ylabel(p.get("ylabel", ""))
    if p.get("title"):
        ax.set_title(p["title"], fontsize=9)
    if legend and p.get("legend", True) and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    ax.grid(alpha=0.3)


def _legend_handles(axes: Iterable[Axes]) -> dict[str, object]:
    """Label -> handle over all ``axes``, each label once (its first handle)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    return seen


def plot_grouped_bars(
    groups: dict[str, Sequence[float]],
    labels: Sequence[str],
    path: str | os.PathLike,
    ylabel: str = "",
    title: str = "",
    hline: float | None = None,
) -> None:
    """Save a grouped bar chart (e.g. class histograms of several models side by side).

    Args:
        groups: Series label -> one value per category.
        labels: Category labels (x axis).
        path: Output PNG.
        ylabel: Y axis label.
        title: Figure title.
        hline: Optional reference level (e.g. the uniform 0.1), drawn dashed.

    Raises:
        ValueError: If a series' length differs from the number of categories.
    """
    k = len(labels)
    for name, vals in groups.items():
        if len(vals) != k:
            raise ValueError(f"series {name!r} has {len(vals)} values for {k} categories.")
    fig, ax = _subplots(figsize=(5.5, 2.8))
    width = 0.8 / max(1, len(groups))
    for j, (name, vals) in enumerate(groups.items()):
        ax.bar(np.arange(k) + (j - (len(groups) - 1) / 2) * width, vals, width, label=name)
    if hline is not None:
        ax.axhline(hline, ls="--", lw=1, color="0.3")
    ax.set_xticks(np.arange(k), list(labels))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if groups:
        ax.legend(fontsize=6)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)
