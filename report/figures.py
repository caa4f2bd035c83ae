"""The report's figures: drawn from the study, or copied from the runs and evaluations.

Drawing goes through :mod:`jaxdiff.app.plotting`, the library's one matplotlib module, which
builds each figure with matplotlib's object API (:class:`matplotlib.figure.Figure`): no backend
is switched and no pyplot state is touched. Each figure whose inputs are missing is skipped
with a note; ``report.typ`` shows a placeholder for it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from evidence import Q1_SEED_RUNS, cpu_hours_at
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter
from PIL import Image
from study import (
    RunRecord,
    Study,
    headline_eval,
    load_eval,
)
from values import Values

from jaxdiff.app import plotting

#: Galleries written by ``evaluate.py`` that the report prints (file stem), and the roles
#: whose headline evaluation's galleries it prints (Q1c).
GALLERIES = ("confident", "unconfident")
GALLERY_ROLES = ("q1_default", "q1_alt")
#: Cold-run figures written by ``cold.py`` whose top rows the report prints (Q2a, Q2b).
COLD_FIGURES = ("degradation_strip", "trajectory")
COLD_ROLES = ("q2_custom",)
#: The largest share of a copied grid's height that its title band may take (``evaluate.py``'s
#: titles take about 5%; one row of a 4 x 4 grid takes about 20%).
TITLE_BAND = 0.12

# ----------------------------------------------------------------------------- the report's


class FigureSet:
    """The report's figure folder and the names of the figures written into it.

    Args:
        fig_dir: The folder (``report/figures``).
    """

    def __init__(self, fig_dir: Path) -> None:
        self.dir = fig_dir
        self.names: list[str] = []

    def draw(self, name: str, fn: Callable, *args, **kwargs) -> None:
        """Draw ``name`` with ``fn(*args, path=..., **kwargs)``."""
        fn(*args, path=self.dir / name, **kwargs)
        self.names.append(name)

    def mosaic(self, images: np.ndarray, name: str, ncol: int = 4) -> None:
        """Write up to 16 model-scale images as one pixel-exact mosaic PNG.

        No labels: the report sets them in type, so they print at the text's size.
        """
        Image.fromarray(plotting.tile(np.asarray(images)[:16], ncol)).save(self.dir / name)
        self.names.append(name)

    def crop_rows(self, src: Path, name: str, frac: float) -> None:
        """Copy the top ``frac`` of ``src`` in as ``name`` (fewer rows of a strip figure)."""
        if src.exists():
            with Image.open(src) as im:
                im.crop((0, 0, im.width, round(im.height * frac))).save(self.dir / name)
            self.names.append(name)

    def copy(self, src: Path, name: str) -> None:
        """Copy ``src`` in as ``name`` where it exists."""
        if src.exists():
            shutil.copyfile(src, self.dir / name)
            self.names.append(name)

    def copy_untitled(self, src: Path, name: str) -> None:
        """Copy a titled sample grid in as ``name`` without its title band.

        The report sets each panel's label in type at the text's size, so the small title
        that ``evaluate.py`` draws above its grids would repeat it. The title is a first band
        of inked rows, under :data:`TITLE_BAND` of the height, that a white band separates from
        the rest; without one the image is copied whole.
        """
        if not src.exists():
            return
        with Image.open(src) as im:
            rgb = im.convert("RGB")
        rows = np.flatnonzero((np.asarray(rgb.convert("L")) < 250).any(axis=1))
        gaps = np.flatnonzero(np.diff(rows) > 1)  # a white band between two inked rows
        title = len(gaps) and rows[gaps[0]] - rows[0] < TITLE_BAND * rgb.height
        top = int(rows[gaps[0] + 1]) if title else 0
        rgb.crop((0, top, rgb.width, rgb.height)).save(self.dir / name)
        self.names.append(name)


def _copied_figures(name: str, run: RunRecord, out: Values, figs: FigureSet) -> None:
    """A run's printed samples and cold-process figures.

    Its most and least confident samples (of its headline evaluation) and, for a cold run, the
    top rows of its degradation strip and generation trajectory.
    """
    head = headline_eval(run)
    if head is not None and name in GALLERY_ROLES:
        for g in GALLERIES:
            figs.copy_untitled(head.path / f"{g}.png", f"gallery_{name}_{g}.png")
    if run.kind != "cold" or name not in COLD_ROLES:
        return
    for f in COLD_FIGURES:
        src = run.path / f"{f}.png"
        if not src.exists():
            out.notes.append(f"run {name}: {src.name} missing (cold.py draws it).")
        figs.crop_rows(src, f"cold_{name}_{f}_top.png", 0.565)


#: The epochs at which the report sets the Q1 grids side by side.
Q1_GRID_EPOCHS = (10, 24, 50)
#: The epochs at which the report sets the starter recipe's two training seeds side by side.
Q1_SEED_EPOCHS = (24, 30)
#: Q2 sample sets shown uncurated: key -> (run folder, epoch of its fixed-key grid, the
#: evaluation whose least-confident panel sits beside it).
Q2_GRIDS = {
    "melt": ("q2_melt", 10, "ep010_cold2_n5000"),
    "blur": ("q2_ctrl_blur", 10, "ep010_cold2_n5000"),
    "tuned": ("q2_gauss_tuned", 10, "ep010_best_n5000"),
    "untuned": ("q2_gaussian", 10, "ep010_dpmppclip20_n5000"),
    "sediment": ("q2_ctrl_sediment", 10, "ep010_cold2_n5000"),
    "noise": ("q2_ctrl_noise", 10, "ep010_cold2_n5000"),
}
#: Q2 runs in the loss and class figures: key -> (label, run folder, loss name).
Q2_CURVES = {
    "melt": ("melt", "q2_melt", "image MSE"),
    "blur": ("blur only + noise", "q2_ctrl_blur", "image MSE"),
    "tuned": ("Gaussian, tuned", "q2_gauss_tuned", "Min-SNR v-loss"),
    "untuned": ("Gaussian, first recipe", "q2_gaussian", "noise MSE"),
    "sediment": ("sediment only + noise", "q2_ctrl_sediment", "image MSE"),
    "noise": ("noise only", "q2_ctrl_noise", "image MSE"),
}
#: Font size (pt) of the figures drawn here; each is drawn at the width it is printed.
FONT = 8


def _grid_figures(study: Study, out: Values, figs: FigureSet) -> None:
    """The Q1 grids at matched epochs and the Q2 uncurated grids with least-confident panels.

    ``grid_q1_<who>_ep<E>.png`` (``who``: ``pytorch``, ``q1_default``, ``q1_alt``): the first
    16 samples of the PyTorch starter and each run's fixed-key grid at epoch ``E``.
    ``grid_q1_seed_<seed>_ep<E>.png``: each starter-recipe training seed's grid at epoch
    ``E`` (skipped while a seed's run has not reached it).
    ``grid_q2_<key>.png``: each Q2 run's fixed-key grid (training seed 0's sampling key, the
    run's default sampler, not selected); ``unconf_q2_<key>.png``: its evaluation's least
    confident samples.
    """
    res = study.results_dir
    for e in Q1_GRID_EPOCHS:
        srcs = {
            "pytorch": res / "anchors" / "samples" / f"starter_ep{e}_first16.npy",
            "q1_default": res / "q1_default" / "samples" / f"epoch_{e:03d}.npy",
            "q1_alt": res / "q1_alt" / "samples" / f"epoch_{e:03d}.npy",
        }
        for who, src in srcs.items():
            if src.exists():
                figs.mosaic(np.load(src), f"grid_q1_{who}_ep{e}.png")
            else:
                out.notes.append(f"no grid {src} for the Q1 figure.")
    for e in Q1_SEED_EPOCHS:
        for seed, run in Q1_SEED_RUNS.items():
            src = res / run / "samples" / f"epoch_{e:03d}.npy"
            if src.exists():
                figs.mosaic(np.load(src), f"grid_q1_seed_{seed}_ep{e}.png")
    for key, (run, e, tag) in Q2_GRIDS.items():
        src = res / run / "samples" / f"epoch_{e:03d}.npy"
        if src.exists():
            figs.mosaic(np.load(src), f"grid_q2_{key}.png")
        else:
            out.notes.append(f"no grid {src} for the Q2 figure.")
        figs.copy_untitled(res / run / "eval" / tag / "unconfident.png", f"unconf_q2_{key}.png")


def _read_losses(path: Path) -> tuple[list, list]:
    lines = path.read_text().splitlines() if path.exists() else []
    recs = [json.loads(x) for x in lines if x.strip()]
    recs = [r for r in recs if "epoch" in r and "loss" in r]
    return [r["epoch"] for r in recs], [r["loss"] for r in recs]


def _loss_panels(study: Study, out: Values, figs: FigureSet) -> None:
    """``loss.png``: Q1's noise MSE beside each Q2 run's own loss.

    Left: both Q1 runs and the PyTorch starter's log. Right: the Q2 runs, whose objectives
    differ (compare shapes, not levels).
    """
    res = study.results_dir
    fig = Figure(figsize=(6.6, 3.3))
    left, right = fig.subplots(1, 2)
    # fixed margins, not tight_layout: the legends sit in the bottom margin, under the axes
    fig.subplots_adjust(left=0.1, right=0.98, top=0.92, bottom=0.45, wspace=0.28)
    q1 = {
        "starter recipe": _read_losses(res / "q1_default" / "metrics.jsonl"),
        "second set": _read_losses(res / "q1_alt" / "metrics.jsonl"),
        "PyTorch starter (its log)": (
            [r["epoch"] for r in study.anchor_log if "loss" in r],
            [r["loss"] for r in study.anchor_log if "loss" in r],
        ),
    }
    q2 = {f"{lab} ({loss})": _read_losses(res / run / "metrics.jsonl")
          for lab, run, loss in Q2_CURVES.values()}  # fmt: skip
    if not any(x for x, _ in [*q1.values(), *q2.values()]):
        out.notes.append("no training losses recorded: loss.png not drawn.")
        return
    for ax, series, title in ((left, q1, "Q1: noise MSE"), (right, q2, "Q2: each run's own loss")):
        for lab, (x, y) in series.items():
            if x:
                ax.plot(x, y, lw=1.2, label=lab)
        ax.set_yscale("log")
        ax.set_xlabel("epoch", fontsize=FONT)
        ax.set_title(title, fontsize=FONT)
        ax.tick_params(which="both", labelsize=FONT - 1)
        ax.yaxis.set_minor_formatter(NullFormatter())  # decade labels only: no crowding
        if ax.get_legend_handles_labels()[0]:  # below the axes: no legend over data
            ax.legend(fontsize=FONT - 1, frameon=False, loc="upper center", ncol=1,
                      bbox_to_anchor=(0.5, -0.2))  # fmt: skip
    left.set_ylabel("epoch-mean training loss", fontsize=FONT)
    left.set_yticks([0.02, 0.05, 0.1], ["0.02", "0.05", "0.1"])  # within one decade
    fig.savefig(figs.dir / "loss.png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    figs.names.append("loss.png")


def _q2_class_figure(study: Study, out: Values, figs: FigureSet) -> None:
    """``class_q2.png``: the predicted-class shares of each Q2 model's N = 5000 evaluation."""
    groups = {}
    for key, (run, _, tag) in Q2_GRIDS.items():
        e = load_eval(study.results_dir / run / "eval" / tag, [])
        if e is not None and isinstance(e.metrics.get("class_hist"), list):
            groups[Q2_CURVES[key][0]] = e.metrics["class_hist"]
    if not groups:
        out.notes.append("no Q2 evaluation with class shares: class_q2.png not drawn.")
        return
    fig = Figure(figsize=(6.6, 1.9))
    ax = fig.subplots()
    width = 0.8 / len(groups)
    for i, (lab, h) in enumerate(groups.items()):
        ax.bar(np.arange(10) + (i - (len(groups) - 1) / 2) * width, h, width, label=lab)
    ax.axhline(0.1, color="k", ls="--", lw=0.8)
    ax.set_xticks(range(10))
    ax.set_xlabel("predicted digit", fontsize=FONT)
    ax.set_ylabel("share of samples", fontsize=FONT)
    ax.tick_params(which="both", labelsize=FONT - 1)
    ax.legend(fontsize=FONT - 1, frameon=False, ncol=min(3, len(groups)), loc="lower center",
              bbox_to_anchor=(0.5, 1.0))  # fmt: skip
    fig.tight_layout()
    fig.savefig(
        figs.dir / "class_q2.png", dpi=150, bbox_inches="tight", metadata={"Software": None}
    )
    figs.names.append("class_q2.png")


#: 10-epoch runs (cosine decay to zero) drawn as reference markers on the budget figure:
#: label -> (run folder, evaluation tag).
BUDGET_MARKERS = {
    "melt, 10 epochs, cosine decay": ("q2_melt", "ep010_cold2_n5000"),
    "blur only + noise, 10 epochs, cosine decay": ("q2_ctrl_blur", "ep010_cold2_n5000"),
    "Gaussian, tuned, 10 epochs, cosine decay": ("q2_gauss_tuned", "ep010_best_n5000"),
}


def _budget_figure(study: Study, out: Values, figs: FigureSet) -> None:
    """``budget.png``: FD against training CPU hours of the 30-epoch runs (series ``budget``).

    Each 30-epoch run is a line with its 95% intervals; the 10-epoch runs that anneal to zero
    (:data:`BUDGET_MARKERS`) are single markers, so the cost of not annealing shows too.
    """
    series = {k: v for k, v in out.series.get("budget", {}).items() if v}
    if not series:
        out.notes.append("no 30-epoch budget run evaluated yet: budget.png not drawn.")
        return
    fig = Figure(figsize=(6.6, 2.6))
    ax = fig.subplots()
    for i, (label, pts) in enumerate(series.items()):
        x, y = [p["cpu_h"] for p in pts], [p["fd"] for p in pts]
        err = [[p["fd"] - p["fd_ci"][0] for p in pts], [p["fd_ci"][1] - p["fd"] for p in pts]]
        ax.errorbar(x, y, yerr=err, color=f"C{i}", marker="o", ms=3, lw=1.2, capsize=2,
                    label=f"{label}, 30 epochs, constant lr")  # fmt: skip
    tops: dict[int, tuple[float, float]] = {}  # epoch -> (CPU hours, highest interval end)
    for p in (p for pts in series.values() for p in pts):
        h, top = tops.get(p["epoch"], (p["cpu_h"], 0.0))
        tops[p["epoch"]] = (max(h, p["cpu_h"]), max(top, p["fd_ci"][1]))
    for e, (h, top) in tops.items():  # one label per epoch, above both curves
        ax.annotate(f"ep {e}", (h, top), fontsize=FONT - 1, ha="center", xytext=(0, 4),
                    textcoords="offset points")  # fmt: skip
    ax.set_ylim(top=1.35 * max(top for _, top in tops.values()))  # room for the labels
    for i, (label, (run, tag)) in enumerate(BUDGET_MARKERS.items()):
        hours = cpu_hours_at(study, run, 10)
        e = load_eval(study.results_dir / run / "eval" / tag, [])
        if hours is not None and e is not None:
            ax.plot([hours], [e.metrics["fd"]], marker="^s*"[i % 3], ls="none", color="k",
                    ms=5, label=label)  # fmt: skip
    ax.set_yscale("log")
    for axis_fmt in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_fmt(FormatStrFormatter("%g"))  # 6, 10, 20 rather than 6 x 10^0
    ax.set_xlabel("training CPU hours (process time)", fontsize=FONT)
    ax.set_ylabel("FD, N = 5000 (95% CI)", fontsize=FONT)
    ax.tick_params(which="both", labelsize=FONT - 1)
    ax.legend(fontsize=FONT - 1, frameon=False, ncol=2, loc="upper center",
              bbox_to_anchor=(0.5, -0.22))  # fmt: skip
    fig.tight_layout()
    fig.savefig(figs.dir / "budget.png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    figs.names.append("budget.png")


def draw_figures(study: Study, out: Values, fig_dir: Path) -> list[str]:
    """Draw or copy every figure (each skipped with a note when its inputs are missing).

    Only the figures ``report.typ`` prints; reads the ``budget`` series of the evidence tables.

    Args:
        study: The study.
        out: The values computed so far (series read, notes added).
        fig_dir: The folder to write into.

    Returns:
        The names of the figures written, sorted.
    """
    figs = FigureSet(fig_dir)
    _grid_figures(study, out, figs)
    _loss_panels(study, out, figs)
    _q2_class_figure(study, out, figs)
    _budget_figure(study, out, figs)
    for name, run in study.runs.items():
        _copied_figures(name, run, out, figs)
    return sorted(set(figs.names))
