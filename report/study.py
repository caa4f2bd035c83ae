"""Reading the study: the results tree's runs and evaluations, and which of them count.

Inputs (a *results tree*, by default ``results/``):

- ``study.json``: the study's roles (SPEC section 7); each role names its run folder and
  the ``experiments/sample.py`` flags of its headline evaluation.
- each role's run folder: a training workdir written by :func:`jaxdiff.app.runner.fit`
  (``config.json``, ``metrics.jsonl``, ``samples/epoch_NNN.npy``, ``final/``, cold runs'
  figures), with its evaluations ``<run>/eval/<tag>/metrics.json`` (+ galleries) written by
  ``experiments/evaluate.py``. Tags read ``ep010_ancestral1000``, ``ep010_ddim100``,
  ``ep005_cold2``; the epoch, sampler and steps are taken from ``metrics.json`` and, where it
  lacks them, from the tag.
- ``anchors/eval/<tag>/metrics.json``: evaluations of the PyTorch starter's samples
  (``starter_ep5`` ... ``starter_ep50``) and of the starter's weights sampled by jaxdiff,
  optionally ``anchors/starter_train_log.jsonl`` (the starter's per-epoch wall seconds) for
  its training time.
- ``bench/bench.json``: the speed benchmark (``benchmarks/bench.py --json``), read defensively.

Missing or unreadable inputs become notes, never an error. The selection functions below
(:func:`headline_eval`, :func:`matched_pair`, :func:`epoch_series`, :func:`steps_series`)
decide which evaluation each table row, number and curve uses.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any


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

#: ``study.json`` entries that group runs rather than name a role.
STUDY_EXTRAS = ("ablation", "short", "q2_evidence")

_TAG = re.compile(r"ep(?P<epoch>\d+)(?:_(?P<sampler>[a-z]+?)(?P<steps>\d+)?)?$")


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
        invocations: The command lines that started, resumed or warm-started the run
            (``config.json["invocations"]``, oldest first; ``[]`` for runs that predate it).
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
    invocations: list = dataclasses.field(default_factory=list)

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


# ----------------------------------------------------------------------------- files


def read_json(path: Path, notes: list[str]) -> Any:
    """Parse a JSON file; an unreadable one becomes a note.

    Args:
        path: The file.
        notes: Notes list to append problems to.

    Returns:
        The parsed value, or ``None`` if the file cannot be read or parsed.
    """
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


# ----------------------------------------------------------------------------- evaluations


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
    m = read_json(path, notes)
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


def load_evals(folder: Path, notes: list[str]) -> dict[str, EvalRecord]:
    """Load every evaluation below ``folder`` (one sub-folder each), in name order.

    Args:
        folder: An ``eval/`` folder (missing: no evaluations).
        notes: Notes list.

    Returns:
        Tag -> :class:`EvalRecord` of the readable ones.
    """
    evals = {}
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            rec = load_eval(sub, notes)
            if rec is not None:
                evals[rec.tag] = rec
    return evals


# ----------------------------------------------------------------------------- runs


def sample_epochs(path: Path) -> list[int]:
    """Epochs with a saved grid ``samples/epoch_NNN.npy``, sorted.

    Args:
        path: A run folder.

    Returns:
        The epochs (empty if none).
    """
    return sorted(
        int(p.stem.split("_")[1])
        for p in (path / "samples").glob("epoch_*.npy")
        if p.stem.split("_")[1].isdigit()
    )


def read_run_record(path: Path, spec: KnownRun | None, notes: list[str]) -> RunRecord:
    """Load one run workdir (missing pieces become notes and empty fields).

    Args:
        path: The workdir.
        spec: Its :class:`KnownRun` entry, or ``None`` for a run found by globbing.
        notes: Notes list.

    Returns:
        The :class:`RunRecord`.
    """
    cfg_file = read_json(path / "config.json", notes) if (path / "config.json").exists() else None
    if cfg_file is None:
        notes.append(f"{path}: no readable config.json.")
    cfg_file = cfg_file if isinstance(cfg_file, dict) else {}
    config = cfg_file.get("config", {})
    records = read_jsonl(path / "metrics.jsonl", notes)
    records = sorted(
        (r for r in records if isinstance(r.get("epoch"), int)), key=lambda r: r["epoch"]
    )
    if not records:
        notes.append(f"{path}: no metrics.jsonl records.")
    evals = load_evals(path / "eval", notes)
    name = spec.name if spec is not None else path.name
    if spec is None:
        kind = config.get("process", {}).get("kind", "ddpm")
        spec = KnownRun(name, name, "other", "ancestral" if kind == "ddpm" else "cold2")
    if not evals:
        notes.append(f"run {name} ({spec.display}): no evaluations in {path / 'eval'}.")
    final = path / "final" if (path / "final" / "params.msgpack").exists() else None
    if final is None and records:
        notes.append(f"run {name}: no final/params.msgpack (exported at the end of training).")
    invocations = cfg_file.get("invocations", [])
    return RunRecord(
        name=name,
        display=spec.display,
        role=spec.role,
        sampler=spec.sampler,
        path=path,
        config=config,
        devices=list(cfg_file.get("devices", [])),
        machine=cfg_file.get("machine"),
        records=records,
        evals=evals,
        sample_epochs=sample_epochs(path),
        final=final,
        invocations=invocations if isinstance(invocations, list) else [],
    )


# ----------------------------------------------------------------------------- the manifest


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
    data = read_json(path, notes)
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


def study_entry(study: Study, name: str, notes: list[str]) -> dict | None:
    """``study.json``'s entry ``name`` (one of :data:`STUDY_EXTRAS`), if it is a mapping.

    Args:
        study: The study.
        name: The entry, e.g. ``"ablation"``.
        notes: Notes list (an unreadable manifest becomes a note).

    Returns:
        The entry, or ``None``.
    """
    entry = (read_json(study.results_dir / "study.json", notes) or {}).get(name)
    return entry if isinstance(entry, dict) else None


def _load_runs(results_dir: Path, notes: list[str]) -> dict[str, RunRecord]:
    """The study's roles in :data:`KNOWN_RUNS` order, each read from its manifest folder."""
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
    return runs


