"""The README's Python snippet and the quickstart notebook run as documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _snippet() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- snippet: tested by tests/test_docs.py -->\n```python\n(.*?)```", text, re.S
    )
    assert block, "README.md lost its tested snippet"
    return block.group(1)


def test_readme_snippet_trains_and_samples_without_writing_files(tmp_path, data_dir):
    code = _snippet().replace('"../shared/data/mnist"', repr(str(Path(data_dir).resolve())))
    code += "\nassert samples.shape == (16, 28, 28, 1), samples.shape\n"
    code += "import numpy as np; assert np.isfinite(samples).all()\n"
    env = {**os.environ, "JAXDIFF_XLA_CACHE": "0"}
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.listdir(tmp_path) == []  # nothing written where it ran


def test_quickstart_notebook_executes(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # CI exports Agg; the kernel draws inline
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "docs" / "quickstart.ipynb", as_version=4)
    for cell in nb.cells:  # the subset CI runs: fewer digits, same steps
        if cell.cell_type == "code":
            cell.source = cell.source.replace(
                '"../../shared/data/mnist"', repr(str(Path(data_dir).resolve()))
            )
            cell.source = cell.source.replace("LIMIT = 4096", "LIMIT = 512").replace(
                "N_EVAL = 500", "N_EVAL = 100"
            )
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" for o in outputs)  # the grid
    assert any("FD" in "".join(o.get("text", "")) for o in outputs)  # the score
