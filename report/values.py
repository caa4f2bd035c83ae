"""The values the Typst source reads: number formatting, and the numbers, tables and series.

``report.typ`` reads ``data/numbers.json`` (flat key -> ``{"v": value, "s": text}``; ``#num``
prints the text), ``data/tables.json`` (name -> ``{"header", "rows"}`` of strings) and
``data/series.json`` (the values behind the figures). :class:`Values` collects them while the
sections are computed; the functions here turn numbers and intervals into their text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from study import KNOWN_ANCHORS, EvalRecord, sample_epochs

from jaxdiff.fidelity.metrics import saturated_share

#: A nearest-training-image distance ratio below this flags samples closer to the training set
#: than real test digits are (possible memorisation); see docs/evaluation.md.
NN_CLOSE = 0.9

# ----------------------------------------------------------------------------- formatting


def fmt(x: Any, d: int = 1) -> str:
    """A number with ``d`` decimals; ``"–"`` for ``None`` or a non-finite float.

    Args:
        x: The number (or ``None``).
        d: Decimals.

    Returns:
        The text.
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{d}f}"


def ci_text(m: dict, key: str, d: int) -> str:
    """A metric with its 95% interval, ``"12.3 [11.0, 13.9]"`` (the value alone without one).

    Args:
        m: A metrics dict holding ``key`` and optionally ``<key>_ci``.
        key: The metric, e.g. ``"fd"``.
        d: Decimals.

    Returns:
        The text (``"–"`` if the metric is missing).
    """
    ci = m.get(f"{key}_ci")
    if m.get(key) is None:
        return "–"
    if isinstance(ci, list | tuple) and len(ci) == 2:
        return f"{fmt(m[key], d)} [{fmt(ci[0], d)}, {fmt(ci[1], d)}]"
    return fmt(m[key], d)


def pct(x: Any) -> float | None:
    """A share in [0, 1] as a percentage (``None`` stays ``None``)."""
    return None if x is None else 100.0 * x


def div(a: Any, b: Any) -> float | None:
    """``a / b`` where both are numbers and ``b`` is not zero, else ``None``."""
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return None
    return a / b


def slug(text: str) -> str:
    """A key part from free text: runs of other characters become one ``_``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def sampler_text(e: EvalRecord) -> str:
    """How an evaluation's samples were drawn, for tables: ``"DDIM (x0 clipped) 100"``.

    Args:
        e: The evaluation.

    Returns:
        The text.
    """
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


def sec_per_1k(e: EvalRecord) -> float | None:
    """Sampling seconds per 1000 samples of an evaluation, if it recorded its time."""
    s, n = e.metrics.get("sample_seconds"), e.metrics.get("n")
    if isinstance(s, int | float) and isinstance(n, int) and n > 0:
        return 1000.0 * s / n
    return None


# ----------------------------------------------------------------------------- evaluations


def intervals_overlap(a: Any, b: Any) -> bool:
    """Whether two closed intervals ``(lo, hi)`` share a point.

    Args:
        a: The first interval.
        b: The second interval.

    Returns:
        ``True`` unless one interval ends before the other begins.
    """
    return bool(a[0] <= b[1] and b[0] <= a[1])


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
    separated = bool(ca and cb) and not intervals_overlap(ca, cb)
    better = "tie" if va == vb else ("a" if va < vb else "b")
    return {
        "better": better,
        "separated": separated,
        "same_n": a.metrics.get("n") == b.metrics.get("n"),
        "ratio": va / vb if vb else None,
    }


def quality_cells(e: EvalRecord) -> list[str]:
    """Table cells of an evaluation's N, FD and KID with intervals, precision and recall.

    Args:
        e: The evaluation.

    Returns:
        The five cells.
    """
    m = e.metrics
    return [
        str(m.get("n", "–")),
        ci_text(m, "fd", 1),
        ci_text(m, "kid", 2),
        fmt(m.get("precision"), 3),
        fmt(m.get("recall"), 3),
    ]


def fidelity_row(display: str, e: EvalRecord) -> list[str]:
    """One row of the fidelity table (:data:`sections.FIDELITY_HEADER`).

    Args:
        display: The row's name.
        e: The evaluation.

    Returns:
        The cells.
    """
    m = e.metrics
    epoch = "–" if e.epoch is None else str(e.epoch)
    sampler = "–" if e.tag == "floor" else sampler_text(e)
    return [display, epoch, sampler, *quality_cells(e)] + [
        fmt(m.get("class_tv"), 3),
        fmt(m.get("confidence"), 3),
        fmt(m.get("nn_dist_ratio"), 2),
        fmt(pct(m.get("frac_out_of_range")), 1),
    ]


#: The metrics kept in ``evals.json`` and ``series.json``.
SUMMARY_KEYS = (
    "n", "fd", "fd_ci", "kid", "kid_ci", "precision", "recall", "class_hist", "class_kl",
    "class_tv", "confidence", "nn_dist", "nn_dist_ratio", "frac_out_of_range",
    "sample_seconds", "eta", "seed", "checkpoint",
)  # fmt: skip


def eval_summary(e: EvalRecord) -> dict:
    """An evaluation's metrics (:data:`SUMMARY_KEYS`) with its tag, epoch, sampler and path."""
    out = {k: e.metrics[k] for k in SUMMARY_KEYS if k in e.metrics}
    out.update(tag=e.tag, epoch=e.epoch, sampler=e.sampler, steps=e.steps, path=str(e.path))
    return out


