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
from matplotlib.figure import Figure
from PIL import Image
from study import (
    ANCHOR_EPOCHS,
    KNOWN_ANCHORS,
    RunRecord,
    Study,
    anchor_display,
    anchor_wall_s,
    distinct_runs,
    epoch_series,
    headline_eval,
    load_eval,
    select_epochs,
)
from values import Values, eval_summary, sampler_text

from jaxdiff.app import plotting

#: Galleries written by ``evaluate.py`` that the report copies (file stem -> figure kind).
GALLERIES = ("confident", "unconfident", "nn_closest", "nn_farthest", "per_class", "class_hist")
#: Cold-run figures written by ``cold.py``.
COLD_FIGURES = ("degradation_strip", "trajectory", "restoration")
#: Figures written by ``experiments/analyze_cold.py`` into a cold run's ``analysis/``.
ANALYSIS_FIGURES = ("restoration_error", "start_fitted", "start_oracle", "start_single")
#: The metrics of the fidelity figure, with their axis labels.
FIDELITY_PANELS = {
    "fd": "FD (95% CI)",
    "kid": "KID (95% CI)",
    "precision": "precision",
    "recall": "recall",
    "class_tv": "class TV from uniform",
    "nn_dist_ratio": "NN distance ratio",
}

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


def _loss_figures(study: Study, figs: FigureSet) -> None:
    """``loss_all.png`` and ``loss_<run>.png``: one curve per run folder, under its first role."""
    with_records = {n: r for n, r in distinct_runs(study) if r.records}
    if with_records:
        series = {
            f"{r.display} ({'image MSE' if r.kind == 'cold' else 'ε-MSE'})": (
                [x["epoch"] for x in r.records],
                [x["loss"] for x in r.records],
            )
            for r in with_records.values()
        }
        figs.draw(
            "loss_all.png",
            plotting.plot_curves,
            series,
            xlabel="epoch",
            ylabel="epoch-mean training loss",
            title="training loss, all runs",
            logy=True,
        )
    for name, run in with_records.items():
        figs.draw(f"loss_{name}.png", plotting.plot_loss_curve, run.records, title=run.display)


def _sample_figures(study: Study, figs: FigureSet) -> None:
    """``samples_<run>.png``: up to six epochs of each run's fixed-key grid."""
    for name, run in study.runs.items():
        eps = select_epochs(run.sample_epochs, 6)
        if not eps:  # e.g. trained with --grid-n 0; no figure, nothing missing
            continue
        grids = [np.load(run.path / "samples" / f"epoch_{e:03d}.npy") for e in eps]
        figs.draw(
            f"samples_{name}.png",
            plotting.save_panels,
            grids,
            [f"epoch {e}" for e in eps],
            ncol=min(6, len(eps)),
            title=f"{run.display}: fixed-key samples through training",
        )


def _anchor_grid_figure(study: Study, out: Values, figs: FigureSet) -> None:
    """``q1_matched.png``: jaxdiff's and PyTorch's starter grids at matched epochs."""
    run = study.runs.get("q1_default")
    src = study.results_dir / "anchors" / "samples"
    panels, labels = [], []
    for e in ANCHOR_EPOCHS:
        ours = run.path / "samples" / f"epoch_{e:03d}.npy" if run else None
        theirs = src / f"starter_ep{e}_first16.npy"
        if ours is None or not ours.exists() or not theirs.exists():
            out.notes.append(f"no grids of both starters at epoch {e}: {ours}, {theirs}.")
            continue
        panels += [np.load(ours)[:16], np.load(theirs)[:16]]
        labels += [f"jaxdiff, epoch {e}", f"PyTorch, epoch {e}"]
    if panels:
        figs.draw(
            "q1_matched.png",
            plotting.save_panels,
            panels,
            labels,
            ncol=4,
            title="the starter recipe at matched epochs: jaxdiff and PyTorch (16 samples each)",
        )


