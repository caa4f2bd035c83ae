"""Regenerate the report's figures and tables from the recorded runs, optionally the PDF.

Reads the results tree (``results/``: run workdirs with their ``eval/<tag>/metrics.json``,
``anchors/eval/``, ``bench/bench.json``) and rewrites ``report/figures/*.png`` and
``report/data/*.json``; ``report/report.typ`` reads only those. Missing runs or evaluations
are listed as notes (and shown as placeholders in the PDF), never an error.

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

from builder import WORD_LIMIT, build_report_data, compile_pdf, count_words


def main(argv: list[str] | None = None) -> int:
    """Parse flags; build data and figures, count words, compile the PDF."""
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
    text = source.read_text()
    words = count_words(text)
    todos = len(re.findall(r"#todo\[", text))
    print(json.dumps({"source": str(source), "words": words, "limit": args.limit, "todo": todos}))
    if words > args.limit:
        print(
            f"error: {source} has {words} words, over the limit of {args.limit}.", file=sys.stderr
        )
        return 1
    if args.final and todos:
        print(f"error: {todos} TODO blocks remain in {source}.", file=sys.stderr)
        return 1
    if args.pdf:
        try:
            pdf = compile_pdf(args.report)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
