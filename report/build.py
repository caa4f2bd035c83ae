"""Regenerate the report's figures and tables from the recorded runs, optionally the PDF.

Reads the results tree (``results/``: the roles of ``study.json``, their run workdirs with
``eval/<tag>/metrics.json``, ``anchors/eval/``, ``bench/bench.json``) and rewrites
``report/figures/*.png`` and ``report/data/*.json``; ``report/report.typ`` reads only those.
Missing runs or evaluations are listed as notes (and shown as placeholders in the PDF), never
an error.

The pieces, one concern each: ``study.py`` reads the results tree and selects evaluations,
``sections.py`` computes the numbers and tables (``values.py`` formats and collects them,
``configs.py`` describes configs and rebuilds training commands), ``figures.py`` draws, and
``typeset.py`` counts the prose words and compiles the Typst source.

Example:
    python report/build.py               # figures + data from results/
    python report/build.py --pdf         # ... then compile report/report.pdf (typst)
    python report/build.py --words       # only count the prose words of report.typ
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from evidence import evidence_tables
from figures import draw_figures
from sections import SECTIONS
from study import load_study
from typeset import WORD_LIMIT, compile_pdf, count_words
from values import Values, write_json


def build_report_data(results_dir: str | Path, report_dir: str | Path) -> dict:
    """Regenerate every figure and data file of the report from a results tree.

    Args:
        results_dir: The recorded runs (e.g. ``results/``).
        report_dir: The report folder (e.g. ``report/``); ``figures/*.png`` and
            ``data/*.json`` inside are removed and written anew.

    Returns:
        Summary dict: ``figures`` (names), ``tables`` (names), ``numbers`` (count),
        ``notes``.
    """
    study = load_study(results_dir)
    fig_dir, data_dir = Path(report_dir) / "figures", Path(report_dir) / "data"
    for d, pattern in ((fig_dir, "*.png"), (data_dir, "*.json")):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob(pattern):  # stale generated files
            old.unlink()
    out = Values(notes=list(study.notes))
    for section in (*SECTIONS, evidence_tables):
        section(study, out)
    figures = draw_figures(study, out, fig_dir)
    out.put("study.n_runs", len(study.runs))
    files = {
        **out.files,
        "numbers.json": out.numbers,
        "tables.json": out.tables,
        "series.json": out.series,
        "figures.json": figures,
        "notes.json": out.notes,
    }
    for name, obj in files.items():
        write_json(data_dir / name, obj)
    return {
        "figures": figures,
        "tables": sorted(out.tables),
        "numbers": len(out.numbers),
        "notes": out.notes,
    }


def _check_source(source: Path, limit: int, final: bool) -> int:
    """Print the source's word and TODO counts; 1 if over the limit (or TODOs when final)."""
    text = source.read_text()
    words = count_words(text)
    todos = len(re.findall(r"#todo\[", text))
    print(json.dumps({"source": str(source), "words": words, "limit": limit, "todo": todos}))
    if words > limit:
        print(f"error: {source} has {words} words, over the limit of {limit}.", file=sys.stderr)
        return 1
    if final and todos:
        print(f"error: {todos} TODO blocks remain in {source}.", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse flags; build data and figures, count words, compile the PDF.

    Args:
        argv: The flags (default: the command line).

    Returns:
        The exit status: 0, 1 (over the word limit, or TODOs with ``--final``), 2 (no
        source, or it does not compile).
    """
    root = Path(__file__).resolve().parent.parent  # the repository
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results", type=Path, default=root / "results", help="recorded runs")
    p.add_argument("--report", type=Path, default=root / "report", help="report folder")
    p.add_argument("--pdf", action="store_true", help="also compile report.pdf with typst")
    p.add_argument("--words", action="store_true", help="only count the words of report.typ")
    p.add_argument("--final", action="store_true", help="fail if TODO blocks remain in the source")
    p.add_argument("--limit", type=int, default=WORD_LIMIT, help="word limit")
    args = p.parse_args(argv)
    # Relative paths keep notes and data files free of this machine's folder names.
    args.results, args.report = (Path(os.path.relpath(x)) for x in (args.results, args.report))

    source = args.report / "report.typ"
    if not args.words:
        summary = build_report_data(args.results, args.report)
        print(
            f"wrote {len(summary['figures'])} figures to {args.report / 'figures'} and "
            f"{summary['numbers']} numbers, tables {summary['tables']} to {args.report / 'data'}"
        )
        for note in summary["notes"]:
            print(f"note: {note}")
    if not source.exists():
        if args.words or args.pdf:
            print(f"error: {source} does not exist.", file=sys.stderr)
            return 2
        return 0
    status = _check_source(source, args.limit, args.final)
    if status or not args.pdf:
        return status
    try:
        pdf = compile_pdf(args.report)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
