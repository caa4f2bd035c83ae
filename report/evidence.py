"""The report's evidence tables: named evaluations, row by row, for Q1 and Q2.

Each table lists evaluation folders (``results/<run>/eval/<tag>``) in a fixed order, so a
comparison shows exactly the sample sets it claims (equal ``N`` within a block). A row whose
evaluation is not recorded yet reads "pending" (the run is queued, ``study.json``'s
``q2_evidence`` group), never a number. Numbers go under ``ex.<table>.<row>.*``; the settings
of the melt process and its start-state mixture under ``q2a.*``; training times under
``time.*`` (with the training commands of those runs, ``time_commands.json``); the speed
host under ``bench.host``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
from configs import training_command
from study import EvalRecord, Study, anchor_wall_s, load_eval
from values import (
    Values,
    ci_text,
    clean_by,
    div,
    first_clean_epoch,
    fmt,
    grid_saturation,
    intervals_overlap,
    pct,
    sampler_text,
)

from jaxdiff import degradations, start_states

EVIDENCE_HEADER = ["model", "epoch", "sampler", "N", "FD [95% CI]", "precision", "recall",
                   "rarest class %"]  # fmt: skip
TIME_HEADER = ["model", "epochs", "train wall h", "train CPU h", "FD at the end", "N"]

#: (row key, label, evaluation folder relative to the results tree)
Row = tuple[str, str, str]

Q1_ROWS: list[Row] = [
    ("d10", "starter recipe", "q1_default/eval/ep010_ancestral_n500"),
    ("a10", "second set", "q1_alt/eval/ep010_ancestral_n500"),
    ("a10raw", "second set, raw weights", "q1_alt/eval/ep010_raw_ancestral_n500"),
    ("p24", "PyTorch starter", "anchors/eval/starter_ep24"),
    ("d24", "starter recipe", "q1_default/eval/ep024_ancestral"),
    ("s1e24", "starter recipe, seed 1", "q1_default_s1/eval/ep024_ancestral"),
    ("a24", "second set", "q1_alt/eval/ep024_ancestral"),
    ("d30", "starter recipe", "q1_default/eval/ep030_ancestral"),
    ("s1e30", "starter recipe, seed 1", "q1_default_s1/eval/ep030_ancestral"),
    ("p50", "PyTorch starter", "anchors/eval/starter_ep50"),
    (
        "p50j",
        "PyTorch epoch-50 weights, jaxdiff sampler",
        "anchors/eval/starter_ep50_jaxdiff_sampler",
    ),
    ("d50", "starter recipe", "q1_default/eval/ep050_ancestral"),
    ("d50n2k", "starter recipe", "q1_default/eval/ep050_ancestral_n2000"),
    ("a50n2k", "second set", "q1_alt/eval/ep050_ancestral_n2000"),
    ("d50ddim", "starter recipe", "q1_default/eval/ep050_ddim100_n10000"),
    ("a50ddim", "second set", "q1_alt/eval/ep050_ddim100_n10000"),
]
Q1_SEED_ROWS: list[Row] = [
    ("s0e24", "seed 0, epoch 24", "q1_default/eval/ep024_ancestral"),
    ("s1e24", "seed 1, epoch 24", "q1_default_s1/eval/ep024_ancestral"),
    ("s0e30", "seed 0, epoch 30", "q1_default/eval/ep030_ancestral"),
    ("s1e30", "seed 1, epoch 30", "q1_default_s1/eval/ep030_ancestral"),
]
#: The starter recipe's training seeds: seed -> run folder (fixed-key grids every epoch).
Q1_SEED_RUNS = {"s0": "q1_default", "s1": "q1_default_s1"}
CONTROL_ROWS: list[Row] = [
    ("melt", "melt (sediment + blur + noise)", "q2_melt/eval/ep010_cold2_n5000"),
    ("noise", "noise only (identity degradation)", "q2_ctrl_noise/eval/ep010_cold2_n5000"),
    ("blur", "blur only + noise", "q2_ctrl_blur/eval/ep010_cold2_n5000"),
    ("sediment", "sediment only + noise", "q2_ctrl_sediment/eval/ep010_cold2_n5000"),
    ("mix", "melt's start mixture, no restorer", "q2_melt/eval/ep010_start_mixture_n5000"),
    ("oracle", "melt from melted test digits", "q2_melt/eval/ep010_cold2_oracle_n5000"),
    (
        "blur_oracle",
        "blur only from blurred test digits",
        "q2_ctrl_blur/eval/ep010_cold2_oracle_n5000",
    ),
]
GAUSS_ROWS: list[Row] = [
    ("melt", "melt", "q2_melt/eval/ep010_cold2_n5000"),
    ("melt_s1", "melt, seed 1", "q2_melt_s1/eval/ep010_cold2_n5000"),
    ("blur", "blur only + noise", "q2_ctrl_blur/eval/ep010_cold2_n5000"),
    ("blur_s1", "blur only + noise, seed 1", "q2_ctrl_blur_s1/eval/ep010_cold2_n5000"),
    ("tuned", "Gaussian, tuned", "q2_gauss_tuned/eval/ep010_best_n5000"),
    ("tuned_s1", "Gaussian, tuned, seed 1", "q2_gauss_tuned_s1/eval/ep010_best_n5000"),
    ("untuned", "Gaussian, first recipe", "q2_gaussian/eval/ep010_dpmppclip20_n5000"),
]
#: Pairs of training seeds whose spread is quoted (``ex.seed.<key>.*``): key -> (the rows'
#: number prefix, seed-0 row, seed-1 row), from ``GAUSS_ROWS`` and ``Q1_ROWS``.
SEED_PAIRS = {
    "melt": ("ex.q2_gauss", "melt", "melt_s1"),
    "blur": ("ex.q2_gauss", "blur", "blur_s1"),
    "tuned": ("ex.q2_gauss", "tuned", "tuned_s1"),
    "starter_e30": ("ex.q1", "d30", "s1e30"),
}
#: The same sample sets scored in the second feature space: (key, label, LeNet evaluation);
#: the MLP evaluation is the folder with ``_mlp`` appended. Seed 0 only (the seed-1 sets are
#: in ``results/q2_evidence.md``).
FEATURE_ROWS: list[Row] = (
    [r for r in GAUSS_ROWS if not r[0].endswith("_s1")]
    + [r for r in CONTROL_ROWS if r[0] in ("sediment", "noise")]
    + [
        ("melt30", "melt, 30 epochs", "q2_melt_long/eval/ep030_cold2_n5000"),
        ("tuned30", "Gaussian, tuned, 30 epochs", "q2_gauss_long/eval/ep030_best_n5000"),
    ]
)
FEATURE_HEADER = ["model", "LeNet FD [95% CI]", "MLP FD [95% CI]", "MLP precision",
                  "MLP recall"]  # fmt: skip
#: The 30-epoch budget runs (constant learning rate after warm-up): key -> (label, run,
#: evaluation tag pattern), evaluated at :data:`BUDGET_EPOCHS`.
BUDGET_RUNS = {
    "melt": ("melt", "q2_melt_long", "ep{e:03d}_cold2_n5000"),
    "tuned": ("Gaussian, tuned", "q2_gauss_long", "ep{e:03d}_best_n5000"),
}
BUDGET_EPOCHS = (5, 10, 20, 30)
BUDGET_HEADER = ["model", "epoch", "train CPU h", "FD [95% CI]", "precision", "recall",
                 "rarest class %"]  # fmt: skip
#: (key, label, run folder, evaluation tag whose FD is quoted)
TIME_ROWS = [
    ("d", "starter recipe (CNN)", "q1_default", "ep050_ancestral_n2000"),
    ("a", "second set (CNN)", "q1_alt", "ep050_ancestral_n2000"),
    ("melt", "melt (UNet)", "q2_melt", "ep010_cold2_n5000"),
    ("blur", "blur only + noise (UNet)", "q2_ctrl_blur", "ep010_cold2_n10000"),
    ("tuned", "Gaussian, tuned (UNet)", "q2_gauss_tuned", "ep010_best_n5000"),
    ("untuned", "Gaussian, first recipe (UNet)", "q2_gaussian", "ep010_dpmppclip20_n5000"),
]


def _load(study: Study, rel: str) -> EvalRecord | None:
    """The evaluation at ``results/<rel>`` (``None`` while not recorded)."""
    folder = study.results_dir / rel
    return load_eval(folder, []) if (folder / "metrics.json").exists() else None


def _rarest(e: EvalRecord) -> float | None:
    hist = e.metrics.get("class_hist")
    return pct(float(min(hist))) if isinstance(hist, list) and hist else None


def _rows(study: Study, out: Values, name: str, rows: list[Row], pending: bool) -> None:
    """Table ``name`` from ``rows``; ``ex.<name>.<key>.*`` per recorded row."""
    cells = []
    for key, label, rel in rows:
        e = _load(study, rel)
        out.put(f"ex.{name}.{key}.ready", e is not None)
        if e is None:
            if pending:
                cells.append([label, "–", "–", "–", "pending", "–", "–", "–"])
            continue
        out.put_eval(f"ex.{name}.{key}", e)
        r = _rarest(e)
        out.put(f"ex.{name}.{key}.rarest_pct", r, fmt(r, 1))
        epoch = "–" if e.epoch is None else str(e.epoch)
        sampler = "start state only" if e.sampler == "start" else sampler_text(e)
        m = e.metrics
        cells.append([label, epoch, sampler, str(m.get("n", "–")), ci_text(m, "fd", 1),
                      fmt(m.get("precision"), 3), fmt(m.get("recall"), 3), fmt(r, 1)])  # fmt: skip
    if all(c[4] == "pending" for c in cells):  # nothing recorded: an empty table, no placeholders
        cells = []
    out.table(name, EVIDENCE_HEADER, cells)


def _times(study: Study, out: Values) -> None:
    """Table ``time``: training wall and CPU hours with the final FD; the PyTorch starter's."""
    cells, commands = [], []
    for key, label, run, tag in TIME_ROWS:
        path = study.results_dir / run / "metrics.jsonl"
        if not path.exists():
            continue
        commands.append({"run": run, "command": _command(study, run)})
        recs = [r for r in _jsonl(path) if "epoch" in r]
        last = recs[-1] if recs else {}
        wall, cpu = div(last.get("wall_s"), 3600), div(last.get("cpu_s"), 3600)
        e = _load(study, f"{run}/eval/{tag}")
        out.put(f"time.{key}.wall_h", wall, fmt(wall, 2))
        out.put(f"time.{key}.cpu_h", cpu, fmt(cpu, 2))
        fd = ci_text(e.metrics, "fd", 1) if e else "–"
        n = str(e.metrics.get("n")) if e else "–"
        cells.append([label, str(last.get("epoch", "–")), fmt(wall, 2), fmt(cpu, 2), fd, n])
    wall = div(anchor_wall_s(study, 50), 3600)
    out.put("time.starter.wall_h", wall, fmt(wall, 2))
    anchor = study.anchors.get("starter_ep50")
    if wall is not None and anchor is not None:
        row = ["PyTorch starter (CNN)", "50", fmt(wall, 2), "–"]
        cells.insert(0, row + [ci_text(anchor.metrics, "fd", 1), str(anchor.metrics.get("n"))])
    out.table("time", TIME_HEADER, cells)
    out.files["time_commands.json"] = commands


