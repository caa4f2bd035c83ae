"""The report's numbers and tables, section by section, computed from the study.

Each function reads a :class:`study.Study` and stores into a :class:`values.Values`: numbers
under a key family (``run.*``, ``eval.*``, ``cmp.*``, ``ttq.*``, ``bench.*``, ...), tables by
name, and the series behind the figures. Missing inputs become notes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from configs import (
    config_diff,
    machine_text,
    model_text,
    param_count,
    process_text,
    training_command,
)
from study import (
    ANCHOR_EPOCHS,
    EXTRA_ANCHORS,
    EvalRecord,
    RunRecord,
    Study,
    anchor_display,
    anchor_wall_s,
    epoch_series,
    headline_eval,
    load_evals,
    matched_pair,
    read_json,
    read_run_record,
    steps_series,
    study_entry,
)
from values import (
    Values,
    ci_text,
    compare,
    div,
    eval_summary,
    fidelity_row,
    first_clean_epoch,
    fmt,
    grid_saturation,
    pct,
    quality_cells,
    sampler_text,
    sec_per_1k,
    slug,
)

from jaxdiff.fidelity.metrics import saturated_share

RUNS_HEADER = [
    "run", "model", "params", "lr", "batch", "EMA", "seed", "epochs", "wall h", "CPU h",
]  # fmt: skip
FIDELITY_HEADER = [
    "model", "epoch", "sampler", "N", "FD [95% CI]", "KID [95% CI]",
    "precision", "recall", "class TV", "confidence", "NN ratio", "out of range %",
]  # fmt: skip
Q2_HEADER = [
    "model", "epoch", "sampler", "N", "FD [95% CI]", "KID [95% CI]", "precision",
    "recall", "class KL", "NN ratio", "network calls / sample", "s / 1000 samples",
]  # fmt: skip
STEPS_HEADER = [
    "model", "epoch", "sampler", "steps", "N", "FD [95% CI]", "KID [95% CI]",
    "precision", "recall", "s / 1000 samples",
]  # fmt: skip
ABLATION_HEADER = [
    "run", "change from the base", "epochs", "FD [95% CI]", "ΔFD", "recall", "train CPU min",
]  # fmt: skip
TTQ_HEADER = [
    "model", "target", "target FD", "first epoch below", "FD there",
    "train wall min", "train CPU min", "starter wall min",
]  # fmt: skip
START_HEADER = [
    "start states", "N", "FD [95% CI]", "precision", "recall",
    "rarest class %", "NN ratio", "pair distance", "5–95%",
]  # fmt: skip
RESTORATION_HEADER = ["t", "degraded input", "one-shot R(x_t, t)", "reverse process"]
BENCH_HEADER = ["case", "throughput", "unit", "GFLOP/s", "% of ceiling"]
#: The training settings listed per run (``run.<name>.<setting>``).
TRAIN_KEYS = (
    "lr", "batch_size", "seed", "ema_decay", "epochs", "limit", "grad_clip",
    "lr_schedule", "warmup_steps",
)  # fmt: skip
#: Comparisons ``cmp.<label>``: (a, b), runs by role or ``anchor:<tag>``.
PAIRS = {
    "q1": ("q1_alt", "q1_default"),
    "q2": ("q2_custom", "q2_gaussian"),
    "best": ("best", "q1_default"),
    "starter": ("q1_default", "anchor:starter_ep50"),
    "sampler": ("anchor:starter_ep50_jaxdiff_sampler", "anchor:starter_ep50"),
}


# ----------------------------------------------------------------------------- runs


def _put_run_config(out: Values, k: str, run: RunRecord, params: int | None) -> None:
    """``run.<name>``: display name, model, process, parameter count, training settings."""
    cfg, tr = run.config, run.config.get("train", {})
    out.put(f"{k}.display", run.display)
    out.put(f"{k}.model", model_text(cfg))
    out.put(f"{k}.process", process_text(cfg))
    out.put(f"{k}.params", params, f"{params:,}" if params else "–")
    for key in TRAIN_KEYS:
        out.put(f"{k}.{key}", tr.get(key), None if tr.get(key) is None else str(tr[key]))


def _put_run_progress(out: Values, k: str, run: RunRecord) -> None:
    """``run.<name>``: epochs and steps done, final loss, hours, throughput, machine."""
    last = run.records[-1] if run.records else {}
    ips = [r["images_per_s"] for r in run.records if "images_per_s" in r]
    out.put(f"{k}.epochs_done", last.get("epoch"))
    out.put(f"{k}.steps_done", last.get("step"))
    out.put(f"{k}.final_loss", last.get("loss"), fmt(last.get("loss"), 4))
    for key, field in (("wall_h", "wall_s"), ("cpu_h", "cpu_s")):
        hours = div(last.get(field), 3600)
        out.put(f"{k}.{key}", hours, fmt(hours, 2))
    med = float(np.median(ips)) if ips else None
    out.put(f"{k}.img_s", med, fmt(med, 0))
    out.put(f"{k}.machine", machine_text(run))


def _put_run_command(out: Values, name: str, run: RunRecord, base: RunRecord | None) -> None:
    """``run.<name>.command`` and ``.diff`` (settings against the starter recipe's run)."""
    cfg = run.config
    cmd = training_command(cfg, run.path.as_posix(), run.invocations) if cfg else None
    if cfg and cmd is None:
        out.notes.append(f"run {name}: no driver command reproduces its config.")
    out.put(f"run.{name}.command", cmd)
    if base is not None and base is not run and base.config and cfg:
        diff = config_diff(base.config, cfg)
        out.put(f"run.{name}.diff", diff, "; ".join(diff).replace("->", "→") or "none")


def _run_row(out: Values, k: str, run: RunRecord) -> list[str]:
    """The run's row of the ``runs`` table."""
    tr = run.config.get("train", {})
    last = run.records[-1] if run.records else {}
    return [
        run.display,
        model_text(run.config),
        out.text(f"{k}.params"),
        str(tr.get("lr", "–")),
        str(tr.get("batch_size", "–")),
        str(tr.get("ema_decay", "–")),
        str(tr.get("seed", "–")),
        f"{last.get('epoch', 0)}/{tr.get('epochs', '?')}",
        out.text(f"{k}.wall_h"),
        out.text(f"{k}.cpu_h"),
    ]


def _run_json(out: Values, k: str, run: RunRecord) -> dict:
    """The run's entry of ``runs.json``."""
    last = run.records[-1] if run.records else {}
    return {
        "display": run.display,
        "role": run.role,
        "path": str(run.path),
        "config": run.config,
        "devices": run.devices,
        "machine": run.machine,
        "params": out.numbers[f"{k}.params"]["v"],
        "epochs_done": last.get("epoch"),
        "wall_s": last.get("wall_s"),
        "cpu_s": last.get("cpu_s"),
        "median_images_per_s": out.numbers[f"{k}.img_s"]["v"],
        "final_params": str(run.final / "params.msgpack") if run.final else None,
        "evaluations": sorted(run.evals),
    }


def run_numbers(study: Study, out: Values) -> None:
    """Per-run configuration, cost and command, the ``runs`` table and the starter checks.

    Args:
        study: The study.
        out: Where numbers, tables and data files go (``runs.json``).
    """
    rows, runs_json = [], {}
    seen_paths = set()
    base = study.runs.get("q1_default")
    for name, run in study.runs.items():
        k = f"run.{name}"
        _put_run_config(out, k, run, param_count(run.config) if run.config else None)
        _put_run_progress(out, k, run)
        _put_run_command(out, name, run, base)
        size = (run.final / "params.msgpack").stat().st_size if run.final else None
        out.put(f"{k}.final_kb", None if size is None else size / 1024, fmt(div(size, 1024), 0))
        if run.path in seen_paths:  # a run serving two roles is listed once
            continue
        seen_paths.add(run.path)
        rows.append(_run_row(out, k, run))
        runs_json[name] = _run_json(out, k, run)
    starter_numbers(study, out)
    out.table("runs", RUNS_HEADER, rows)
    out.files["runs.json"] = runs_json


def starter_numbers(study: Study, out: Values) -> None:
    """The starter reproduction against the PyTorch log, and when its grids leave saturation.

    ``q1.loss_vs_starter.*``: our epoch-mean loss over the starter's, in percent above it,
    over the epochs both logged (mean, min, max; ``from8`` from epoch 8 on).
    ``run.<name>.first_clean_epoch``: the first epoch whose fixed-key grid has fewer than
    half of its samples saturated (:func:`saturated_share`); the starter's first 16
    samples at each anchor epoch get ``anchor.starter_ep<E>.saturated_pct``.

    Args:
        study: The study.
        out: Where the numbers and the ``saturated`` series go.
    """
    run = study.runs.get("q1_default")
    log = {r["epoch"]: r["loss"] for r in study.anchor_log if "loss" in r and "epoch" in r}
    if run is not None and log:
        above = {
            r["epoch"]: 100 * (r["loss"] / log[r["epoch"]] - 1)
            for r in run.records
            if r.get("epoch") in log
        }
        for label, vals in (
            ("all", list(above.values())),
            ("from8", [v for e, v in above.items() if e >= 8]),
        ):
            if vals:
                k = f"q1.loss_vs_starter.{label}"
                for stat, v in (("mean", np.mean(vals)), ("min", min(vals)), ("max", max(vals))):
                    out.put(f"{k}.{stat}", float(v), fmt(float(v), 1))
        out.put("q1.loss_vs_starter.epochs", len(above))
    for name, r in study.runs.items():
        if r.kind != "ddpm":
            continue
        shares = grid_saturation(r.path)
        out.put(f"run.{name}.first_clean_epoch", first_clean_epoch(shares))
        out.series.setdefault("saturated", {})[name] = shares
    for e in ANCHOR_EPOCHS:
        f = study.results_dir / "anchors" / "samples" / f"starter_ep{e}_first16.npy"
        if f.exists():
            v = saturated_share(np.load(f))
            out.put(f"anchor.starter_ep{e}.saturated_pct", 100 * v, fmt(100 * v, 0))


# ----------------------------------------------------------------------------- evaluations


def _anchors_by_epoch(study: Study) -> list[tuple[str, EvalRecord]]:
    """The starter's own evaluations, by epoch."""
    return sorted(study.anchors.items(), key=lambda kv: kv[1].epoch or 0)


def _floor(study: Study) -> dict | None:
    """The real-data floor recorded with the first headline (or anchor) evaluation."""
    evs = [headline_eval(r) for r in study.runs.values()]
    evs += [e for _, e in _anchors_by_epoch(study)]
    return next((e.metrics["floor"] for e in evs if e and e.metrics.get("floor")), None)


def _headline_numbers(study: Study, out: Values, rows: list) -> None:
    """``eval.<run>``: each run's headline evaluation, one fidelity row per run folder."""
    shown = set()
    for name, run in study.runs.items():
        head = headline_eval(run)
        if head is None:
            continue
        out.put_eval(f"eval.{name}", head)
        if run.path not in shown:  # a run serving two roles gets one row
            rows.append(fidelity_row(run.display, head))
            shown.add(run.path)
        last = run.records[-1]["epoch"] if run.records else None
        if head.epoch is not None and last is not None and head.epoch != last:
            out.notes.append(
                f"run {name}: trained {last} epochs but the latest evaluation is of epoch "
                f"{head.epoch}."
            )


def _other_eval_numbers(study: Study, out: Values, rows: list) -> None:
    """Every run evaluation (``ev.*``), other anchors, the Q2 exploration and calibration."""
    for name, run in study.runs.items():
        for tag, e in run.evals.items():
            out.put_eval(f"ev.{name}.{tag}", e)
    for tag, e in sorted(study.anchor_extra.items()):
        out.put_eval(f"anchor.{tag}", e)
        rows.append(fidelity_row(EXTRA_ANCHORS.get(tag, tag.replace("_", " ")), e))
    xdir = study.results_dir / "q2x"  # the Q2 exploration's short runs
    for sub in sorted(xdir.iterdir()) if xdir.is_dir() else []:
        for tag, e in load_evals(sub / "eval", out.notes).items():
            out.put_eval(f"x.{slug(sub.name)}.{tag}", e)
    cal = study.results_dir / "calibration" / "calibration.json"
    for label, m in ((read_json(cal, out.notes) or {}) if cal.exists() else {}).items():
        if isinstance(m, dict):  # known image sets under the same protocol: the FD scale
            out.put_eval(f"cal.{slug(label)}", EvalRecord(label, cal, m, None, None, None))


def eval_numbers(study: Study, out: Values) -> None:
    """Headline evaluations, anchors, floor, comparisons and the fidelity table.

    Args:
        study: The study.
        out: Where numbers, the ``fidelity`` table and ``evals.json`` go.
    """
    rows: list[list[str]] = []
    _headline_numbers(study, out, rows)
    _other_eval_numbers(study, out, rows)
    for tag, e in _anchors_by_epoch(study):
        out.put_eval(f"anchor.{tag}", e)
        rows.append(fidelity_row(anchor_display(tag), e))
        wall = div(anchor_wall_s(study, e.epoch), 60)
        out.put(f"anchor.{tag}.train_wall_min", wall, fmt(wall, 0))
    floor = _floor(study)
    if isinstance(floor, dict) and "fd" in floor:
        fl = EvalRecord("floor", Path("."), floor, None, None, None)
        out.put_eval("floor", fl)
        rows.append(fidelity_row("real test images (floor)", fl))
    out.table("fidelity", FIDELITY_HEADER, rows)
    evals_json = {
        name: {t: eval_summary(e) for t, e in sorted(run.evals.items())}
        for name, run in study.runs.items()
    }
    evals_json["anchors"] = {t: eval_summary(e) for t, e in sorted(study.anchors.items())}
    out.files["evals.json"] = evals_json
    comparisons(study, out)


def comparisons(study: Study, out: Values) -> None:
    """``cmp.<label>.{fd,kid}.*`` for :data:`PAIRS`; two runs compare at one ``N``.

    Args:
        study: The study.
        out: Where ``pair.*`` (the evaluations compared) and ``cmp.*`` go.
    """
    heads = {n: headline_eval(r) for n, r in study.runs.items()}
    anchors = {**study.anchors, **study.anchor_extra}
    heads.update({f"anchor:{t}": e for t, e in anchors.items()})
    for label, (a, b) in PAIRS.items():
        if a in study.runs and b in study.runs:  # equal N where both runs have it
            ea, eb = matched_pair(study.runs[a], study.runs[b])
            for side, e in (("a", ea), ("b", eb)):
                if e is not None:
                    out.put_eval(f"pair.{label}.{side}", e)
        else:
            ea, eb = heads.get(a), heads.get(b)
        for key in ("fd", "kid"):
            c = compare(ea, eb, key)
            if c is None:
                continue
            p = f"cmp.{label}.{key}"
            out.put(f"{p}.a_better", c["better"] == "a")
            out.put(f"{p}.separated", c["separated"])
            out.put(f"{p}.same_n", c["same_n"])
            out.put(f"{p}.ratio", c["ratio"], fmt(c["ratio"], 2))


def q2_table(study: Study, out: Values) -> None:
    """Side-by-side comparison of the cold run and the Gaussian run, with sampling cost.

    Args:
        study: The study.
        out: Where the ``q2`` table goes.
    """
    rows = []
    custom, gaussian = matched_pair(study.runs.get("q2_custom"), study.runs.get("q2_gaussian"))
    for name, e in (("q2_gaussian", gaussian), ("q2_custom", custom)):
        if e is None:
            continue
        run = study.runs[name]
        calls = e.steps or run.config.get("process", {}).get("T")  # network calls per sample
        rows.append(
            [run.display, str(e.epoch), sampler_text(e)]
            + quality_cells(e)
            + [fmt(e.metrics.get("class_kl"), 3), fmt(e.metrics.get("nn_dist_ratio"), 2)]
            + [str(calls or "–"), fmt(sec_per_1k(e), 1)]
        )
    out.table("q2", Q2_HEADER, rows)


def steps_table(study: Study, out: Values) -> None:
    """Quality against sampling steps (rows per run, sampler and steps).

    Args:
        study: The study.
        out: Where the ``steps`` table and series go.
    """
    rows, series = [], {}
    for name, run in study.runs.items():
        if "samplers" in study.runs and name != "samplers":
            continue  # the sampler-study role holds the comparison; others would repeat it
        epoch, groups = steps_series(run)
        if sum(len(v) for v in groups.values()) < 2:
            continue  # one setting is no comparison of samplers or steps
        for sampler, evs in groups.items():
            series[f"{name}/{sampler}"] = {
                "epoch": epoch,
                "steps": [e.steps for e in evs],
                "fd": [e.metrics["fd"] for e in evs],
                "fd_ci": [e.metrics.get("fd_ci") for e in evs],
                "sec_per_1k": [sec_per_1k(e) for e in evs],
            }
            for e in evs:
                head = [run.display, str(epoch), e.sampler or "–", str(e.steps)]
                rows.append(head + quality_cells(e) + [fmt(sec_per_1k(e), 1)])
    out.series["steps"] = series
    out.table("steps", STEPS_HEADER, rows)


# ----------------------------------------------------------------------------- study extras


def _ablation_row(
    out: Values, label: str, change: str, run: RunRecord, e: EvalRecord, base_fd: float | None
) -> list[str]:
    """``abl.<label>.*`` and the variant's row of the ``ablation`` table."""
    m = e.metrics
    last = run.records[-1] if run.records else {}
    cpu_min = div(last.get("cpu_s"), 60)
    dfd = m["fd"] - base_fd if base_fd is not None else None
    k = f"abl.{slug(label)}"
    out.put(f"{k}.fd", m["fd"], fmt(m["fd"], 1))
    out.put(f"{k}.fd_ci", m.get("fd_ci"), ci_text(m, "fd", 1))
    out.put(f"{k}.recall", m.get("recall"), fmt(m.get("recall"), 3))
    out.put(f"{k}.dfd", dfd, fmt(dfd, 1))
    out.put(f"{k}.cpu_min", cpu_min, fmt(cpu_min, 0))
    return [
        label,
        change or "–",
        str(last.get("epoch", "–")),
        ci_text(m, "fd", 1),
        "–" if dfd is None or label == "base" else f"{dfd:+.1f}",
        fmt(m.get("recall"), 3),
        fmt(cpu_min, 0),
    ]


def ablation_table(study: Study, out: Values) -> None:
    """The recipe ablation (``study.json``'s ``ablation`` entry): one change per run.

    The entry names the base run (``run``), its variants (``variants``: label -> run
    folder, or ``{"run", "eval", "change"}`` for a change that is not in the config,
    e.g. the base run's raw weights under its own evaluation tag) and the evaluation tag
    every run is judged by (``eval``). Table ``ablation`` and numbers
    ``abl.<label>.{fd, fd_ci, recall, dfd, cpu_min}``.

    Args:
        study: The study.
        out: Where the numbers and the table go.
    """
    entry = study_entry(study, "ablation", out.notes)
    if entry is None:
        return
    root = study.results_dir.parent
    runs = {"base": entry.get("run"), **entry.get("variants", {})}
    base_cfg, base_fd, rows = None, None, []
    for label, rel in runs.items():
        spec = rel if isinstance(rel, dict) else {"run": rel}
        path, tag = root / str(spec.get("run")), spec.get("eval", entry.get("eval", ""))
        run = read_run_record(path, None, out.notes) if path.is_dir() else None
        e = run.evals.get(tag) if run else None
        if e is None:
            out.notes.append(f"ablation {label}: no evaluation {tag} in {path}.")
            continue
        if label == "base":
            base_cfg, base_fd = run.config, e.metrics["fd"]
        change = spec.get("change") or "; ".join(config_diff(base_cfg or {}, run.config))
        rows.append(_ablation_row(out, label, change.replace("->", "→"), run, e, base_fd))
    out.table("ablation", ABLATION_HEADER, rows)


def short_runs_numbers(study: Study, out: Values) -> None:
    """Short runs against a time budget (``study.json``'s ``short`` entry).

    The entry maps labels to run folders (``runs``). Numbers
    ``short.<label>.{fd, fd_ci, n, train_min, images}``: each run's headline evaluation,
    its training wall minutes (compilation included) and the images it trained on.

    Args:
        study: The study.
        out: Where the numbers go.
    """
    entry = study_entry(study, "short", out.notes)
    if entry is None:
        return
    root = study.results_dir.parent
    for label, rel in entry.get("runs", {}).items():
        path = root / str(rel)
        run = read_run_record(path, None, out.notes) if path.is_dir() else None
        e = headline_eval(run) if run else None
        if e is None or not run.records:
            out.notes.append(f"short run {label}: no run or evaluation in {path}.")
            continue
        train = run.config.get("train", {})
        images = (train.get("limit") or 60000) * run.records[-1].get("epoch", 0)
        minutes = div(run.records[-1].get("wall_s"), 60)
        k = f"short.{slug(label)}"
        out.put_eval(k, e)
        out.put(f"{k}.train_min", minutes, fmt(minutes, 1))
        out.put(f"{k}.images", images, f"{images:,}")


# ----------------------------------------------------------------------------- time to quality


def _ttq_points(run: RunRecord) -> list[dict]:
    """The run's epoch series with the training time at each evaluated epoch."""
    pts = []
    for e in epoch_series(run):
        rec = run.record_at(e.epoch)
        if rec is None:
            continue
        pts.append(
            {
                "epoch": e.epoch,
                "wall_min": div(rec.get("wall_s"), 60),
                "cpu_min": div(rec.get("cpu_s"), 60),
                "fd": e.metrics["fd"],
                "fd_ci": e.metrics.get("fd_ci"),
                "tag": e.tag,
            }
        )
    return pts


def _ttq_hit(study: Study, out: Values, k: str, target: EvalRecord, pts: list) -> list | None:
    """``ttq.<run>.<anchor>.*``: the first point at or below the target's FD, as a row."""
    hit = next((p for p in pts if p["fd"] <= target.metrics["fd"]), None)
    out.put(f"{k}.reached", hit is not None)
    if hit is None:
        return None
    out.put(f"{k}.epoch", hit["epoch"])
    out.put(f"{k}.wall_min", hit["wall_min"], fmt(hit["wall_min"], 1))
    out.put(f"{k}.cpu_min", hit["cpu_min"], fmt(hit["cpu_min"], 1))
    aw = anchor_wall_s(study, target.epoch)
    speed = div(div(aw, 60), hit["wall_min"]) if aw else None
    out.put(f"{k}.wall_speedup", speed, fmt(speed, 1))
    times = [fmt(hit["wall_min"], 1), fmt(hit["cpu_min"], 1), fmt(div(aw, 60), 0)]
    return [fmt(target.metrics["fd"], 1), str(hit["epoch"]), fmt(hit["fd"], 1), *times]


def ttq_numbers(study: Study, out: Values) -> None:
    """Time to quality: training time at which each run first reaches each anchor's FD.

    Args:
        study: The study.
        out: Where ``ttq.*``, the ``ttq`` table and series go.
    """
    rows = []
    for name, run in study.runs.items():
        pts = _ttq_points(run)
        out.series.setdefault("ttq", {})[name] = pts
        for tag, a in study.anchors.items():
            cells = _ttq_hit(study, out, f"ttq.{name}.{tag}", a, pts)
            if cells is not None:
                rows.append([run.display, anchor_display(tag), *cells])
    out.table("ttq", TTQ_HEADER, rows)


# ----------------------------------------------------------------------------- cold analyses


def _start_states(out: Values, name: str, data: dict) -> None:
    """``an.<run>.<start sampler>.*`` and table ``start_<run>``."""
    rows = []
    out.put(f"an.{name}.n", data.get("n"))
    for variant, r in data.get("rows", {}).items():
        k = f"an.{name}.{slug(variant)}"
        pw = r.get("pairwise", {})
        hist = r.get("class_hist") or []
        low = float(min(hist)) if hist else None
        out.put(f"{k}.fd", r.get("fd"), fmt(r.get("fd"), 1))
        out.put(f"{k}.fd_ci", r.get("fd_ci"), ci_text(r, "fd", 1))
        out.put(f"{k}.recall", r.get("recall"), fmt(r.get("recall"), 3))
        out.put(f"{k}.min_class", low, fmt(pct(low), 1))
        out.put(f"{k}.pair_mean", pw.get("mean"), fmt(pw.get("mean"), 2))
        out.put(f"{k}.nn_ratio", r.get("nn_dist_ratio"), fmt(r.get("nn_dist_ratio"), 2))
        rows.append(
            [
                variant,
                str(data.get("n", "–")),
                ci_text(r, "fd", 1),
                fmt(r.get("precision"), 3),
                fmt(r.get("recall"), 3),
                fmt(pct(low), 1),
                fmt(r.get("nn_dist_ratio"), 2),
                fmt(pw.get("mean"), 2),
                f"{fmt(pw.get('p05'), 2)}–{fmt(pw.get('p95'), 2)}",
            ]
        )
    out.table(f"start_{name}", START_HEADER, rows)


def _restoration(out: Values, name: str, rest: dict) -> None:
    """``an.<run>.rest.t<t>.*`` and table ``restoration_<run>``."""
    rows = []
    keys = ("mse_input", "mse_one_shot", "mse_restored")
    for r in rest.get("times", []):
        k = f"an.{name}.rest.t{r['t']}"
        for key in keys:
            out.put(f"{k}.{key}", r.get(key), fmt(r.get(key), 4))
        rows.append([str(r["t"])] + [fmt(r.get(x), 4) for x in keys])
    out.put(f"an.{name}.rest.n", rest.get("n"))
    out.table(f"restoration_{name}", RESTORATION_HEADER, rows)


def cold_analysis(study: Study, out: Values) -> None:
    """Each cold run's recorded analyses (``experiments/analyze_cold.py``).

    Numbers ``an.<run>.<start sampler>.*`` and table ``start_<run>`` from
    ``analysis/start_states.json``; ``an.<run>.rest.t<t>.*`` and table
    ``restoration_<run>`` from ``analysis/restoration.json`` (their figures are copied by
    :func:`figures.draw_figures`).

    Args:
        study: The study.
        out: Where the numbers and tables go.
    """
    for name, run in study.runs.items():
        if run.kind != "cold":
            continue
        d = run.path / "analysis"
        if not (d / "start_states.json").exists():
            out.notes.append(f"run {name}: no {d}/start_states.json (analyze_cold.py).")
            continue
        _start_states(out, name, read_json(d / "start_states.json", out.notes) or {})
        _restoration(out, name, read_json(d / "restoration.json", out.notes) or {})


# ----------------------------------------------------------------------------- benchmark


def _bench_cases(out: Values, bench: dict) -> list[list[str]]:
    """``bench.<case>.img_s``, ``bench.ratio.*``, ``bench.best.*``; the table's rows."""
    cases = bench.get("cases")
    if not isinstance(cases, dict):
        out.notes.append("bench.json has no 'cases' mapping; speed table left empty.")
        cases = {}
    rows = []
    for case, v in cases.items():
        if not isinstance(v, dict):
            continue
        ips = v.get("images_per_s")
        unit = "img/s" if case.endswith("train") else "img/s per 100 steps"
        share = v.get("ceiling_share")
        rows.append([case, fmt(ips, 1), unit, fmt(v.get("gflops"), 1), fmt(pct(share), 0)])
        out.put(f"bench.{slug(case)}.img_s", ips, fmt(ips, 1))
    ratios = bench.get("ratios") if isinstance(bench.get("ratios"), dict) else {}
    for k, r in ratios.items():
        if isinstance(r, int | float):
            out.put(f"bench.ratio.{slug(k)}", float(r), fmt(float(r), 2))
    bab = bench.get("best_against_best")
    for what, v in (bab if isinstance(bab, dict) else {}).items():
        if isinstance(v, dict) and isinstance(v.get("ratio"), int | float):
            out.put(f"bench.best.{slug(what)}", float(v["ratio"]), fmt(v["ratio"], 2))
    return rows


def _bench_host(out: Values, bench: dict) -> None:
    """``bench.isa`` (vector extensions), ``bench.impl`` and ``bench.load_avg``."""
    cfg = bench.get("config") if isinstance(bench.get("config"), dict) else {}
    cpu = cfg.get("cpu") if isinstance(cfg.get("cpu"), dict) else {}
    flags = cpu.get("flags")
    if isinstance(flags, list):
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "x86"
        desc = " with bf16" if "avx512_bf16" in flags else ", no native bf16"
        desc += " and AMX" if "amx_bf16" in flags else ""
        out.put("bench.isa", isa, isa + desc)
    impl = cfg.get("resolved_impl")
    if isinstance(impl, str):
        out.put("bench.impl", impl, impl)
    la = cfg.get("load_avg")
    if isinstance(la, list | tuple) and la:
        out.put("bench.load_avg", float(la[0]), fmt(float(la[0]), 2))


def bench_numbers(study: Study, out: Values) -> None:
    """The speed benchmark's table and ratios (any shape problem becomes a note).

    Args:
        study: The study.
        out: Where ``bench.*`` and the ``bench`` table go.
    """
    rows = []
    if study.bench is not None:
        rows = _bench_cases(out, study.bench)
        _bench_host(out, study.bench)
    out.table("bench", BENCH_HEADER, rows)


#: Every section, in the order the numbers and notes are written.
SECTIONS = (
    run_numbers,
    eval_numbers,
    q2_table,
    cold_analysis,
    steps_table,
    ablation_table,
    short_runs_numbers,
    ttq_numbers,
    bench_numbers,
)
