"""The study's report builder: every figure and number regenerated from the recorded runs.

It lives beside the report, not in the library (``python report/build.py`` runs it).

Inputs (a *results tree*, by default ``results/``):

- ``study.json``: the study's roles (SPEC section 7); each role names its run folder and
  the ``experiments/sample.py`` flags of its headline evaluation.
- each role's run folder: a training workdir written by :func:`jaxdiff.app.runner.fit`
  (``config.json``,
  ``metrics.jsonl``, ``samples/epoch_NNN.npy``, ``final/``, cold runs' figures), with its
  evaluations ``<run>/eval/<tag>/metrics.json`` (+ galleries) written by
  ``experiments/evaluate.py``. Tags read ``ep010_ancestral1000``, ``ep010_ddim100``,
  ``ep005_cold2``; the epoch, sampler and steps are taken from ``metrics.json`` and, where it
  lacks them, from the tag.
- ``anchors/eval/<tag>/metrics.json``: evaluations of the PyTorch starter's samples
  (``starter_ep5`` ... ``starter_ep50``) and of the starter's weights sampled by jaxdiff,
  optionally ``anchors/starter_train_log.jsonl`` (the
  starter's per-epoch wall seconds) for its training time.
- ``bench/bench.json``: the speed benchmark (``benchmarks/bench.py --json``), read defensively.

Outputs (a *report folder*, by default ``report/``): ``figures/*.png`` and ``data/*.json``
(``numbers.json``: flat key -> ``{"v": value, "s": text}``; ``tables.json``: name ->
``{"header", "rows"}`` of strings; ``figures.json``; ``notes.json``; ``runs.json``,
``evals.json`` and ``series.json`` with the full values behind the figures). The Typst source
``report.typ`` reads only these files, so every number in the PDF traces to a recorded run.
Missing runs or evaluations become notes (and placeholders in the PDF), never a crash.

:func:`count_words` counts the prose words of a Typst source for the 3000-word limit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

#: Word limit of the report (issue 7).
WORD_LIMIT = 3000
#: A nearest-training-image distance ratio below this flags samples closer to the training set
#: than real test digits are (possible memorisation); see docs/evaluation.md.
NN_CLOSE = 0.9


@dataclasses.dataclass(frozen=True)
class KnownRun:
    """A run the report expects, in display order.

    Attributes:
        name: Folder name under the results tree.
        display: Name shown in figures and tables.
        role: ``"q1"`` (DDPM), ``"q2"`` (custom degradation) or ``"beyond"``.
        sampler: The sampler whose evaluation is the run's headline result.
    """

    name: str
    display: str
    role: str
    sampler: str


#: The study's roles (``results/study.json``, SPEC section 7), in display order. The manifest
#: names each role's run folder and headline sampler; the sampler here is the fallback.
KNOWN_RUNS: tuple[KnownRun, ...] = (
    KnownRun("q1_default", "Starter recipe (CNN, lr 2e-4)", "q1", "ancestral"),
    KnownRun("q1_alt", "Second set (lr 1e-3, EMA 0.999)", "q1", "ancestral"),
    KnownRun("q2_custom", "Melt (cold diffusion, UNet)", "q2", "cold2"),
    KnownRun("q2_gaussian", "Gaussian DDPM (same UNet)", "q2", "dpmpp-clip"),
    KnownRun("best", "Best recipe", "beyond", "ddim-clip"),
    KnownRun("samplers", "UNet, 4 epochs (sampler study)", "beyond", "ddim-clip"),
)

#: Evaluations of the PyTorch starter's samples: tag -> (display name, training epoch).
KNOWN_ANCHORS: dict[str, tuple[str, int]] = {
    "starter_ep5": ("PyTorch starter, epoch 5", 5),
    "starter_ep10": ("PyTorch starter, epoch 10", 10),
    "starter_ep24": ("PyTorch starter, epoch 24", 24),
    "starter_ep50": ("PyTorch starter, epoch 50", 50),
}
#: Display names of other anchor evaluations (e.g. the starter's weights, jaxdiff's sampler).
EXTRA_ANCHORS: dict[str, str] = {
    "starter_ep50_jaxdiff_sampler": "PyTorch starter's epoch-50 weights, jaxdiff's sampler",
}
#: The epochs at which the starter's own samples are drawn beside jaxdiff's grids.
ANCHOR_EPOCHS = (5, 10, 24, 50)

#: Galleries written by ``evaluate.py`` that the report copies (file stem -> figure kind).
GALLERIES = ("confident", "unconfident", "nn_closest", "nn_farthest", "per_class", "class_hist")
#: Cold-run figures written by ``cold.py``.
COLD_FIGURES = ("degradation_strip", "trajectory", "restoration")

_TAG = re.compile(r"ep(?P<epoch>\d+)(?:_(?P<sampler>[a-z]+?)(?P<steps>\d+)?)?$")


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class EvalRecord:
    """One evaluation (``eval/<tag>/metrics.json``).

    Attributes:
        tag: The folder name.
        path: The folder.
        metrics: The parsed ``metrics.json``.
        epoch: Training epoch of the evaluated parameters (``None`` if unknown).
        sampler: Sampler name (``None`` if unknown, e.g. evaluated ``.npy`` samples).
        steps: Sampling steps (network evaluations per sample).
    """

    tag: str
    path: Path
    metrics: dict
    epoch: int | None
    sampler: str | None
    steps: int | None


@dataclasses.dataclass
class RunRecord:
    """One recorded training run and its evaluations.

    Attributes:
        name: Folder name.
        display: Display name.
        role: ``"q1"``, ``"q2"``, ``"beyond"`` or ``"other"``.
        sampler: Preferred headline sampler.
        path: The workdir.
        config: The run config (``config.json["config"]``), ``{}`` if missing.
        devices: Devices the run used.
        machine: ``config.json["machine"]`` if the runner recorded one, else ``None``.
        records: Per-epoch metrics records.
        evals: Tag -> :class:`EvalRecord`.
        sample_epochs: Epochs with a saved sample grid (``samples/epoch_NNN.npy``).
        final: The exported parameter folder, if present.
    """

    name: str
    display: str
    role: str
    sampler: str
    path: Path
    config: dict
    devices: list
    machine: Any
    records: list[dict]
    evals: dict[str, EvalRecord]
    sample_epochs: list[int]
    final: Path | None

    @property
    def kind(self) -> str:
        """Process kind (``"ddpm"`` or ``"cold"``; ``"?"`` without a config)."""
        return self.config.get("process", {}).get("kind", "?")

    def record_at(self, epoch: int | None) -> dict | None:
        """The metrics record of ``epoch`` (``None`` if absent)."""
        for r in self.records:
            if r.get("epoch") == epoch:
                return r
        return None


@dataclasses.dataclass
class Study:
    """Everything the report reads from a results tree.

    Attributes:
        results_dir: The results tree.
        runs: Name -> :class:`RunRecord`, known runs first (in :data:`KNOWN_RUNS` order).
        anchors: Tag -> :class:`EvalRecord` of the PyTorch starter's samples.
        anchor_extra: Other evaluations under ``anchors/eval`` (e.g. the starter's weights
            sampled by jaxdiff): numbers and the fidelity table only, no curves.
        anchor_log: The starter's per-epoch training log, if recorded.
        bench: The parsed benchmark JSON, if recorded.
        notes: Human-readable notes about missing or unreadable inputs.
    """

    results_dir: Path
    runs: dict[str, RunRecord]
    anchors: dict[str, EvalRecord]
    anchor_log: list[dict]
    bench: dict | None
    notes: list[str]
    anchor_extra: dict[str, EvalRecord] = dataclasses.field(default_factory=dict)


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        notes.append(f"{path}: unreadable JSON ({err}); skipped.")
        return None


def read_jsonl(path: Path, notes: list[str]) -> list[dict]:
    """Read a JSON-lines file, skipping (and noting) lines that do not parse.

    Args:
        path: The file.
        notes: Notes list to append problems to.

    Returns:
        The parsed dict lines (``[]`` if the file is missing).
    """
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            notes.append(f"{path}:{i}: not JSON; line skipped.")
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def parse_tag(tag: str) -> dict:
    """Read epoch, sampler and steps from an evaluation tag.

    Args:
        tag: E.g. ``"ep010_ancestral1000"``, ``"ep005_cold2"``, ``"starter_ep24"``.

    Returns:
        Dict with ``epoch``, ``sampler`` and ``steps`` (``None`` where the tag says nothing).
        For cold tags such as ``cold2`` the digit is the algorithm, not a step count.
    """
    m = _TAG.search(tag)
    if not m:
        return {"epoch": None, "sampler": None, "steps": None}
    sampler, steps = m.group("sampler"), m.group("steps")
    if sampler == "cold" and steps:
        return {"epoch": int(m.group("epoch")), "sampler": f"cold{steps}", "steps": None}
    return {
        "epoch": int(m.group("epoch")),
        "sampler": sampler,
        "steps": int(steps) if steps else None,
    }


def load_eval(folder: Path, notes: list[str]) -> EvalRecord | None:
    """Load one evaluation folder.

    Args:
        folder: ``.../eval/<tag>`` holding ``metrics.json``.
        notes: Notes list.

    Returns:
        The record, or ``None`` (with a note) if ``metrics.json`` is missing or lacks ``fd``.
    """
    path = folder / "metrics.json"
    if not path.exists():
        notes.append(f"{folder}: no metrics.json; evaluation skipped.")
        return None
    m = _read_json(path, notes)
    if not isinstance(m, dict) or not isinstance(m.get("fd"), int | float):
        if m is not None:
            notes.append(f"{path}: no numeric 'fd'; evaluation skipped.")
        return None
    tag = parse_tag(folder.name)
    epoch = m.get("epoch") if isinstance(m.get("epoch"), int) else tag["epoch"]
    sampler = m.get("sampler") or tag["sampler"]
    sampler = clipped_name(sampler, m.get("clip_x0"))  # a curve never mixes clip settings
    steps = m.get("steps") if isinstance(m.get("steps"), int) else tag["steps"]
    return EvalRecord(folder.name, folder, m, epoch, sampler, steps)


def _load_evals(folder: Path, notes: list[str]) -> dict[str, EvalRecord]:
    evals = {}
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            rec = load_eval(sub, notes)
            if rec is not None:
                evals[rec.tag] = rec
    return evals


def read_run_record(path: Path, spec: KnownRun | None, notes: list[str]) -> RunRecord:
    """Load one run workdir (missing pieces become notes and empty fields).

    Args:
        path: The workdir.
        spec: Its :class:`KnownRun` entry, or ``None`` for a run found by globbing.
        notes: Notes list.

    Returns:
        The :class:`RunRecord`.
    """
    cfg_file = _read_json(path / "config.json", notes) if (path / "config.json").exists() else None
    if cfg_file is None:
        notes.append(f"{path}: no readable config.json.")
        cfg_file = {}
    config = cfg_file.get("config", {}) if isinstance(cfg_file, dict) else {}
    records = read_jsonl(path / "metrics.jsonl", notes)
    records = sorted(
        (r for r in records if isinstance(r.get("epoch"), int)), key=lambda r: r["epoch"]
    )
    if not records:
        notes.append(f"{path}: no metrics.jsonl records.")
    samples = sorted(
        int(p.stem.split("_")[1])
        for p in (path / "samples").glob("epoch_*.npy")
        if p.stem.split("_")[1].isdigit()
    )
    evals = _load_evals(path / "eval", notes)
    name = spec.name if spec is not None else path.name
    kind = config.get("process", {}).get("kind", "ddpm")
    if spec is None:
        spec = KnownRun(name, name, "other", "ancestral" if kind == "ddpm" else "cold2")
    if not evals:
        notes.append(f"run {name} ({spec.display}): no evaluations in {path / 'eval'}.")
    final = path / "final" if (path / "final" / "params.msgpack").exists() else None
    if final is None and records:
        notes.append(f"run {name}: no final/params.msgpack (exported at the end of training).")
    return RunRecord(
        name=name,
        display=spec.display,
        role=spec.role,
        sampler=spec.sampler,
        path=path,
        config=config,
        devices=list(cfg_file.get("devices", [])) if isinstance(cfg_file, dict) else [],
        machine=cfg_file.get("machine") if isinstance(cfg_file, dict) else None,
        records=records,
        evals=evals,
        sample_epochs=samples,
        final=final,
    )


def manifest_sampler(flags: list[str], default: str) -> str:
    """The evaluation sampler a role's ``experiments/sample.py`` flags select.

    Args:
        flags: E.g. ``["--sampler", "ddim", "--steps", "100", "--clip-x0"]``.
        default: Returned when the flags name no sampler.

    Returns:
        The sampler as :func:`load_eval` names it (clipped DDIM is ``"ddim-clip"``).
    """
    sampler = default
    if "--sampler" in flags and flags.index("--sampler") + 1 < len(flags):
        sampler = flags[flags.index("--sampler") + 1]
    clip = None
    if "--clip-x0" in flags:
        i = flags.index("--clip-x0") + 1
        clip = flags[i] if i < len(flags) and flags[i] in ("wide", "data") else "wide"
    return clipped_name(sampler, clip)


def clipped_name(sampler: str | None, clip: Any) -> str | None:
    """Name DDIM and DPM-Solver++ with clipped ``x0`` as samplers of their own.

    Args:
        sampler: ``"ddim"``, ``"dpmpp"`` or any other name (returned unchanged).
        clip: The evaluation's ``clip_x0``: falsy (none), ``True``/``"wide"`` or ``"data"``.

    Returns:
        ``"ddim-clip"`` / ``"dpmpp-clip"`` (to [-1, 1]), ``"...-clip-data"`` (to the data
        range), else ``sampler``.
    """
    if sampler not in ("ddim", "dpmpp") or not clip:
        return sampler
    return f"{sampler}-clip-data" if clip == "data" else f"{sampler}-clip"


STUDY_EXTRAS = ("ablation", "short")  # study.json entries that group runs rather than name a role


def read_manifest(results_dir: Path, notes: list[str]) -> dict[str, tuple[Path, str]]:
    """Read ``study.json``: role -> (run folder, headline sampler).

    Run paths are relative to the folder holding the results tree (``"results/q1_default"``).

    Args:
        results_dir: The results tree.
        notes: Notes list (a missing or malformed manifest becomes a note).

    Returns:
        The roles found, with their sampler from the role's ``sample`` flags.
    """
    path = results_dir / "study.json"
    if not path.exists():
        notes.append(f"{path} missing: no study roles to report.")
        return {}
    data = _read_json(path, notes)
    out: dict[str, tuple[Path, str]] = {}
    defaults = {r.name: r.sampler for r in KNOWN_RUNS}
    for role, entry in (data or {}).items():
        if role.startswith("_") or role in STUDY_EXTRAS:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("run"), str):
            notes.append(f"{path}: role {role} has no 'run' folder; ignored.")
            continue
        run = Path(entry["run"])
        run = run if run.is_absolute() else results_dir.parent / run
        flags = [str(f) for f in entry.get("sample", [])]
        out[role] = (run, manifest_sampler(flags, defaults.get(role, "ancestral")))
    return out


def load_study(results_dir: str | Path) -> Study:
    """Read the study's runs (by role, from ``study.json``), anchor evaluations and benchmark.

    Args:
        results_dir: The results tree (e.g. ``results/``).

    Returns:
        The :class:`Study`; its ``notes`` list what is missing.
    """
    results_dir = Path(results_dir)
    notes: list[str] = []
    if not results_dir.is_dir():
        notes.append(f"results folder {results_dir} does not exist: nothing recorded yet.")
    manifest = read_manifest(results_dir, notes)
    runs: dict[str, RunRecord] = {}
    for spec in KNOWN_RUNS:
        entry = manifest.get(spec.name)
        if entry is None:
            notes.append(f"role {spec.name} ({spec.display}) is not in {results_dir}/study.json.")
            continue
        path, sampler = entry
        if not path.is_dir():
            notes.append(f"role {spec.name} ({spec.display}): its run {path} is missing.")
            continue
        runs[spec.name] = read_run_record(path, dataclasses.replace(spec, sampler=sampler), notes)
    anchors = _load_evals(results_dir / "anchors" / "eval", notes)
    extra = {t: anchors.pop(t) for t in list(anchors) if t not in KNOWN_ANCHORS}
    for tag, (disp, _) in KNOWN_ANCHORS.items():
        if tag not in anchors:
            notes.append(f"anchor {tag} ({disp}) not evaluated: {results_dir}/anchors/eval/{tag}.")
    for tag, rec in anchors.items():
        if rec.epoch is None and tag in KNOWN_ANCHORS:
            rec.epoch = KNOWN_ANCHORS[tag][1]
    anchor_log = read_jsonl(results_dir / "anchors" / "starter_train_log.jsonl", notes)
    bench = None
    bench_path = results_dir / "bench" / "bench.json"
    if bench_path.exists():
        bench = _read_json(bench_path, notes)
        if not isinstance(bench, dict):
            bench = None
    else:
        notes.append(f"speed benchmark not recorded: {bench_path} missing.")
    return Study(results_dir, runs, anchors, anchor_log, bench, notes, extra)


# ----------------------------------------------------------------------------- selection


def headline_eval(run: RunRecord) -> EvalRecord | None:
    """The evaluation a run is judged by: its latest epoch, its preferred sampler, most steps.

    Among evaluations at the highest epoch, those with the run's preferred sampler win
    (else any), then those of the sampling (EMA) weights over raw ones, then the one with
    the most samples, then the most sampling steps.

    Args:
        run: The run.

    Returns:
        The chosen evaluation, or ``None`` if the run has none.
    """
    if not run.evals:
        return None
    last = run.records[-1]["epoch"] if run.records else None
    evs = list(run.evals.values())
    top = max((e.epoch if e.epoch is not None else last or 0) for e in evs)
    evs = [e for e in evs if (e.epoch if e.epoch is not None else last or 0) == top]
    pref = [e for e in evs if e.sampler == run.sampler] or evs
    return max(
        pref,
        key=lambda e: (
            e.metrics.get("weights") != "raw",
            e.metrics.get("n", 0),
            e.steps or 0,
            e.tag,
        ),
    )


def matched_pair(
    a: RunRecord | None, b: RunRecord | None
) -> tuple[EvalRecord | None, EvalRecord | None]:
    """Both runs' headline evaluations at one ``N``, so that they compare like for like.

    Where the headlines differ in ``N``, the one with more samples is replaced by its run's
    evaluation of the same epoch and sampling setting at the other's ``N``, if recorded.

    Args:
        a: The first run (or ``None``).
        b: The second run (or ``None``).

    Returns:
        ``(ea, eb)``: the evaluations (``None`` for a run without one).
    """
    ea = headline_eval(a) if a else None
    eb = headline_eval(b) if b else None
    if ea is None or eb is None:
        return ea, eb
    na, nb = ea.metrics.get("n"), eb.metrics.get("n")
    if na == nb or not isinstance(na, int) or not isinstance(nb, int):
        return ea, eb

    def at_n(run: RunRecord, e: EvalRecord, n: int) -> EvalRecord:
        same = [
            o
            for o in run.evals.values()
            if o.epoch == e.epoch
            and sampling_setting(o) == sampling_setting(e)
            and o.metrics.get("n") == n
        ]
        return max(same, key=lambda o: o.tag) if same else e

    return (at_n(a, ea, nb), eb) if na > nb else (ea, at_n(b, eb, na))


def sampling_setting(e: EvalRecord) -> tuple:
    """What an evaluation's samples depend on besides the weights' epoch and ``N``.

    Args:
        e: The evaluation.

    Returns:
        ``(sampler, steps, sample noise, eta, weights)``; evaluations with equal settings
        may share a curve.
    """
    m = e.metrics
    noise = m.get("noise") or 0.0
    return (e.sampler, e.steps, noise, m.get("eta"), m.get("weights") or "ema")


def epoch_series(run: RunRecord) -> list[EvalRecord]:
    """Evaluations of one sampling setting across epochs, sorted by epoch.

    The setting (:func:`sampling_setting`: sampler, steps, clipping, sample noise, eta and
    raw or averaged weights) is the headline's sampler where it was evaluated at two epochs
    or more, else the one evaluated at the most distinct epochs (ties: no sample noise, then
    more steps), so a curve never mixes samplers. Where an epoch was evaluated at several
    ``N``, the one nearest 1000 is used (ties: the larger), so most points share ``N``.

    Args:
        run: The run.

    Returns:
        The evaluations (one per epoch), possibly empty.
    """
    groups: dict[tuple, dict[int, EvalRecord]] = {}

    def rank(e: EvalRecord) -> tuple:
        n = e.metrics.get("n") or 0
        return (-abs(n - 1000), n)

    for e in run.evals.values():
        if e.epoch is None:
            continue
        g = groups.setdefault(sampling_setting(e), {})
        if e.epoch not in g or rank(e) > rank(g[e.epoch]):
            g[e.epoch] = e
    if not groups:
        return []
    head = headline_eval(run)
    best = max(
        groups,
        key=lambda k: (
            head is not None and k[0] == head.sampler and len(groups[k]) > 1,
            len(groups[k]),
            k[2] == 0.0,
            k[1] or 0,
        ),
    )
    return [groups[best][ep] for ep in sorted(groups[best])]


def steps_series(run: RunRecord) -> tuple[int | None, dict[str, list[EvalRecord]]]:
    """Evaluations at one epoch across sampling steps, grouped by sampler.

    Args:
        run: The run.

    Returns:
        ``(epoch, {sampler: evaluations sorted by steps})`` at the epoch with the most
        distinct (sampler, steps) settings; ``(None, {})`` if no evaluation has steps.
    """
    by_epoch: dict[int, dict[tuple, EvalRecord]] = {}
    for e in run.evals.values():
        if e.epoch is None or e.steps is None:
            continue
        by_epoch.setdefault(e.epoch, {})[(e.sampler, e.steps)] = e
    if not by_epoch:
        return None, {}
    epoch = max(by_epoch, key=lambda ep: (len(by_epoch[ep]), ep))
    out: dict[str, list[EvalRecord]] = {}
    for (sampler, _), e in sorted(by_epoch[epoch].items(), key=lambda kv: (kv[0][0], kv[0][1])):
        out.setdefault(sampler, []).append(e)
    return epoch, out


def select_epochs(epochs: list[int], k: int = 6) -> list[int]:
    """Pick ``k`` roughly evenly spaced epochs, always including the first and the last.

    Args:
        epochs: Sorted available epochs.
        k: How many to pick.

    Returns:
        Sorted distinct epochs (all of them if there are at most ``k``).
    """
    if len(epochs) <= k:
        return list(epochs)
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, k)).astype(int))
    return [epochs[i] for i in idx]


# ----------------------------------------------------------------------------- formatting


def _f(x: Any, d: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{d}f}"


def _ci(m: dict, key: str, d: int) -> str:
    ci = m.get(f"{key}_ci")
    if m.get(key) is None:
        return "–"
    if isinstance(ci, list | tuple) and len(ci) == 2:
        return f"{_f(m[key], d)} [{_f(ci[0], d)}, {_f(ci[1], d)}]"
    return _f(m[key], d)


def _sampler_text(e: EvalRecord) -> str:
    if e.sampler is None:
        return "starter sampler (1000 steps)" if e.tag in KNOWN_ANCHORS else "given samples"
    if e.sampler.startswith("cold"):
        return f"cold Alg. {e.sampler[-1]}" + (f", {e.steps} steps" if e.steps else "")
    base, _, clip = (e.sampler or "").partition("-")
    label = {"ddim": "DDIM", "dpmpp": "DPM-Solver++"}.get(base, base)
    name = {"clip": f"{label} (x0 clipped)", "clip-data": f"{label} (x0 clipped to data)"}.get(
        clip, label if not clip else e.sampler
    )
    return f"{name} {e.steps}" if e.steps else name


def _sec_per_1k(e: EvalRecord) -> float | None:
    s, n = e.metrics.get("sample_seconds"), e.metrics.get("n")
    if isinstance(s, int | float) and isinstance(n, int) and n > 0:
        return 1000.0 * s / n
    return None


class Numbers:
    """Collects the report's numbers as ``key -> {"v": value, "s": text}``."""

    def __init__(self) -> None:
        self.d: dict[str, dict] = {}

    def put(self, key: str, value: Any, text: str | None = None, d: int = 1) -> None:
        """Store a value and its text (default: ``value`` with ``d`` decimals, or ``str``)."""
        if text is None:
            if isinstance(value, bool):
                text = "yes" if value else "no"
            elif isinstance(value, float):
                text = _f(value, d)
            else:
                text = "–" if value is None else str(value)
        self.d[key] = {"v": value, "s": text}

    def eval_metrics(self, prefix: str, e: EvalRecord) -> None:
        """Store an evaluation's metrics under ``prefix``."""
        m = e.metrics
        self.put(f"{prefix}.tag", e.tag)
        self.put(f"{prefix}.epoch", e.epoch)
        self.put(f"{prefix}.sampler", e.sampler, _sampler_text(e))
        self.put(f"{prefix}.steps", e.steps)
        self.put(f"{prefix}.n", m.get("n"))
        self.put(f"{prefix}.fd", m.get("fd"), _f(m.get("fd"), 1))
        self.put(f"{prefix}.fd_ci", m.get("fd_ci"), _ci(m, "fd", 1))
        self.put(f"{prefix}.kid", m.get("kid"), _f(m.get("kid"), 2))
        self.put(f"{prefix}.kid_ci", m.get("kid_ci"), _ci(m, "kid", 2))
        for k, d in (("precision", 3), ("recall", 3), ("class_kl", 3), ("class_tv", 3)):
            self.put(f"{prefix}.{k}", m.get(k), _f(m.get(k), d))
        self.put(f"{prefix}.confidence", m.get("confidence"), _f(m.get("confidence"), 3))
        ratio = m.get("nn_dist_ratio")
        self.put(f"{prefix}.nn_ratio", ratio, _f(ratio, 2))
        if isinstance(ratio, int | float):  # calibration: test digits 1.00, training copies 0.00
            self.put(f"{prefix}.nn_close", bool(ratio < NN_CLOSE))
        oor = m.get("frac_out_of_range")
        self.put(f"{prefix}.oor_pct", None if oor is None else 100 * oor, _f(_pct(oor), 1))
        hist = m.get("class_hist")
        if isinstance(hist, list) and len(hist) == 10:
            self.put(f"{prefix}.rarest_digit", int(np.argmin(hist)))
            self.put(f"{prefix}.rarest_share", float(min(hist)), _f(float(min(hist)), 3))
            self.put(f"{prefix}.commonest_digit", int(np.argmax(hist)))
            self.put(f"{prefix}.commonest_share", float(max(hist)), _f(float(max(hist)), 3))
        s1k = _sec_per_1k(e)
        self.put(f"{prefix}.sec_per_1k", s1k, _f(s1k, 1))