# ----------------------------------------------------------------------------- collecting


@dataclasses.dataclass
class Values:
    """What the sections compute for the Typst source, and the notes about what is missing.

    Attributes:
        numbers: Key -> ``{"v": value, "s": text}`` (``numbers.json``).
        tables: Name -> ``{"header": [...], "rows": [[...], ...]}`` (``tables.json``).
        series: The values behind the figures (``series.json``).
        files: Other data files by name (``runs.json``, ``evals.json``, ``time_commands.json``).
        notes: Notes about missing or unreadable inputs (``notes.json``).
    """

    numbers: dict[str, dict] = dataclasses.field(default_factory=dict)
    tables: dict[str, dict] = dataclasses.field(default_factory=dict)
    series: dict[str, Any] = dataclasses.field(default_factory=dict)
    files: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def put(self, key: str, value: Any, text: str | None = None, d: int = 1) -> None:
        """Store a value and its text (default: ``value`` with ``d`` decimals, or ``str``).

        Args:
            key: The number's key.
            value: The value (``v``).
            text: Its text (``s``); booleans default to yes/no, ``None`` to ``"–"``.
            d: Decimals of a float's default text.
        """
        if text is None:
            if isinstance(value, bool):
                text = "yes" if value else "no"
            elif isinstance(value, float):
                text = fmt(value, d)
            else:
                text = "–" if value is None else str(value)
        self.numbers[key] = {"v": value, "s": text}

    def text(self, key: str) -> str:
        """The text stored under ``key``."""
        return self.numbers[key]["s"]

    def table(self, name: str, header: list[str], rows: list[list[str]]) -> None:
        """Store a table of strings."""
        self.tables[name] = {"header": header, "rows": rows}

    def put_eval(self, prefix: str, e: EvalRecord) -> None:
        """Store an evaluation's metrics under ``prefix`` (``<prefix>.fd_ci`` and so on).

        Args:
            prefix: The key prefix, e.g. ``"eval.q1_default"``.
            e: The evaluation.
        """
        m = e.metrics
        self.put(f"{prefix}.tag", e.tag)
        self.put(f"{prefix}.epoch", e.epoch)
        self.put(f"{prefix}.sampler", e.sampler, sampler_text(e))
        self.put(f"{prefix}.steps", e.steps)
        self.put(f"{prefix}.n", m.get("n"))
        self.put(f"{prefix}.fd", m.get("fd"), fmt(m.get("fd"), 1))
        self.put(f"{prefix}.fd_ci", m.get("fd_ci"), ci_text(m, "fd", 1))
        self.put(f"{prefix}.kid", m.get("kid"), fmt(m.get("kid"), 2))
        self.put(f"{prefix}.kid_ci", m.get("kid_ci"), ci_text(m, "kid", 2))
        for k, d in (("precision", 3), ("recall", 3), ("class_kl", 3), ("class_tv", 3)):
            self.put(f"{prefix}.{k}", m.get(k), fmt(m.get(k), d))
        self.put(f"{prefix}.confidence", m.get("confidence"), fmt(m.get("confidence"), 3))
        ratio = m.get("nn_dist_ratio")
        self.put(f"{prefix}.nn_ratio", ratio, fmt(ratio, 2))
        if isinstance(ratio, int | float):  # calibration: test digits 1.00, training copies 0.00
            self.put(f"{prefix}.nn_close", bool(ratio < NN_CLOSE))
        sure = m.get("frac_confident_0.9")  # share the classifier is over 90% sure of
        self.put(f"{prefix}.sure_pct", pct(sure), fmt(pct(sure), 0))
        oor = m.get("frac_out_of_range")
        self.put(f"{prefix}.oor_pct", None if oor is None else 100 * oor, fmt(pct(oor), 1))
        hist = m.get("class_hist")
        if isinstance(hist, list) and len(hist) == 10:
            self.put(f"{prefix}.rarest_digit", int(np.argmin(hist)))
            self.put(f"{prefix}.rarest_share", float(min(hist)), fmt(float(min(hist)), 3))
            self.put(f"{prefix}.commonest_digit", int(np.argmax(hist)))
            self.put(f"{prefix}.commonest_share", float(max(hist)), fmt(float(max(hist)), 3))
        s1k = sec_per_1k(e)
        self.put(f"{prefix}.sec_per_1k", s1k, fmt(s1k, 1))