def _with_ci(x: list, evs: list, key: str) -> tuple:
    """``(x, y, lo, hi)`` of a metric over evaluations, ``(x, y)`` where an interval is missing."""
    y = [e.metrics.get(key) for e in evs]
    cis = [e.metrics.get(f"{key}_ci") for e in evs]
    if all(isinstance(c, list | tuple) and len(c) == 2 for c in cis):
        return x, y, [c[0] for c in cis], [c[1] for c in cis]
    return x, y


def _anchor_points(study: Study, key: str) -> dict:
    """The PyTorch starter's own samples as reference markers of one metric."""
    pts = sorted(
        (a.epoch, a.metrics[key])
        for a in study.anchors.values()
        if a.epoch is not None and isinstance(a.metrics.get(key), int | float)
    )
    label = "PyTorch starter's own samples (1000-step ancestral, N=1000)"
    return {label: ([p[0] for p in pts], [p[1] for p in pts])} if pts else {}


def _fidelity_figure(study: Study, out: Values, figs: FigureSet) -> None:
    """``fidelity_epochs.png``: each metric over epochs, one curve per run (series ``epochs``)."""
    series: dict[str, dict] = {k: {} for k in FIDELITY_PANELS}
    for name, run in distinct_runs(study):
        evs = epoch_series(run)
        if not evs:
            continue
        ep = [e.epoch for e in evs]
        ns = sorted({e.metrics.get("n") or 0 for e in evs})
        n_text = f"N={ns[0]}" if len(ns) == 1 else f"N={ns[0]}-{ns[-1]}"
        lab = f"{run.display} ({sampler_text(evs[0])}, {n_text})"
        for k in FIDELITY_PANELS:
            if all(isinstance(e.metrics.get(k), int | float) for e in evs):
                series[k][lab] = _with_ci(ep, evs, k)
        out.series.setdefault("epochs", {})[name] = [eval_summary(e) for e in evs]
    if not series["fd"]:
        out.notes.append("no evaluations over epochs: fidelity_epochs.png not drawn.")
        return
    panels = [
        {"series": series[k], "points": _anchor_points(study, k), "xlabel": "epoch",
         "ylabel": label, "logy": k == "fd", "legend": k == "fd"}
        for k, label in FIDELITY_PANELS.items()
    ]  # fmt: skip
    figs.draw("fidelity_epochs.png", plotting.plot_ci_panels, panels, ncol=3, legend_below=True)


def _steps_figure(study: Study, out: Values, figs: FigureSet) -> None:
    """``quality_steps.png``: FD and sampling cost against steps (series ``steps``)."""
    fd, cost = {}, {}
    for key, s in out.series.get("steps", {}).items():
        if len(s["steps"]) < 2:
            continue
        name, sampler = key.split("/", 1)
        lab = f"{study.runs[name].display}: {sampler} (epoch {s['epoch']})"
        lo = [c[0] if c else None for c in s["fd_ci"]]
        hi = [c[1] if c else None for c in s["fd_ci"]]
        fd[lab] = (s["steps"], s["fd"], lo, hi) if None not in lo + hi else (s["steps"], s["fd"])
        if None not in s["sec_per_1k"]:
            cost[lab] = (s["steps"], s["sec_per_1k"])
    if not fd:
        out.notes.append(
            "no run evaluated at two or more step counts: quality_steps.png not drawn."
        )
        return
    hl = {anchor_display(t): a.metrics["fd"] for t, a in study.anchors.items()}
    panels = [
        {"series": fd, "hlines": hl, "xlabel": "sampling steps", "ylabel": "FD (95% CI)",
         "logx": True, "logy": True},
        {"series": cost, "xlabel": "sampling steps", "ylabel": "seconds per 1000 samples",
         "logx": True, "logy": True},
    ]  # fmt: skip
    figs.draw("quality_steps.png", plotting.plot_ci_panels, panels)