def _pct(x: Any) -> float | None:
    return None if x is None else 100.0 * x


def compare(a: EvalRecord | None, b: EvalRecord | None, key: str = "fd") -> dict | None:
    """Compare two evaluations on a lower-is-better metric with a confidence interval.

    Args:
        a: First evaluation.
        b: Second evaluation.
        key: ``"fd"`` or ``"kid"``.

    Returns:
        ``None`` if either is missing, else ``{"better": "a" | "b" | "tie", "separated":
        bool (the two intervals do not overlap), "same_n": bool, "ratio": a / b}``.
    """
    if a is None or b is None:
        return None
    va, vb = a.metrics.get(key), b.metrics.get(key)
    if va is None or vb is None:
        return None
    ca, cb = a.metrics.get(f"{key}_ci"), b.metrics.get(f"{key}_ci")
    separated = bool(ca and cb and (ca[1] < cb[0] or cb[1] < ca[0]))
    better = "tie" if va == vb else ("a" if va < vb else "b")
    return {
        "better": better,
        "separated": separated,
        "same_n": a.metrics.get("n") == b.metrics.get("n"),
        "ratio": va / vb if vb else None,
    }


# ----------------------------------------------------------------------------- building


def _param_count(config: dict) -> int | None:
    try:
        import jax

        from jaxdiff.app.runner import build, init_params
        from jaxdiff.config import Config

        pieces = build(Config.from_dict(config))
        shapes = jax.eval_shape(lambda: init_params(pieces, jax.random.PRNGKey(0)))
        return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))
    except Exception:  # noqa: BLE001 - a config from another version: no count, no crash
        return None