def _command(study: Study, run: str) -> str | None:
    """The command that trains ``run`` (its recorded command line), or ``None``."""
    path = study.results_dir / run / "config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    if "config" not in cfg:
        return None
    return training_command(cfg["config"], f"results/{run}", cfg.get("invocations"))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _q2a_settings(study: Study, out: Values) -> None:
    """``q2a.*``: melt's settings, from the run's config and the library's defaults.

    The blur widths and the start-state mixture are not config values: they are read from the
    signatures of :func:`jaxdiff.degradations.melt` and
    :func:`jaxdiff.start_states.fit_start_distribution`, so the report follows the code.
    """
    run = study.runs.get("q2_custom")
    proc = run.config.get("process", {}) if run else {}
    for k in ("T", "noise", "noise_schedule", "degradation", "loss", "sample_noise"):
        v = proc.get(k)
        out.put(f"q2a.{k}", v, None if not isinstance(v, float) else fmt(v, 2))
    melt = inspect.signature(degradations.melt).parameters
    for k in ("sigma_min", "sigma_max"):
        v = float(melt[k].default)
        out.put(f"q2a.{k}", v, f"{v:g}")
    fit = inspect.signature(start_states.fit_start_distribution).parameters
    for k in ("n_components", "n_pca", "max_images", "iters"):
        v = int(fit[k].default)
        out.put(f"q2a.{k}", v, f"{v:,}")