def _ttq_series(study: Study, out: Values) -> tuple[dict, dict]:
    """FD against training CPU and wall minutes per run folder (series ``ttq``)."""
    cpu, wall = {}, {}
    distinct = dict(distinct_runs(study))
    for name, pts in out.series.get("ttq", {}).items():
        if not pts or name not in distinct:
            continue
        disp = study.runs[name].display
        lo = [p["fd_ci"][0] if p["fd_ci"] else None for p in pts]
        hi = [p["fd_ci"][1] if p["fd_ci"] else None for p in pts]
        fds = [p["fd"] for p in pts]
        ci = (lo, hi) if None not in lo + hi else ()
        if None not in [p["cpu_min"] for p in pts]:
            cpu[disp] = ([p["cpu_min"] for p in pts], fds, *ci)
        if None not in [p["wall_min"] for p in pts]:
            wall[disp] = ([p["wall_min"] for p in pts], fds, *ci)
    return cpu, wall


def _ttq_figure(study: Study, out: Values, figs: FigureSet) -> None:
    """``time_to_quality.png``: FD against training time, the starter's milestones marked."""
    cpu, wall = _ttq_series(study, out)
    if not wall:
        out.notes.append("no evaluated run with timed epochs: time_to_quality.png not drawn.")
        return
    hl = {  # the course's milestones: symbols (24) and digits (50)
        f"{KNOWN_ANCHORS[t][0]} (FD)": a.metrics["fd"]
        for t, a in sorted(study.anchors.items())
        if t in KNOWN_ANCHORS and a.epoch in (24, 50)
    }
    timed = sorted(
        (w / 60, a.metrics["fd"], a.epoch)
        for a in study.anchors.values()
        if (w := anchor_wall_s(study, a.epoch)) is not None
    )
    pts = {}
    if timed:
        eps = ", ".join(str(e) for _, _, e in timed)
        label = f"PyTorch starter at its training time (epochs {eps})"
        pts[label] = ([t[0] for t in timed], [t[1] for t in timed])
    panels = [
        {"series": cpu, "hlines": hl, "xlabel": "training CPU minutes (process time)",
         "ylabel": "FD (95% CI)", "logy": True, "logx": True},
        {"series": wall, "hlines": hl, "points": pts, "xlabel": "training wall minutes",
         "ylabel": "FD (95% CI)", "logy": True, "logx": True},
    ]  # fmt: skip
    figs.draw("time_to_quality.png", plotting.plot_ci_panels, panels, legend_below=True)


def _class_figure(study: Study, figs: FigureSet) -> None:
    """``class_hist.png``: the predicted classes of each headline and anchor evaluation."""
    groups = {}
    for run in study.runs.values():
        e = headline_eval(run)
        if e is not None and isinstance(e.metrics.get("class_hist"), list):
            groups[run.display] = e.metrics["class_hist"]
    for t, a in sorted(study.anchors.items()):
        if isinstance(a.metrics.get("class_hist"), list):
            groups[anchor_display(t)] = a.metrics["class_hist"]
    if not groups:
        return
    figs.draw(
        "class_hist.png",
        plotting.plot_grouped_bars,
        groups,
        [str(i) for i in range(10)],
        ylabel="share of samples",
        title="predicted class of generated digits (dashed: uniform)",
        hline=0.1,
    )


def _copied_figures(name: str, run: RunRecord, out: Values, figs: FigureSet) -> None:
    """A run's galleries (of its headline evaluation), cold figures and analysis figures."""
    head = headline_eval(run)
    if head is not None:
        for g in GALLERIES:
            figs.copy(head.path / f"{g}.png", f"gallery_{name}_{g}.png")
    if run.kind != "cold":
        return
    for f in COLD_FIGURES:
        src = run.path / f"{f}.png"
        if not src.exists():
            out.notes.append(f"run {name}: {src.name} missing (cold.py draws it).")
        figs.copy(src, f"cold_{name}_{f}.png")
        figs.crop_rows(src, f"cold_{name}_{f}_top.png", 0.565)
    analysis = run.path / "analysis"
    if (analysis / "start_states.json").exists():  # analysed runs (see sections.cold_analysis)
        for f in ANALYSIS_FIGURES:
            figs.copy(analysis / f"{f}.png", f"an_{name}_{f}.png")


