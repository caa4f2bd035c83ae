"""Tests for jaxdiff.app.plotting: every figure writes a PNG, and nothing is process-wide."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from jaxdiff.app import plotting


def test_importing_plotting_leaves_the_backend_and_pyplot_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); import jaxdiff.app.plotting, sys; "
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["svg", "False"]


def test_each_figure_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(-0.5, 0.5, (6, 28, 28, 1)).astype(np.float32)
    plotting.save_grid(imgs, tmp_path / "grid.png", title="grid")
    plotting.save_strip(imgs.reshape(2, 3, 28, 28, 1), tmp_path / "strip.png", ["a", "b", "c"])
    plotting.plot_bars(np.arange(10) / 45, [str(d) for d in range(10)], tmp_path / "bars.png")
    for name in ("grid", "strip", "bars"):
        head = (tmp_path / f"{name}.png").read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n", name
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave no temporaries