def _bench_host(study: Study, out: Values) -> None:
    """``bench.host``: the benchmark's recorded CPU model and core count."""
    cfg = (study.bench or {}).get("config")
    cpu = cfg.get("cpu") if isinstance(cfg, dict) and isinstance(cfg.get("cpu"), dict) else {}
    if cpu.get("model"):
        cores = f", {cpu['cores']} cores" if cpu.get("cores") else ""
        out.put("bench.host", cpu["model"], f"{cpu['model']}{cores}")


def _class_shares(study: Study, out: Values) -> None:
    """``ex.cls.<row>.*``: the share of the commonest class of the Q1 evaluations."""
    for key, _, rel in Q1_ROWS:
        e = _load(study, rel)
        hist = e.metrics.get("class_hist") if e else None
        if isinstance(hist, list) and hist:
            out.put(f"ex.q1.{key}.top_digit", int(np.argmax(hist)))
            v = pct(float(max(hist)))
            out.put(f"ex.q1.{key}.top_pct", v, fmt(v, 0))


def cpu_hours_at(study: Study, run: str, epoch: int) -> float | None:
    """A run's cumulative training CPU hours at the end of ``epoch`` (``None`` if unrecorded).

    Args:
        study: The study.
        run: The run folder under the results tree.
        epoch: The epoch.

    Returns:
        The hours, from the run's ``metrics.jsonl``.
    """
    path = study.results_dir / run / "metrics.jsonl"
    if not path.exists():
        return None
    recs = [r for r in _jsonl(path) if r.get("epoch") == epoch]
    return div(recs[-1].get("cpu_s"), 3600) if recs else None