def _model_text(cfg: dict) -> str:
    m = cfg.get("model", {})
    name = {"cnn": "CNN", "unet": "UNet"}.get(m.get("name"), str(m.get("name", "?")))
    hidden = ",".join(str(h) for h in m.get("hidden", []))
    extra = " +attn" if m.get("attention") else ""
    prec = "" if m.get("precision", "fp32") == "fp32" else f" {m['precision']}"
    return f"{name} ({hidden}){extra}{prec}"


def _process_text(cfg: dict) -> str:
    p = cfg.get("process", {})
    if p.get("kind") == "ddpm":
        return f"DDPM, {p.get('schedule')} β {p.get('beta1')}–{p.get('beta2')}, T={p.get('T')}"
    if p.get("kind") == "cold":
        return f"cold, {p.get('degradation')}, T={p.get('T')}, {p.get('loss', '').upper()}"
    return "?"


def config_diff(
    base: dict, other: dict, ignore: tuple[tuple[str, str], ...] = (("train", "epochs"),)
) -> list[str]:
    """List the settings where ``other`` differs from ``base`` ("learning rate 2e-4 -> 1e-3").

    Args:
        base: A run config dict (``config.json["config"]``).
        other: Another.
        ignore: ``(section, key)`` pairs left out (by default the epoch budget, which the
            reproducibility table shows).

    Returns:
        One ``"section.key a -> b"`` string per differing setting, sorted.
    """
    base, other = _with_defaults(base), _with_defaults(other)
    out = []
    for sec in sorted(set(base) | set(other)):
        a, b = base.get(sec, {}), other.get(sec, {})
        for k in sorted(set(a) | set(b)):
            if (sec, k) in ignore or a.get(k) == b.get(k):
                continue
            fa, fb = (_setting_text(v) for v in (a.get(k), b.get(k)))
            out.append(f"{SETTING_NAMES.get(f'{sec}.{k}', f'{sec}.{k}')} {fa} -> {fb}")
    return out


def _with_defaults(cfg: dict) -> dict:
    """``cfg`` with the settings it predates filled in from :class:`jaxdiff.config.Config`.

    A config written before a setting existed ran with its default, so it must not read as
    a change. A dict that is not a whole config is returned as it is.
    """
    from jaxdiff.config import Config

    try:
        full = Config.from_dict(cfg).to_dict()
    except (TypeError, ValueError, KeyError, AttributeError):
        return cfg
    return {sec: {**full.get(sec, {}), **sub} for sec, sub in cfg.items()} | {
        sec: sub for sec, sub in full.items() if sec not in cfg
    }


