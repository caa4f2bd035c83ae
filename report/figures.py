"""The report's figures: drawn from the study, or copied from the runs and evaluations.

Drawing goes through :mod:`jaxdiff.app.plotting`, the library's one matplotlib module, which
builds each figure with matplotlib's object API (:class:`matplotlib.figure.Figure`): no backend
is switched and no pyplot state is touched. Each figure whose inputs are missing is skipped
with a note; ``report.typ`` shows a placeholder for it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
            f"{r.display} ({'L1/L2' if r.kind == 'cold' else 'ε-MSE'})": (
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
    analysis = run.path / "analysis"
    if (analysis / "start_states.json").exists():  # analysed runs (see sections.cold_analysis)
        for f in ANALYSIS_FIGURES:
            figs.copy(analysis / f"{f}.png", f"an_{name}_{f}.png")


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
    for name, run in study.runs.items():
        _copied_figures(name, run, out, figs)
    return sorted(set(figs.names))