def _seed_spread(out: Values) -> None:
    """``ex.seed.<model>.{diff,mean,ci_width,overlap}``: two training seeds against sampling noise.

    ``overlap``: whether the two seeds' sampling intervals overlap.
    """
    for key, (prefix, a, b) in SEED_PAIRS.items():
        fa, fb = out.numbers.get(f"{prefix}.{a}.fd"), out.numbers.get(f"{prefix}.{b}.fd")
        if not fa or not fb or fa["v"] is None or fb["v"] is None:
            continue
        diff = abs(fa["v"] - fb["v"])
        out.put(f"ex.seed.{key}.diff", diff, fmt(diff, 1))
        out.put(f"ex.seed.{key}.mean", (fa["v"] + fb["v"]) / 2, fmt((fa["v"] + fb["v"]) / 2, 1))
        ci_a, ci_b = (out.numbers[f"{prefix}.{k}.fd_ci"]["v"] for k in (a, b))
        width = float(np.mean([ci_a[1] - ci_a[0], ci_b[1] - ci_b[0]]))
        out.put(f"ex.seed.{key}.ci_width", width, fmt(width, 1))
        out.put(f"ex.seed.{key}.overlap", intervals_overlap(ci_a, ci_b))


def _features(study: Study, out: Values) -> None:
    """Table ``q2_features``: each sample set's FD in the LeNet and the MLP feature spaces."""
    cells = []
    for key, label, rel in FEATURE_ROWS:
        lenet, mlp = _load(study, rel), _load(study, rel + "_mlp")
        if lenet is None:
            continue
        out.put(f"ex.q2_mlp.{key}.ready", mlp is not None)
        if mlp is not None:
            out.put_eval(f"ex.q2_mlp.{key}", mlp)
        for space, e in (("lenet", lenet), ("mlp", mlp)):  # real test digits at this N
            floor = e.metrics.get("floor") if e else None
            if floor and f"ex.q2_features.floor_{space}" not in out.numbers:
                out.put(f"ex.q2_features.floor_{space}", floor["fd"], fmt(floor["fd"], 2))
        m = mlp.metrics if mlp else {}
        cells.append([label, ci_text(lenet.metrics, "fd", 1),
                      ci_text(m, "fd", 1) if mlp else "pending",
                      fmt(m.get("precision"), 3), fmt(m.get("recall"), 3)])  # fmt: skip
    out.table("q2_features", FEATURE_HEADER, cells)


def _budget(study: Study, out: Values) -> None:
    """Table ``q2_budget`` and series ``budget``: FD against training CPU hours, 30 epochs."""
    cells, series = [], {}
    for key, (label, run, pattern) in BUDGET_RUNS.items():
        pts = []
        for e in BUDGET_EPOCHS:
            ev = _load(study, f"{run}/eval/{pattern.format(e=e)}")
            hours = cpu_hours_at(study, run, e)
            out.put(f"ex.q2_budget.{key}_e{e}.ready", ev is not None)
            if ev is None:
                cells.append([label, str(e), fmt(hours, 2), "pending", "–", "–", "–"])
                continue
            out.put_eval(f"ex.q2_budget.{key}_e{e}", ev)
            m, r = ev.metrics, _rarest(ev)
            quality = [fmt(m.get("precision"), 3), fmt(m.get("recall"), 3), fmt(r, 1)]
            cells.append([label, str(e), fmt(hours, 2), ci_text(m, "fd", 1), *quality])
            if hours is not None:
                pts.append({"epoch": e, "cpu_h": hours, "fd": m.get("fd"), "fd_ci": m.get("fd_ci")})
        series[label] = pts
    done = [c for c in cells if c[3] != "pending"]
    out.put("ex.q2_budget.ready", len(done) == len(cells))
    out.table("q2_budget", BUDGET_HEADER, cells if done else [])
    out.series["budget"] = series
    _budget_gaps(out)