def _load_anchors(
    results_dir: Path, notes: list[str]
) -> tuple[dict[str, EvalRecord], dict[str, EvalRecord]]:
    """The starter's own evaluations (:data:`KNOWN_ANCHORS`) and the other anchor ones."""
    anchors = load_evals(results_dir / "anchors" / "eval", notes)
    extra = {t: anchors.pop(t) for t in list(anchors) if t not in KNOWN_ANCHORS}
    for tag, (disp, _) in KNOWN_ANCHORS.items():
        if tag not in anchors:
            notes.append(f"anchor {tag} ({disp}) not evaluated: {results_dir}/anchors/eval/{tag}.")
    for tag, rec in anchors.items():
        if rec.epoch is None and tag in KNOWN_ANCHORS:
            rec.epoch = KNOWN_ANCHORS[tag][1]
    return anchors, extra


def _load_bench(results_dir: Path, notes: list[str]) -> dict | None:
    """The benchmark's JSON, if recorded and a mapping."""
    bench_path = results_dir / "bench" / "bench.json"
    if not bench_path.exists():
        notes.append(f"speed benchmark not recorded: {bench_path} missing.")
        return None
    bench = read_json(bench_path, notes)
    return bench if isinstance(bench, dict) else None


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
    runs = _load_runs(results_dir, notes)
    anchors, extra = _load_anchors(results_dir, notes)
    anchor_log = read_jsonl(results_dir / "anchors" / "starter_train_log.jsonl", notes)
    bench = _load_bench(results_dir, notes)
    return Study(results_dir, runs, anchors, anchor_log, bench, notes, extra)


# ----------------------------------------------------------------------------- selection


def anchor_display(tag: str) -> str:
    """The display name of an anchor evaluation (its tag where it is not a known one)."""
    return KNOWN_ANCHORS.get(tag, (tag,))[0]


def anchor_wall_s(study: Study, epoch: int | None) -> float | None:
    """Wall seconds the starter took to train ``epoch`` epochs (from its log), if known.

    Args:
        study: The study.
        epoch: The starter's epoch.

    Returns:
        The seconds, or ``None`` where the log does not say.
    """
    for r in study.anchor_log:
        if r.get("epoch") == epoch and isinstance(r.get("wall_s"), int | float):
            return float(r["wall_s"])
    return None


def distinct_runs(study: Study) -> list[tuple[str, RunRecord]]:
    """The study's (role, run) pairs, each run folder once, under its first role.

    Args:
        study: The study (``best`` may be ``q2_custom``'s run).

    Returns:
        The pairs in role order.
    """
    seen: set[Path] = set()
    out = []
    for name, run in study.runs.items():
        if run.path not in seen:
            seen.add(run.path)
            out.append((name, run))
    return out


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


def sampling_setting(e: EvalRecord) -> tuple:
    """What an evaluation's samples depend on besides the weights' epoch and ``N``.

    Args:
        e: The evaluation.

    Returns:
        ``(sampler, steps, sample noise, eta, weights, start states)``; evaluations with
        equal settings may share a curve.
    """
    m = e.metrics
    noise = m.get("noise") or 0.0
    start = m.get("start") or "fitted"  # an oracle start is its own setting, never a headline
    return (e.sampler, e.steps, noise, m.get("eta"), m.get("weights") or "ema", start)


def _at_n(run: RunRecord, e: EvalRecord, n: int) -> EvalRecord:
    """``run``'s evaluation of ``e``'s epoch and sampling setting at ``N = n`` (else ``e``)."""
    same = [
        o
        for o in run.evals.values()
        if o.epoch == e.epoch
        and sampling_setting(o) == sampling_setting(e)
        and o.metrics.get("n") == n
    ]
    return max(same, key=lambda o: o.tag) if same else e


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
    return (_at_n(a, ea, nb), eb) if na > nb else (ea, _at_n(b, eb, na))


def _n_rank(e: EvalRecord) -> tuple:
    """Rank of an evaluation's ``N`` for a curve: nearest 1000 first, then the larger."""
    n = e.metrics.get("n") or 0
    return (-abs(n - 1000), n)


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
    for e in run.evals.values():
        if e.epoch is None:
            continue
        g = groups.setdefault(sampling_setting(e), {})
        if e.epoch not in g or _n_rank(e) > _n_rank(g[e.epoch]):
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