def grid_saturation(run_dir: Path) -> dict[int, float]:
    """Each recorded epoch's fixed-key grid (``samples/epoch_NNN.npy``): its saturated share.

    Args:
        run_dir: A run folder.

    Returns:
        Epoch -> :func:`saturated_share` of that epoch's grid, in epoch order (empty if none).
    """
    grids = run_dir / "samples"
    return {
        e: saturated_share(np.load(grids / f"epoch_{e:03d}.npy")) for e in sample_epochs(run_dir)
    }


def first_clean_epoch(shares: dict[int, float]) -> int | None:
    """The first epoch whose grid has fewer than half of its samples saturated.

    Args:
        shares: Epoch -> saturated share (:func:`grid_saturation`).

    Returns:
        The epoch, or ``None`` if every recorded grid is mostly saturated.
    """
    return next((e for e, v in sorted(shares.items()) if v < 0.5), None)


def clean_by(shares: dict[int, float], epoch: int) -> bool | None:
    """Whether the grids left saturation by ``epoch`` (:func:`first_clean_epoch`).

    Args:
        shares: Epoch -> saturated share (:func:`grid_saturation`).
        epoch: The epoch.

    Returns:
        ``True`` if the first clean grid is at or before ``epoch``, ``False`` if every grid up
        to ``epoch`` is recorded and none is clean, ``None`` while that is not yet known.
    """
    first = first_clean_epoch(shares)
    if first is not None and first <= epoch:
        return True
    return False if max(shares, default=0) >= epoch else None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def write_json(path: Path, obj: Any) -> None:
    """Write a data file as the Typst source reads it (indented, NumPy scalars as numbers).

    Args:
        path: The file.
        obj: The value.
    """
    path.write_text(json.dumps(obj, indent=1, default=_json_default) + "\n")