def _budget_gaps(out: Values) -> None:
    """How the two budget curves compare, from the numbers :func:`_budget` stored.

    ``ex.q2_budget.gap_e<E>``: the Gaussian's FD minus melt's at epoch ``E``;
    ``.overlap_e<E>``: whether their intervals overlap; ``.<key>_gain_last``: each model's
    FD gain between its last two budget points.
    """

    def fd(key: str, e: int) -> tuple[float, list[float]] | None:
        k = f"ex.q2_budget.{key}_e{e}"
        ci = out.numbers.get(f"{k}.fd_ci", {}).get("v")
        return (out.numbers[f"{k}.fd"]["v"], ci) if ci else None

    for e in BUDGET_EPOCHS:
        a, b = fd("melt", e), fd("tuned", e)
        if a and b:
            out.put(f"ex.q2_budget.gap_e{e}", b[0] - a[0], fmt(b[0] - a[0], 1))
            out.put(f"ex.q2_budget.overlap_e{e}", intervals_overlap(a[1], b[1]))
    prev, last = BUDGET_EPOCHS[-2:]
    for key in BUDGET_RUNS:
        a, b = fd(key, prev), fd(key, last)
        gain = a[0] - b[0] if a and b else None
        out.put(f"ex.q2_budget.{key}_gain_last", gain, fmt(gain, 1))


def _seed_grids(study: Study, out: Values) -> None:
    """``ex.q1_seed.<seed>.*``: when each training seed's fixed-key grid leaves saturation.

    ``first_clean_epoch`` (the first grid with under half its samples saturated, or ``None``),
    ``grid_epoch`` (the latest grid recorded), ``sat24_pct`` (the epoch-24 grid's share) and
    ``clean_by_24`` (whether the grid left saturation by epoch 24, as the course expects and
    PyTorch's starter does; ``None`` until the grids reach epoch 24 or leave saturation);
    ``ex.q1_seed.first_clean_gap``: how many epochs apart the seeds leave saturation.
    """
    for key, run in Q1_SEED_RUNS.items():
        shares = grid_saturation(study.results_dir / run)
        out.put(f"ex.q1_seed.{key}.grid_epoch", max(shares, default=None))
        out.put(f"ex.q1_seed.{key}.first_clean_epoch", first_clean_epoch(shares))
        out.put(f"ex.q1_seed.{key}.clean_by_24", clean_by(shares, 24))
        sat = shares.get(24)
        out.put(f"ex.q1_seed.{key}.sat24_pct", pct(sat), fmt(pct(sat), 0))
    firsts = [out.numbers[f"ex.q1_seed.{key}.first_clean_epoch"]["v"] for key in Q1_SEED_RUNS]
    gap = max(firsts) - min(firsts) if None not in firsts else None
    out.put("ex.q1_seed.first_clean_gap", gap)


def evidence_tables(study: Study, out: Values) -> None:
    """The Q1 and Q2 evidence tables, training times, Q2a's settings and the speed host.

    Args:
        study: The study.
        out: Where tables ``q1``, ``q1_seed``, ``q2_controls``, ``q2_gauss``,
            ``q2_features``, ``q2_budget``, ``time``, the ``budget`` series and the numbers go.
    """
    _rows(study, out, "q1", Q1_ROWS, pending=False)
    _class_shares(study, out)
    _rows(study, out, "q1_seed", Q1_SEED_ROWS, pending=True)
    out.put("ex.q1_seed.ready", bool(out.numbers["ex.q1_seed.s1e24.ready"]["v"]))
    _seed_grids(study, out)
    _rows(study, out, "q2_controls", CONTROL_ROWS, pending=True)
    _rows(study, out, "q2_gauss", GAUSS_ROWS, pending=True)
    _seed_spread(out)
    _features(study, out)
    _budget(study, out)
    _times(study, out)
    _q2a_settings(study, out)
    _bench_host(study, out)