#: Readable names of config settings (for :func:`config_diff`).
SETTING_NAMES = {
    "train.lr": "learning rate",
    "train.batch_size": "batch size",
    "train.ema_decay": "EMA decay",
    "train.seed": "seed",
    "train.limit": "training images",
    "train.grad_clip": "gradient clip",
    "train.lr_schedule": "learning-rate schedule",
    "train.warmup_steps": "warm-up steps",
    "model.name": "network",
    "model.hidden": "channels",
    "model.kernel_size": "kernel size",
    "model.ln_over_channels": "LayerNorm over channels",
    "model.precision": "precision",
    "model.conv_impl": "convolution",
    "model.attention": "attention",
    "model.res_blocks": "residual blocks per level",
    "process.kind": "process",
    "process.schedule": "noise schedule",
    "process.beta1": "beta_1",
    "process.beta2": "beta_T",
    "process.degradation": "degradation",
    "process.prediction": "prediction",
    "process.weighting": "loss weighting",
}


def _setting_text(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ",".join(map(str, v))
    return "–" if v in (None, "") else str(v)


#: Config fields whose driver flag has another name (the rest: ``--field-name``).
_FIELD_DEST = {"name": "model", "ema_decay": "ema"}


def training_command(config: dict, workdir: str) -> str | None:
    """Reconstruct the training command of a recorded config (flags that differ from defaults).

    The command is checked by parsing it back with the drivers' parser: it is returned only
    if it gives exactly ``config``.

    Args:
        config: A run config dict (``config.json["config"]``).
        workdir: The run folder to put after ``--workdir``.

    Returns:
        E.g. ``"python experiments/ddpm.py --lr 0.001 --epochs 20 --workdir results/x"``, or
        ``None`` if no command of the drivers' flags reproduces the config.
    """
    from jaxdiff.app.cli import common_parser, config_from_args
    from jaxdiff.config import Config

    try:
        want = Config.from_dict(config).to_dict()
        kind = want["process"]["kind"]
        base = ["--model", want["model"]["name"]]
        if kind == "cold":
            base += ["--degradation", want["process"]["degradation"]]
        parser = common_parser(None, kind)

        def parse(argv: list[str]) -> dict:
            return config_from_args(parser.parse_args(argv), parser, kind).to_dict()

        default = parse(base)
        argv = base[:2] if want["model"]["name"] != "cnn" else []
        argv += base[2:]  # cold: --degradation
        # the flags come from the drivers' own parser: a new flag needs no change here
        actions = {a.dest: a for a in parser._actions if a.option_strings}
        flags = {dest: a.option_strings[0] for dest, a in actions.items()}
        for sec, fields in want.items():
            for key, v in fields.items():
                flag = flags.get(_FIELD_DEST.get(key, key))
                if flag is None or v == default[sec].get(key) or flag in argv:
                    continue
                if isinstance(v, bool):  # store_true, or --x/--no-x
                    negs = [o for o in actions[_FIELD_DEST.get(key, key)].option_strings[1:]]
                    argv += [flag] if v else [o for o in negs if o.startswith("--no-")][:1]
                else:
                    text = ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
                    argv += [flag, text]
        if parse(argv) != want:
            return None
    except (ValueError, KeyError, TypeError, SystemExit):
        return None
    script = "ddpm.py" if kind == "ddpm" else "cold.py"
    return " ".join(["python", f"experiments/{script}", *argv, "--workdir", workdir])


def _machine_text(run: RunRecord) -> str:
    m = run.machine
    if isinstance(m, dict):  # prose, not a JSON dict: "AMD EPYC, 2 cores, jax 0.10.2 (cpu)"
        parts = [str(m.get("cpu", "")), f"{m['cores']} cores" if m.get("cores") else ""]
        jax_ = f"jax {m['jax']}" + (f" ({m['backend']})" if m.get("backend") else "")
        return ", ".join(x for x in (*parts, jax_ if m.get("jax") else "") if x) or "–"
    if m:
        return str(m)
    return ", ".join(str(d) for d in run.devices) or "–"


def _copy(src: Path, dst: Path, figs: list[str]) -> None:
    if src.exists():
        shutil.copyfile(src, dst)
        figs.append(dst.name)


class ReportBuilder:
    """Turns a :class:`Study` into ``figures/*.png`` and ``data/*.json``."""

    def __init__(self, study: Study, report_dir: str | Path) -> None:
        """Prepare output folders (stale generated figures and data are removed).

        Args:
            study: From :func:`load_study`.
            report_dir: The report folder (``figures/`` and ``data/`` are written inside).
        """
        self.study = study
        self.dir = Path(report_dir)
        self.fig_dir = self.dir / "figures"
        self.data_dir = self.dir / "data"
        for d, pattern in ((self.fig_dir, "*.png"), (self.data_dir, "*.json")):
            d.mkdir(parents=True, exist_ok=True)
            for old in d.glob(pattern):
                old.unlink()
        self.figs: list[str] = []
        self.num = Numbers()
        self.tables: dict[str, dict] = {}
        self.series: dict[str, Any] = {}
        self.notes = list(study.notes)

    # -- numbers and tables ----------------------------------------------------------------

    def run_numbers(self) -> None:
        """Per-run configuration, cost and headline numbers, and the reproducibility table."""
        rows, commands = [], []
        runs_json = {}
        seen_paths: set[Path] = set()
        for name, run in self.study.runs.items():
            cfg = run.config
            tr = cfg.get("train", {})
            last = run.records[-1] if run.records else {}
            params = _param_count(cfg) if cfg else None
            ips = [r["images_per_s"] for r in run.records if "images_per_s" in r]
            k = f"run.{name}"
            self.num.put(f"{k}.display", run.display)
            self.num.put(f"{k}.model", _model_text(cfg))
            self.num.put(f"{k}.process", _process_text(cfg))
            self.num.put(f"{k}.params", params, f"{params:,}" if params else "–")
            for key in (
                "lr", "batch_size", "seed", "ema_decay", "epochs", "limit", "grad_clip",
                "lr_schedule", "warmup_steps",
            ):  # fmt: skip
                self.num.put(
                    f"{k}.{key}", tr.get(key), None if tr.get(key) is None else str(tr[key])
                )
            self.num.put(f"{k}.epochs_done", last.get("epoch"))
            self.num.put(f"{k}.steps_done", last.get("step"))
            self.num.put(f"{k}.final_loss", last.get("loss"), _f(last.get("loss"), 4))
            self.num.put(
                f"{k}.wall_h", _div(last.get("wall_s"), 3600), _f(_div(last.get("wall_s"), 3600), 2)
            )
            self.num.put(
                f"{k}.cpu_h", _div(last.get("cpu_s"), 3600), _f(_div(last.get("cpu_s"), 3600), 2)
            )
            med = float(np.median(ips)) if ips else None
            self.num.put(f"{k}.img_s", med, _f(med, 0))
            self.num.put(f"{k}.machine", _machine_text(run))
            cmd = training_command(cfg, run.path.as_posix()) if cfg else None
            if cfg and cmd is None:
                self.notes.append(f"run {name}: no driver command reproduces its config.")
            self.num.put(f"{k}.command", cmd)
            commands.append({"run": name, "display": run.display, "command": cmd})
            base = self.study.runs.get("q1_default")
            if base is not None and base is not run and base.config and cfg:
                diff = config_diff(base.config, cfg)
                self.num.put(f"{k}.diff", diff, "; ".join(diff).replace("->", "→") or "none")
            size = (run.final / "params.msgpack").stat().st_size if run.final else None
            self.num.put(
                f"{k}.final_kb", None if size is None else size / 1024, _f(_div(size, 1024), 0)
            )
            if run.path in seen_paths:  # a run serving two roles is listed once
                continue
            seen_paths.add(run.path)
            rows.append(
                [
                    run.display,
                    _process_text(cfg),
                    _model_text(cfg),
                    self.num.d[f"{k}.params"]["s"],
                    str(tr.get("lr", "–")),
                    str(tr.get("batch_size", "–")),
                    str(tr.get("ema_decay", "–")),
                    str(tr.get("seed", "–")),
                    f"{last.get('epoch', 0)}/{tr.get('epochs', '?')}",
                    self.num.d[f"{k}.wall_h"]["s"],
                    self.num.d[f"{k}.cpu_h"]["s"],
                    self.num.d[f"{k}.img_s"]["s"],
                    _machine_text(run),
                ]
            )
            runs_json[name] = {
                "display": run.display,
                "role": run.role,
                "path": str(run.path),
                "config": cfg,
                "devices": run.devices,
                "machine": run.machine,
                "params": params,
                "epochs_done": last.get("epoch"),
                "wall_s": last.get("wall_s"),
                "cpu_s": last.get("cpu_s"),
                "median_images_per_s": med,
                "final_params": str(run.final / "params.msgpack") if run.final else None,
                "evaluations": sorted(run.evals),
            }
        self.starter_numbers()
        self.tables["runs"] = {
            "header": [
                "run", "process", "model", "params", "lr", "batch", "EMA", "seed",
                "epochs", "wall h", "CPU h", "img/s", "devices",
            ],
            "rows": rows,
        }  # fmt: skip
        self._write("runs.json", runs_json)
        self._write("commands.json", commands)

    def starter_numbers(self) -> None:
        """The starter reproduction against the PyTorch log, and when its grids leave saturation.

        ``q1.loss_vs_starter.*``: our epoch-mean loss over the starter's, in percent above it,
        over the epochs both logged (mean, min, max; ``from8`` from epoch 8 on).
        ``run.<name>.first_clean_epoch``: the first epoch whose fixed-key grid has fewer than
        half of its samples saturated (:func:`saturated_share`); the starter's first 16
        samples at each anchor epoch get ``anchor.starter_ep<E>.saturated_pct``.
        """
        run = self.study.runs.get("q1_default")
        log = {r["epoch"]: r["loss"] for r in self.study.anchor_log if "loss" in r and "epoch" in r}
        if run is not None and log:
            pct = {
                r["epoch"]: 100 * (r["loss"] / log[r["epoch"]] - 1)
                for r in run.records
                if r.get("epoch") in log
            }
            for label, vals in (
                ("all", list(pct.values())),
                ("from8", [v for e, v in pct.items() if e >= 8]),
            ):
                if vals:
                    k = f"q1.loss_vs_starter.{label}"
                    self.num.put(f"{k}.mean", float(np.mean(vals)), _f(float(np.mean(vals)), 1))
                    self.num.put(f"{k}.min", float(min(vals)), _f(float(min(vals)), 1))
                    self.num.put(f"{k}.max", float(max(vals)), _f(float(max(vals)), 1))
            self.num.put("q1.loss_vs_starter.epochs", len(pct))
        for name, r in self.study.runs.items():
            if r.kind != "ddpm":
                continue
            shares = {
                e: saturated_share(np.load(r.path / "samples" / f"epoch_{e:03d}.npy"))
                for e in r.sample_epochs
            }
            first = next((e for e, v in shares.items() if v < 0.5), None)
            self.num.put(f"run.{name}.first_clean_epoch", first)
            self.series.setdefault("saturated", {})[name] = shares
        for e in ANCHOR_EPOCHS:
            f = self.study.results_dir / "anchors" / "samples" / f"starter_ep{e}_first16.npy"
            if f.exists():
                v = saturated_share(np.load(f))
                self.num.put(f"anchor.starter_ep{e}.saturated_pct", 100 * v, _f(100 * v, 0))

    def eval_numbers(self) -> None:
        """Headline evaluations, anchors, floor, comparisons and the fidelity table."""
        rows = []
        evals_json: dict[str, dict] = {}
        floor = None
        shown: set[Path] = set()
        for name, run in self.study.runs.items():
            evals_json[name] = {t: _eval_summary(e) for t, e in sorted(run.evals.items())}
            head = headline_eval(run)
            if head is None:
                continue
            self.num.eval_metrics(f"eval.{name}", head)
            if run.path not in shown:  # a run serving two roles gets one row
                rows.append(_fid_row(run.display, head))
                shown.add(run.path)
            floor = floor or head.metrics.get("floor")
            last = run.records[-1]["epoch"] if run.records else None
            if head.epoch is not None and last is not None and head.epoch != last:
                self.notes.append(
                    f"run {name}: trained {last} epochs but the latest evaluation is of epoch "
                    f"{head.epoch}."
                )
        for name, run in self.study.runs.items():
            for tag, e in run.evals.items():
                self.num.eval_metrics(f"ev.{name}.{tag}", e)
        for tag, e in sorted(self.study.anchor_extra.items()):
            self.num.eval_metrics(f"anchor.{tag}", e)
            rows.append(_fid_row(EXTRA_ANCHORS.get(tag, tag.replace("_", " ")), e))
        xdir = self.study.results_dir / "q2x"  # the Q2 exploration's short runs
        for sub in sorted(xdir.iterdir()) if xdir.is_dir() else []:
            for tag, e in _load_evals(sub / "eval", self.notes).items():
                self.num.eval_metrics(f"x.{_key(sub.name)}.{tag}", e)
        cal = self.study.results_dir / "calibration" / "calibration.json"
        for label, m in ((_read_json(cal, self.notes) or {}) if cal.exists() else {}).items():
            if isinstance(m, dict):  # known image sets under the same protocol: the FD scale
                self.num.eval_metrics(f"cal.{_key(label)}", EvalRecord(label, cal, m, *[None] * 3))
        evals_json["anchors"] = {t: _eval_summary(e) for t, e in sorted(self.study.anchors.items())}
        for tag, e in sorted(self.study.anchors.items(), key=lambda kv: kv[1].epoch or 0):
            disp = KNOWN_ANCHORS.get(tag, (tag, None))[0]
            self.num.eval_metrics(f"anchor.{tag}", e)
            rows.append(_fid_row(disp, e))
            floor = floor or e.metrics.get("floor")
            wall = self.anchor_wall_s(e.epoch)
            self.num.put(f"anchor.{tag}.train_wall_min", _div(wall, 60), _f(_div(wall, 60), 0))
        if isinstance(floor, dict) and "fd" in floor:
            fl = EvalRecord("floor", Path("."), floor, None, None, None)
            self.num.eval_metrics("floor", fl)
            rows.append(_fid_row("real test images (floor)", fl))
        self.tables["fidelity"] = {
            "header": [
                "model", "epoch", "sampler", "N", "FD [95% CI]", "KID [95% CI]",
                "precision", "recall", "class TV", "confidence", "NN ratio", "out of range %",
            ],
            "rows": rows,
        }  # fmt: skip
        self._write("evals.json", evals_json)
        heads = {n: headline_eval(r) for n, r in self.study.runs.items()}
        pairs = {
            "q1": ("q1_alt", "q1_default"),
            "q2": ("q2_custom", "q2_gaussian"),
            "best": ("best", "q1_default"),
            "starter": ("q1_default", "anchor:starter_ep50"),
            "sampler": ("anchor:starter_ep50_jaxdiff_sampler", "anchor:starter_ep50"),
        }
        anchors = {**self.study.anchors, **self.study.anchor_extra}
        heads.update({f"anchor:{t}": e for t, e in anchors.items()})
        runs = self.study.runs
        for label, (a, b) in pairs.items():
            if a in runs and b in runs:  # two runs compare at equal N where both have it
                ea, eb = matched_pair(runs[a], runs[b])
                for side, e in (("a", ea), ("b", eb)):
                    if e is not None:
                        self.num.eval_metrics(f"pair.{label}.{side}", e)
            else:
                ea, eb = heads.get(a), heads.get(b)
            for key in ("fd", "kid"):
                c = compare(ea, eb, key)
                if c is None:
                    continue
                p = f"cmp.{label}.{key}"
                self.num.put(f"{p}.a_better", c["better"] == "a")
                self.num.put(f"{p}.separated", c["separated"])
                self.num.put(f"{p}.same_n", c["same_n"])
                self.num.put(f"{p}.ratio", c["ratio"], _f(c["ratio"], 2))

    def anchor_wall_s(self, epoch: int | None) -> float | None:
        """Wall seconds the starter took to train ``epoch`` epochs (from its log), if known."""
        for r in self.study.anchor_log:
            if r.get("epoch") == epoch and isinstance(r.get("wall_s"), int | float):
                return float(r["wall_s"])
        return None

    def q2_table(self) -> None:
        """Side-by-side comparison of the cold run and the Gaussian run, with sampling cost."""
        rows = []
        custom, gaussian = matched_pair(
            self.study.runs.get("q2_custom"), self.study.runs.get("q2_gaussian")
        )
        for name, e in (("q2_gaussian", gaussian), ("q2_custom", custom)):
            run = self.study.runs.get(name)
            if e is None:
                continue
            m = e.metrics
            rows.append(
                [
                    run.display,
                    str(e.epoch),
                    _sampler_text(e),
                    str(m.get("n", "–")),
                    _ci(m, "fd", 1),
                    _ci(m, "kid", 2),
                    _f(m.get("precision"), 3),
                    _f(m.get("recall"), 3),
                    _f(m.get("class_kl"), 3),
                    _f(m.get("nn_dist_ratio"), 2),
                    str(_net_evals(run, e) or "–"),
                    _f(_sec_per_1k(e), 1),
                ]
            )
        self.tables["q2"] = {
            "header": [
                "model", "epoch", "sampler", "N", "FD [95% CI]", "KID [95% CI]", "precision",
                "recall", "class KL", "NN ratio", "network calls / sample", "s / 1000 samples",
            ],
            "rows": rows,
        }  # fmt: skip

    def bench_numbers(self) -> None:
        """The speed benchmark's table and ratios (any shape problem becomes a note)."""
        b = self.study.bench
        rows = []
        if b is not None:
            cases = b.get("cases")
            if not isinstance(cases, dict):
                self.notes.append("bench.json has no 'cases' mapping; speed table left empty.")
                cases = {}
            for case, v in cases.items():
                if not isinstance(v, dict):
                    continue
                ips = v.get("images_per_s")
                unit = "img/s" if case.endswith("train") else "img/s per 100 steps"
                share = v.get("ceiling_share")
                rows.append([case, _f(ips, 1), unit, _f(v.get("gflops"), 1), _f(_pct(share), 0)])
                self.num.put(f"bench.{_key(case)}.img_s", ips, _f(ips, 1))
            ratios = b.get("ratios") if isinstance(b.get("ratios"), dict) else {}
            for k, r in ratios.items():
                if isinstance(r, int | float):
                    self.num.put(f"bench.ratio.{_key(k)}", float(r), _f(float(r), 2))
            bab = b.get("best_against_best")
            for what, v in (bab if isinstance(bab, dict) else {}).items():
                if isinstance(v, dict) and isinstance(v.get("ratio"), int | float):
                    self.num.put(f"bench.best.{_key(what)}", float(v["ratio"]), _f(v["ratio"], 2))
            cfg = b.get("config") if isinstance(b.get("config"), dict) else {}
            cpu = cfg.get("cpu") if isinstance(cfg.get("cpu"), dict) else {}
            flags = cpu.get("flags")
            if isinstance(flags, list):
                isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "x86"
                bf16 = "avx512_bf16" in flags
                desc = " with bf16" if bf16 else ", no native bf16"
                desc += " and AMX" if "amx_bf16" in flags else ""
                self.num.put("bench.isa", isa, isa + desc)
            impl = cfg.get("resolved_impl")
            if isinstance(impl, str):
                self.num.put("bench.impl", impl, impl)
            la = b.get("config", {}).get("load_avg") if isinstance(b.get("config"), dict) else None
            if isinstance(la, list | tuple) and la:
                self.num.put("bench.load_avg", float(la[0]), _f(float(la[0]), 2))
        self.tables["bench"] = {
            "header": ["case", "throughput", "unit", "GFLOP/s", "% of ceiling"],
            "rows": rows,
        }

    def steps_table(self) -> None:
        """Quality against sampling steps (rows per run, sampler and steps)."""
        rows, series = [], {}
        for name, run in self.study.runs.items():
            if "samplers" in self.study.runs and name != "samplers":
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
                    "sec_per_1k": [_sec_per_1k(e) for e in evs],
                }
                for e in evs:
                    m = e.metrics
                    rows.append(
                        [
                            run.display,
                            str(epoch),
                            e.sampler or "–",
                            str(e.steps),
                            str(m.get("n", "–")),
                            _ci(m, "fd", 1),
                            _ci(m, "kid", 2),
                            _f(m.get("precision"), 3),
                            _f(m.get("recall"), 3),
                            _f(_sec_per_1k(e), 1),
                        ]
                    )
        self.series["steps"] = series
        self.tables["steps"] = {
            "header": [
                "model", "epoch", "sampler", "steps", "N", "FD [95% CI]", "KID [95% CI]",
                "precision", "recall", "s / 1000 samples",
            ],
            "rows": rows,
        }  # fmt: skip

    def ablation_table(self) -> None:
        """The recipe ablation (``study.json``'s ``ablation`` entry): one change per run.

        The entry names the base run (``run``), its variants (``variants``: label -> run
        folder, or ``{"run", "eval", "change"}`` for a change that is not in the config,
        e.g. the base run's raw weights under its own evaluation tag) and the evaluation tag
        every run is judged by (``eval``). Table ``ablation`` and numbers
        ``abl.<label>.{fd, fd_ci, recall, dfd, cpu_min}``.
        """
        entry = self._study_entry("ablation")
        if entry is None:
            return
        root = self.study.results_dir.parent
        runs = {"base": entry.get("run"), **entry.get("variants", {})}
        base_cfg, base_fd, rows = None, None, []
        for label, rel in runs.items():
            spec = rel if isinstance(rel, dict) else {"run": rel}
            path, tag = root / str(spec.get("run")), spec.get("eval", entry.get("eval", ""))
            run = read_run_record(path, None, self.notes) if path.is_dir() else None
            e = run.evals.get(tag) if run else None
            if e is None:
                self.notes.append(f"ablation {label}: no evaluation {tag} in {path}.")
                continue
            if label == "base":
                base_cfg, base_fd = run.config, e.metrics["fd"]
            last = run.records[-1] if run.records else {}
            cpu_min = _div(last.get("cpu_s"), 60)
            change = spec.get("change") or "; ".join(config_diff(base_cfg or {}, run.config))
            change = change.replace("->", "→")
            dfd = e.metrics["fd"] - base_fd if base_fd is not None else None
            k = f"abl.{_key(label)}"
            self.num.put(f"{k}.fd", e.metrics["fd"], _f(e.metrics["fd"], 1))
            self.num.put(f"{k}.fd_ci", e.metrics.get("fd_ci"), _ci(e.metrics, "fd", 1))
            self.num.put(f"{k}.recall", e.metrics.get("recall"), _f(e.metrics.get("recall"), 3))
            self.num.put(f"{k}.dfd", dfd, _f(dfd, 1))
            self.num.put(f"{k}.cpu_min", cpu_min, _f(cpu_min, 0))
            rows.append(
                [
                    label,
                    change or "–",
                    str(last.get("epoch", "–")),
                    _ci(e.metrics, "fd", 1),
                    "–" if dfd is None or label == "base" else f"{dfd:+.1f}",
                    _f(e.metrics.get("recall"), 3),
                    _f(cpu_min, 0),
                ]
            )
        self.tables["ablation"] = {
            "header": ["run", "change from the base", "epochs", "FD [95% CI]", "ΔFD",
                       "recall", "train CPU min"],
            "rows": rows,
        }  # fmt: skip

    def _study_entry(self, name: str) -> dict | None:
        """``study.json``'s entry ``name`` (one of :data:`STUDY_EXTRAS`), if it is a mapping."""
        entry = (_read_json(self.study.results_dir / "study.json", self.notes) or {}).get(name)
        return entry if isinstance(entry, dict) else None

    def short_runs_numbers(self) -> None:
        """Short runs against a time budget (``study.json``'s ``short`` entry).

        The entry maps labels to run folders (``runs``). Numbers
        ``short.<label>.{fd, fd_ci, n, train_min, images}``: each run's headline evaluation,
        its training wall minutes (compilation included) and the images it trained on.
        """
        entry = self._study_entry("short")
        if entry is None:
            return
        root = self.study.results_dir.parent
        for label, rel in entry.get("runs", {}).items():
            path = root / str(rel)
            run = read_run_record(path, None, self.notes) if path.is_dir() else None
            e = headline_eval(run) if run else None
            if e is None or not run.records:
                self.notes.append(f"short run {label}: no run or evaluation in {path}.")
                continue
            train = run.config.get("train", {})
            images = (train.get("limit") or 60000) * run.records[-1].get("epoch", 0)
            minutes = _div(run.records[-1].get("wall_s"), 60)
            k = f"short.{_key(label)}"
            self.num.eval_metrics(k, e)
            self.num.put(f"{k}.train_min", minutes, _f(minutes, 1))
            self.num.put(f"{k}.images", images, f"{images:,}")

    def ttq_numbers(self) -> None:
        """Time to quality: training time at which each run first reaches each anchor's FD."""
        rows = []
        for name, run in self.study.runs.items():
            pts = []
            for e in epoch_series(run):
                rec = run.record_at(e.epoch)
                if rec is None:
                    continue
                pts.append(
                    {
                        "epoch": e.epoch,
                        "wall_min": _div(rec.get("wall_s"), 60),
                        "cpu_min": _div(rec.get("cpu_s"), 60),
                        "fd": e.metrics["fd"],
                        "fd_ci": e.metrics.get("fd_ci"),
                        "tag": e.tag,
                    }
                )
            self.series.setdefault("ttq", {})[name] = pts
            for tag, a in self.study.anchors.items():
                hit = next((p for p in pts if p["fd"] <= a.metrics["fd"]), None)
                k = f"ttq.{name}.{tag}"
                self.num.put(f"{k}.reached", hit is not None)
                if hit is None:
                    continue
                self.num.put(f"{k}.epoch", hit["epoch"])
                self.num.put(f"{k}.wall_min", hit["wall_min"], _f(hit["wall_min"], 1))
                self.num.put(f"{k}.cpu_min", hit["cpu_min"], _f(hit["cpu_min"], 1))
                aw = self.anchor_wall_s(a.epoch)
                speed = _div(_div(aw, 60), hit["wall_min"]) if aw else None
                self.num.put(f"{k}.wall_speedup", speed, _f(speed, 1))
                rows.append(
                    [
                        run.display,
                        KNOWN_ANCHORS.get(tag, (tag,))[0],
                        _f(a.metrics["fd"], 1),
                        str(hit["epoch"]),
                        _f(hit["fd"], 1),
                        _f(hit["wall_min"], 1),
                        _f(hit["cpu_min"], 1),
                        _f(_div(aw, 60), 0),
                    ]
                )
        self.tables["ttq"] = {
            "header": [
                "model", "target", "target FD", "first epoch below", "FD there",
                "train wall min", "train CPU min", "starter wall min",
            ],
            "rows": rows,
        }  # fmt: skip

    def cold_analysis(self) -> None:
        """Each cold run's recorded analyses (``experiments/analyze_cold.py``).

        Numbers ``an.<run>.<start sampler>.*`` and table ``start_<run>`` from
        ``analysis/start_states.json``; ``an.<run>.rest.t<t>.*`` and table
        ``restoration_<run>`` from ``analysis/restoration.json``; their figures are copied.
        """
        for name, run in self.study.runs.items():
            if run.kind != "cold":
                continue
            d = run.path / "analysis"
            if not (d / "start_states.json").exists():
                self.notes.append(f"run {name}: no {d}/start_states.json (analyze_cold.py).")
                continue
            data = _read_json(d / "start_states.json", self.notes) or {}
            rows = []
            for variant, r in data.get("rows", {}).items():
                k = f"an.{name}.{_key(variant)}"
                pw = r.get("pairwise", {})
                hist = r.get("class_hist") or []
                low = float(min(hist)) if hist else None
                self.num.put(f"{k}.fd", r.get("fd"), _f(r.get("fd"), 1))
                self.num.put(f"{k}.fd_ci", r.get("fd_ci"), _ci(r, "fd", 1))
                self.num.put(f"{k}.recall", r.get("recall"), _f(r.get("recall"), 3))
                self.num.put(f"{k}.min_class", low, _f(_pct(low), 1))
                self.num.put(f"{k}.pair_mean", pw.get("mean"), _f(pw.get("mean"), 2))
                ratio = r.get("nn_dist_ratio")
                self.num.put(f"{k}.nn_ratio", ratio, _f(ratio, 2))
                rows.append(
                    [
                        variant,
                        str(data.get("n", "–")),
                        _ci(r, "fd", 1),
                        _f(r.get("precision"), 3),
                        _f(r.get("recall"), 3),
                        _f(_pct(low), 1),
                        _f(r.get("nn_dist_ratio"), 2),
                        _f(pw.get("mean"), 2),
                        f"{_f(pw.get('p05'), 2)}–{_f(pw.get('p95'), 2)}",
                    ]
                )
            self.tables[f"start_{name}"] = {
                "header": [
                    "start states", "N", "FD [95% CI]", "precision", "recall",
                    "rarest class %", "NN ratio", "pair distance", "5–95%",
                ],
                "rows": rows,
            }  # fmt: skip
            rest = _read_json(d / "restoration.json", self.notes) or {}
            rrows = []
            for r in rest.get("times", []):
                k = f"an.{name}.rest.t{r['t']}"
                for key in ("mse_input", "mse_one_shot", "mse_restored"):
                    self.num.put(f"{k}.{key}", r.get(key), _f(r.get(key), 4))
                rrows.append(
                    [str(r["t"])]
                    + [_f(r.get(x), 4) for x in ("mse_input", "mse_one_shot", "mse_restored")]
                )
            self.num.put(f"an.{name}.rest.n", rest.get("n"))
            self.tables[f"restoration_{name}"] = {
                "header": ["t", "degraded input", "one-shot R(x_t, t)", "reverse process"],
                "rows": rrows,
            }
            for f in ("restoration_error", "start_fitted", "start_oracle", "start_single"):
                _copy(d / f"{f}.png", self.fig_dir / f"an_{name}_{f}.png", self.figs)

    # -- figures -------------------------------------------------------------------------

    def figures(self) -> None:
        """Draw every figure (each skipped with a note when its inputs are missing)."""
        from jaxdiff.app import plotting

        runs = self.study.runs
        paths: dict[Path, str] = {}  # one loss curve per run folder, under its first role
        for n, r in runs.items():
            paths.setdefault(r.path, n)
        with_records = {n: r for n, r in runs.items() if r.records and paths[r.path] == n}
        if with_records:
            series = {
                f"{r.display} ({'L1/L2' if r.kind == 'cold' else 'ε-MSE'})": (
                    [x["epoch"] for x in r.records],
                    [x["loss"] for x in r.records],
                )
                for r in with_records.values()
            }
            self._fig(
                "loss_all.png",
                plotting.plot_curves,
                series,
                xlabel="epoch",
                ylabel="epoch-mean training loss",
                title="training loss, all runs",
                logy=True,
            )
        for name, run in with_records.items():
            self._fig(f"loss_{name}.png", plotting.plot_loss_curve, run.records, title=run.display)
        for name, run in runs.items():
            eps = select_epochs(run.sample_epochs, 6)
            if not eps:  # e.g. trained with --grid-n 0; no figure, nothing missing
                continue
            grids = [np.load(run.path / "samples" / f"epoch_{e:03d}.npy") for e in eps]
            self._fig(
                f"samples_{name}.png",
                plotting.save_panels,
                grids,
                [f"epoch {e}" for e in eps],
                ncol=min(6, len(eps)),
                title=f"{run.display}: fixed-key samples through training",
            )
        self._anchor_grid_figure(plotting)
        self._fidelity_figure(plotting)
        self._steps_figure(plotting)
        self._ttq_figure(plotting)
        self._class_figure(plotting)
        for name, run in runs.items():
            head = headline_eval(run)
            if head is not None:
                for g in GALLERIES:
                    _copy(
                        head.path / f"{g}.png", self.fig_dir / f"gallery_{name}_{g}.png", self.figs
                    )
            if run.kind == "cold":
                for f in COLD_FIGURES:
                    src = run.path / f"{f}.png"
                    if not src.exists():
                        self.notes.append(f"run {name}: {src.name} missing (cold.py draws it).")
                    _copy(src, self.fig_dir / f"cold_{name}_{f}.png", self.figs)

    def _anchor_grid_figure(self, plotting) -> None:
        run = self.study.runs.get("q1_default")
        src = self.study.results_dir / "anchors" / "samples"
        panels, labels = [], []
        for e in ANCHOR_EPOCHS:
            ours = run.path / "samples" / f"epoch_{e:03d}.npy" if run else None
            theirs = src / f"starter_ep{e}_first16.npy"
            if ours is None or not ours.exists() or not theirs.exists():
                self.notes.append(f"no grids of both starters at epoch {e}: {ours}, {theirs}.")
                continue
            panels += [np.load(ours)[:16], np.load(theirs)[:16]]
            labels += [f"jaxdiff, epoch {e}", f"PyTorch, epoch {e}"]
        if panels:
            self._fig(
                "q1_matched.png",
                plotting.save_panels,
                panels,
                labels,
                ncol=4,
                title="the starter recipe at matched epochs: jaxdiff and PyTorch (16 samples each)",
            )

    def _distinct_runs(self) -> list[tuple[str, RunRecord]]:
        """The study's (role, run) pairs, each run folder once (best may be q2_custom's run)."""
        seen: set[Path] = set()
        out = []
        for name, run in self.study.runs.items():
            if run.path not in seen:
                seen.add(run.path)
                out.append((name, run))
        return out

    def _fig(self, fname: str, fn, *args, **kwargs) -> None:
        fn(*args, path=self.fig_dir / fname, **kwargs)
        self.figs.append(fname)

    def _fidelity_figure(self, plotting) -> None:
        keys = ("fd", "kid", "precision", "recall", "class_tv", "nn_dist_ratio")
        series: dict[str, dict] = {k: {} for k in keys}
        for name, run in self._distinct_runs():
            evs = epoch_series(run)
            if not evs:
                continue
            ep = [e.epoch for e in evs]
            ns = sorted({e.metrics.get("n") or 0 for e in evs})
            n_text = f"N={ns[0]}" if len(ns) == 1 else f"N={ns[0]}-{ns[-1]}"
            lab = f"{run.display} ({_sampler_text(evs[0])}, {n_text})"
            for k in keys:
                if all(isinstance(e.metrics.get(k), int | float) for e in evs):
                    series[k][lab] = _with_ci(ep, evs, k)
            self.series.setdefault("epochs", {})[name] = [_eval_summary(e) for e in evs]
        if not series["fd"]:
            self.notes.append("no evaluations over epochs: fidelity_epochs.png not drawn.")
            return

        def anchor_points(k: str) -> dict:
            pts = sorted(
                (a.epoch, a.metrics[k])
                for a in self.study.anchors.values()
                if a.epoch is not None and isinstance(a.metrics.get(k), int | float)
            )
            label = "PyTorch starter's own samples (1000-step ancestral, N=1000)"
            return {label: ([p[0] for p in pts], [p[1] for p in pts])} if pts else {}

        labels = {
            "fd": "FD (95% CI)",
            "kid": "KID (95% CI)",
            "precision": "precision",
            "recall": "recall",
            "class_tv": "class TV from uniform",
            "nn_dist_ratio": "NN distance ratio",
        }
        panels = [
            {
                "series": series[k],
                "points": anchor_points(k),
                "xlabel": "epoch",
                "ylabel": labels[k],
                "logy": k == "fd",
                "legend": k == "fd",
            }
            for k in keys
        ]
        self._fig("fidelity_epochs.png", plotting.plot_ci_panels, panels, ncol=3, legend_below=True)

    def _steps_figure(self, plotting) -> None:
        fd, cost = {}, {}
        for key, s in self.series.get("steps", {}).items():
            if len(s["steps"]) < 2:
                continue
            name, sampler = key.split("/", 1)
            lab = f"{self.study.runs[name].display}: {sampler} (epoch {s['epoch']})"
            lo = [c[0] if c else None for c in s["fd_ci"]]
            hi = [c[1] if c else None for c in s["fd_ci"]]
            fd[lab] = (
                (s["steps"], s["fd"], lo, hi) if None not in lo + hi else (s["steps"], s["fd"])
            )
            if None not in s["sec_per_1k"]:
                cost[lab] = (s["steps"], s["sec_per_1k"])
        if not fd:
            self.notes.append(
                "no run evaluated at two or more step counts: quality_steps.png not drawn."
            )
            return
        hl = {KNOWN_ANCHORS.get(t, (t,))[0]: a.metrics["fd"] for t, a in self.study.anchors.items()}
        panels = [
            {"series": fd, "hlines": hl, "xlabel": "sampling steps", "ylabel": "FD (95% CI)",
             "logx": True, "logy": True},
            {"series": cost, "xlabel": "sampling steps", "ylabel": "seconds per 1000 samples",
             "logx": True, "logy": True},
        ]  # fmt: skip
        self._fig("quality_steps.png", plotting.plot_ci_panels, panels)

    def _ttq_figure(self, plotting) -> None:
        cpu, wall = {}, {}
        distinct = dict(self._distinct_runs())
        for name, pts in self.series.get("ttq", {}).items():
            if not pts or name not in distinct:
                continue
            disp = self.study.runs[name].display
            lo = [p["fd_ci"][0] if p["fd_ci"] else None for p in pts]
            hi = [p["fd_ci"][1] if p["fd_ci"] else None for p in pts]
            fds = [p["fd"] for p in pts]
            ci = (lo, hi) if None not in lo + hi else ()
            if None not in [p["cpu_min"] for p in pts]:
                cpu[disp] = ([p["cpu_min"] for p in pts], fds, *ci)
            if None not in [p["wall_min"] for p in pts]:
                wall[disp] = ([p["wall_min"] for p in pts], fds, *ci)
        if not wall:
            self.notes.append("no evaluated run with timed epochs: time_to_quality.png not drawn.")
            return
        hl = {  # the course's milestones: symbols (24) and digits (50)
            f"{KNOWN_ANCHORS[t][0]} (FD)": a.metrics["fd"]
            for t, a in sorted(self.study.anchors.items())
            if t in KNOWN_ANCHORS and a.epoch in (24, 50)
        }
        timed = sorted(
            (w / 60, a.metrics["fd"], a.epoch)
            for a in self.study.anchors.values()
            if (w := self.anchor_wall_s(a.epoch)) is not None
        )
        pts = {}
        if timed:
            eps = ", ".join(str(e) for _, _, e in timed)
            pts[f"PyTorch starter at its training time (epochs {eps})"] = (
                [t[0] for t in timed],
                [t[1] for t in timed],
            )
        panels = [
            {"series": cpu, "hlines": hl, "xlabel": "training CPU minutes (process time)",
             "ylabel": "FD (95% CI)", "logy": True, "logx": True},
            {"series": wall, "hlines": hl, "points": pts, "xlabel": "training wall minutes",
             "ylabel": "FD (95% CI)", "logy": True, "logx": True},
        ]  # fmt: skip
        self._fig("time_to_quality.png", plotting.plot_ci_panels, panels, legend_below=True)

    def _class_figure(self, plotting) -> None:
        groups = {}
        for run in self.study.runs.values():
            e = headline_eval(run)
            if e is not None and isinstance(e.metrics.get("class_hist"), list):
                groups[run.display] = e.metrics["class_hist"]
        for t, a in sorted(self.study.anchors.items()):
            if isinstance(a.metrics.get("class_hist"), list):
                groups[KNOWN_ANCHORS.get(t, (t,))[0]] = a.metrics["class_hist"]
        if not groups:
            return
        self._fig(
            "class_hist.png",
            plotting.plot_grouped_bars,
            groups,
            [str(i) for i in range(10)],
            ylabel="share of samples",
            title="predicted class of generated digits (dashed: uniform)",
            hline=0.1,
        )

    # -- output --------------------------------------------------------------------------

    def _write(self, name: str, obj: Any) -> None:
        (self.data_dir / name).write_text(json.dumps(obj, indent=1, default=_json_default) + "\n")

    def build(self) -> dict:
        """Compute everything and write ``data/*.json`` and ``figures/*.png``.

        Returns:
            Summary dict: ``figures`` (names), ``tables`` (names), ``numbers`` (count),
            ``notes``.
        """
        self.run_numbers()
        self.eval_numbers()
        self.q2_table()
        self.cold_analysis()
        self.steps_table()
        self.ablation_table()
        self.short_runs_numbers()
        self.ttq_numbers()
        self.bench_numbers()
        self.figures()
        self.num.put("study.n_runs", len(self.study.runs))
        self._write("numbers.json", self.num.d)
        self._write("tables.json", self.tables)
        self._write("series.json", self.series)
        self._write("figures.json", sorted(set(self.figs)))
        self._write("notes.json", self.notes)
        return {
            "figures": sorted(set(self.figs)),
            "tables": sorted(self.tables),
            "numbers": len(self.num.d),
            "notes": self.notes,
        }


