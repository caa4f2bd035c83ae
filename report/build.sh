#!/usr/bin/env bash
# Rebuild report/report.pdf from the recorded runs in results/ with one command:
# regenerate report/figures/*.png and report/data/*.json, check the word limit, compile.
#
# Usage: bash report/build.sh [--final] [--results DIR]
#   PYTHON  interpreter with jaxdiff and the 'report' extra (default: python)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
exec "${PYTHON:-python}" report/build.py --pdf "$@"