#: The epochs at which the report sets the Q1 grids side by side.
Q1_GRID_EPOCHS = (10, 24, 50)
#: Q2 sample sets shown uncurated: key -> (run folder, epoch of its fixed-key grid, the
#: evaluation whose least-confident panel sits beside it).
Q2_GRIDS = {
    "melt": ("q2_melt", 10, "ep010_cold2_n5000"),
    "tuned": ("q2_gauss_tuned", 10, "ep010_best_n5000"),
    "untuned": ("q2_gaussian", 10, "ep010_dpmppclip20_n5000"),
    "noise": ("q2_ctrl_noise", 10, "ep010_cold2_n5000"),
}
#: Q2 runs in the loss and class figures: key -> (label, run folder, loss name).
Q2_CURVES = {
    "melt": ("melt", "q2_melt", "image MSE"),
    "tuned": ("Gaussian, tuned", "q2_gauss_tuned", "Min-SNR v-loss"),
    "untuned": ("Gaussian, first recipe", "q2_gaussian", "noise MSE"),
    "noise": ("noise-only control", "q2_ctrl_noise", "image MSE"),
}
#: Font size (pt) of the figures drawn here; each is drawn at the width it is printed.
FONT = 8


def _grid_figures(study: Study, out: Values, figs: FigureSet) -> None:
    """The Q1 grids at matched epochs and the Q2 uncurated grids with least-confident panels.

    ``grid_q1_<who>_ep<E>.png`` (``who``: ``pytorch``, ``q1_default``, ``q1_alt``): the first
    16 samples of the PyTorch starter and each run's fixed-key grid at epoch ``E``.
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
    for key, (run, e, tag) in Q2_GRIDS.items():
        src = res / run / "samples" / f"epoch_{e:03d}.npy"
        if src.exists():
            figs.mosaic(np.load(src), f"grid_q2_{key}.png")
        else:
            out.notes.append(f"no grid {src} for the Q2 figure.")
        figs.copy(res / run / "eval" / tag / "unconfident.png", f"unconf_q2_{key}.png")


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
    fig = Figure(figsize=(6.6, 2.7))
    left, right = fig.subplots(1, 2)
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
        ax.legend(
            fontsize=FONT - 1,
            frameon=False,
            loc="upper center",
            ncol=1,
            bbox_to_anchor=(0.5, -0.36),
        )  # below the axes: no legend over data
    left.set_ylabel("epoch-mean training loss", fontsize=FONT)
    fig.tight_layout()
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
    ax.legend(fontsize=FONT - 1, frameon=False, ncol=len(groups), loc="lower center",
              bbox_to_anchor=(0.5, 1.0))  # fmt: skip
    fig.tight_layout()
    fig.savefig(
        figs.dir / "class_q2.png", dpi=150, bbox_inches="tight", metadata={"Software": None}
    )
    figs.names.append("class_q2.png")


def draw_figures(study: Study, out: Values, fig_dir: Path) -> list[str]:
    """Draw or copy every figure (each skipped with a note when its inputs are missing).

    Reads the ``steps`` and ``ttq`` series the sections computed; adds the ``epochs`` series.

    Args:
        study: The study.
        out: The values computed so far (series read, notes and the ``epochs`` series added).
        fig_dir: The folder to write into.

    Returns:
        The names of the figures written, sorted.
    """
    figs = FigureSet(fig_dir)
    _loss_figures(study, figs)
    _sample_figures(study, figs)
    _anchor_grid_figure(study, out, figs)
    _fidelity_figure(study, out, figs)
    _steps_figure(study, out, figs)
    _ttq_figure(study, out, figs)
    _class_figure(study, figs)
    _grid_figures(study, out, figs)
    _loss_panels(study, out, figs)
    _q2_class_figure(study, out, figs)
    for name, run in study.runs.items():
        _copied_figures(name, run, out, figs)
    return sorted(set(figs.names))