def saturated_share(x: Any) -> float:
    """Share of samples that are saturated: over half their pixels beyond +-1.

    The data lie in [-0.5, 0.5]; a sampling chain that has drifted ends in black or white
    squares far outside it (the starter recipe's early failure).

    Args:
        x: Samples ``(N, 28, 28[, 1])`` in the model scale.

    Returns:
        The share in [0, 1].
    """
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    return float(np.mean(np.mean(np.abs(x) > 1.0, axis=1) > 0.5))


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _div(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return None
    return a / b


def _with_ci(x: list, evs: list[EvalRecord], key: str) -> tuple:
    y = [e.metrics.get(key) for e in evs]
    cis = [e.metrics.get(f"{key}_ci") for e in evs]
    if all(isinstance(c, list | tuple) and len(c) == 2 for c in cis):
        return x, y, [c[0] for c in cis], [c[1] for c in cis]
    return x, y


def _net_evals(run: RunRecord, e: EvalRecord) -> int | None:
    if e.steps:
        return e.steps
    return run.config.get("process", {}).get("T")


def _fid_row(display: str, e: EvalRecord) -> list[str]:
    m = e.metrics
    return [
        display,
        "–" if e.epoch is None else str(e.epoch),
        "–" if e.tag == "floor" else _sampler_text(e),
        str(m.get("n", "–")),
        _ci(m, "fd", 1),
        _ci(m, "kid", 2),
        _f(m.get("precision"), 3),
        _f(m.get("recall"), 3),
        _f(m.get("class_tv"), 3),
        _f(m.get("confidence"), 3),
        _f(m.get("nn_dist_ratio"), 2),
        _f(_pct(m.get("frac_out_of_range")), 1),
    ]


def _eval_summary(e: EvalRecord) -> dict:
    keep = (
        "n", "fd", "fd_ci", "kid", "kid_ci", "precision", "recall", "class_hist", "class_kl",
        "class_tv", "confidence", "nn_dist", "nn_dist_ratio", "frac_out_of_range",
        "sample_seconds", "eta", "seed", "checkpoint",
    )  # fmt: skip
    out = {k: e.metrics[k] for k in keep if k in e.metrics}
    out.update(tag=e.tag, epoch=e.epoch, sampler=e.sampler, steps=e.steps, path=str(e.path))
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def build_report_data(results_dir: str | Path, report_dir: str | Path) -> dict:
    """Regenerate every figure and data file of the report from a results tree.

    Args:
        results_dir: The recorded runs (e.g. ``results/``).
        report_dir: The report folder (e.g. ``report/``); ``figures/`` and ``data/`` inside
            are rewritten.

    Returns:
        Summary dict (see :meth:`ReportBuilder.build`).
    """
    return ReportBuilder(load_study(results_dir), report_dir).build()


# ----------------------------------------------------------------------------- Typst


class _Scanner:
    """A small Typst reader that keeps only the prose (markup and content blocks)."""

    def __init__(self, src: str) -> None:
        self.s = src
        self.out: list[str] = []

    def emit(self, text: str, count: bool) -> None:
        if count:
            self.out.append(text)

    def skip_until(self, i: int, end: str) -> int:
        j = self.s.find(end, i)
        return len(self.s) if j < 0 else j + len(end)

    def markup(self, i: int, count: bool, closing: bool) -> int:
        """Read markup from ``i`` until an unbalanced ``]`` (if ``closing``) or the end."""
        s, depth = self.s, 0
        while i < len(s):
            c = s[i]
            if s.startswith("//", i) and (i == 0 or s[i - 1] != ":"):
                i = self.skip_until(i, "\n") - 1
                continue
            elif s.startswith("/*", i):
                i = self.skip_until(i + 2, "*/")
                continue
            elif s.startswith("```", i):
                i = self.skip_until(i + 3, "```")
                self.emit(" ", count)
                continue
            elif c == "`":
                i = self.skip_until(i + 1, "`")
                self.emit(" ", count)
                continue
            elif c == "$":
                j = i + 1
                while j < len(s) and s[j] != "$":
                    j += 2 if s[j] == "\\" else 1
                i = j + 1
                self.emit(" ", count)
                continue
            elif c == "\\" and i + 1 < len(s):
                self.emit(" " if s[i + 1] in " \n" else s[i + 1], count)
                i += 2
                continue
            elif c == "#":
                i = self.code_expr(i + 1, count)
                continue
            elif c == "<" and (m := re.match(r"<[\w\-.:]+>", s[i:])):
                i += m.end()
                continue
            elif c == "@" and (m := re.match(r"@[\w\-.:]*\w", s[i:])):
                self.emit(" ref ", count)  # a trailing '.' or ':' is punctuation, not label
                i += m.end()
                continue
            elif c == "[":
                depth += 1
            elif c == "]":
                if depth == 0 and closing:
                    return i + 1
                depth = max(0, depth - 1)
            self.emit(c, count)
            i += 1
        return i

    def code_until(self, i: int, closer: str, count: bool) -> int:
        """Read code from ``i`` to the matching ``closer``; content blocks are markup."""
        s = self.s
        while i < len(s):
            c = s[i]
            if c == closer:
                return i + 1
            if c == '"':
                i += 1
                while i < len(s) and s[i] != '"':
                    i += 2 if s[i] == "\\" else 1
                i += 1
            elif s.startswith("//", i):
                i = self.skip_until(i, "\n")
            elif s.startswith("/*", i):
                i = self.skip_until(i + 2, "*/")
            elif c == "[":
                self.emit(" ", count)
                i = self.markup(i + 1, count, True)
                self.emit(" ", count)
            elif c == "(":
                i = self.code_until(i + 1, ")", count)
            elif c == "{":
                i = self.code_until(i + 1, "}", count)
            else:
                i += 1
        return i

    def code_expr(self, i: int, count: bool) -> int:
        """Read one embedded code expression after ``#``."""
        s = self.s
        m = re.match(r"(let|set|show|import|include)\b", s[i:])
        if m:  # definitions and rules: not prose, to the end of the line (brackets balanced)
            j = i + m.end()
            while j < len(s) and s[j] != "\n":
                if s[j] == "[":
                    j = self.markup(j + 1, False, True)
                elif s[j] in "({":
                    j = self.code_until(j + 1, ")" if s[j] == "(" else "}", False)
                elif s[j] == '"':
                    j = self._string_end(j)
                else:
                    j += 1
            return j
        m = re.match(r"(if|for|while)\b", s[i:])
        if m:
            j = i + m.end()
            while j < len(s):
                while j < len(s) and s[j] not in "[{\n":
                    j = (
                        self._string_end(j)
                        if s[j] == '"'
                        else (self.code_until(j + 1, ")", False) if s[j] == "(" else j + 1)
                    )
                if j >= len(s) or s[j] == "\n":
                    return j
                j = self._block(j, count)
                rest = re.match(r"\s*else\s*", s[j:])
                if not rest:
                    return j
                j += rest.end()
                if s.startswith("if", j):
                    j += 2
                    continue
                if j < len(s) and s[j] in "[{":
                    return self._block(j, count)
                return j
            return j
        if i < len(s) and s[i] in "([{":
            return self._block(i, count) if s[i] != "(" else self.code_until(i + 1, ")", count)
        m = re.match(r"[A-Za-z_][\w\-]*", s[i:])
        if not m:
            return i
        j = i + m.end()
        while j < len(s):
            if s[j] == "(":
                j = self.code_until(j + 1, ")", count)
            elif s[j] == "[":
                j = self._block(j, count)
            elif s[j] == "." and (m := re.match(r"\.[A-Za-z_][\w\-]*", s[j:])):
                j += m.end()
            else:
                break
        return j

    def _string_end(self, j: int) -> int:
        j += 1
        while j < len(self.s) and self.s[j] != '"':
            j += 2 if self.s[j] == "\\" else 1
        return j + 1

    def _block(self, j: int, count: bool) -> int:
        if self.s[j] == "[":
            self.emit(" ", count)
            j = self.markup(j + 1, count, True)
            self.emit(" ", count)
            return j
        return self.code_until(j + 1, "}", count)


def prose_text(src: str) -> str:
    """The prose of a Typst source: markup and content blocks, without code, math or raw.

    Comments, ``#let``/``#set``/``#show``/``#import`` lines, math (``$...$``), raw text
    (backticks), labels and function arguments other than content blocks are dropped;
    a ``@reference`` counts as one word; both branches of an ``#if`` are kept (an upper
    bound). Values inserted from data (``#num("...")``) are not words.

    Args:
        src: Typst source.

    Returns:
        The prose as plain text.
    """
    sc = _Scanner(src)
    sc.markup(0, True, False)
    return "".join(sc.out)


def count_words(src: str) -> int:
    """Count the prose words of a Typst source (see :func:`prose_text`).

    A word is a whitespace-separated token holding at least one letter or digit, so list
    markers, heading ``=`` and lone punctuation do not count.

    Args:
        src: Typst source.

    Returns:
        The word count.
    """
    return sum(1 for tok in prose_text(src).split() if re.search(r"[^\W_]", tok))


def compile_pdf(report_dir: str | Path, source: str = "report.typ") -> Path:
    """Compile the Typst source to ``report.pdf`` with the ``typst`` Python package.

    Args:
        report_dir: The report folder (Typst's root: data and figures are read from it).
        source: The source file inside ``report_dir``.

    Returns:
        The PDF path.

    Raises:
        ValueError: If the ``typst`` package is missing (install the ``report`` extra), or
            the source does not compile (the message is typst's).
    """
    try:
        import typst
    except ImportError:
        raise ValueError(
            "building the PDF needs the typst package: pip install -e '.[report]' "
            "(or pip install 'typst>=0.11')."
        ) from None
    report_dir = Path(report_dir)
    pdf = report_dir / (Path(source).stem + ".pdf")
    try:
        typst.compile(str(report_dir / source), output=str(pdf), root=str(report_dir))
    except Exception as err:  # typst.TypstError: the source does not compile
        raise ValueError(f"{report_dir / source} does not compile: {err}") from None
    return pdf
