"""Time to the first epoch: what a new user feels first, for jaxdiff and the PyTorch starter.

Usage::

    python benchmarks/first_epoch.py [--images 8192] [--rounds 3] [--json out.json]

Each round starts a fresh process per library and measures the wall time from launching it
to the end of its first training epoch on ``--images`` MNIST training images (batch 128,
the starter recipe: CNN (16, 32, 32, 16), Adam 2e-4), everything included: interpreter and
library imports, reading MNIST, building the model, compilation (jaxdiff) and the epoch
itself. The child prints a wall-clock timestamp when the epoch ends, so checkpointing and
exit are not counted.

* jaxdiff: ``python experiments/ddpm.py --limit N --epochs 1 --grid-n 0`` with no speed
  flags (the defaults a new user gets); the epoch end is read from its ``metrics.jsonl``
  write time. Twice per round: first with an empty compilation cache (``cold``: the very
  first run on a machine, everything compiled), then with the cache that run left
  (``warm``: every later run of the same recipe, see :mod:`jaxdiff.app.compile_cache`).
  The oneDNN kernels (built once per machine, ~7 s) are not rebuilt.
* PyTorch: the starter (``benchmarks/torch_starter.py``) in its usual Python loop, fp32,
  reading the same IDX files with gzip + NumPy.

The rounds alternate the two libraries; medians are reported. Requires torch
(``pip install torch==2.13.0``) for the PyTorch side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TORCH_CHILD = r"""
import gzip, sys, time
import numpy as np
import torch
sys.path.insert(0, {bench!r})
from torch_starter import CNN, DDPM
with gzip.open({images!r}) as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:{n}]
x = torch.from_numpy(x.astype(np.float32) / 255.0 - 0.5)[:, None]
torch.manual_seed(0)
ddpm = DDPM(CNN())
opt = torch.optim.Adam(ddpm.parameters(), lr=2e-4)
loader = torch.utils.data.DataLoader(x, batch_size=128, shuffle=True, drop_last=True)
for batch in loader:
    opt.zero_grad()
    loss = ddpm(batch)
    loss.backward()
    opt.step()
print("EPOCH_END", time.time(), float(loss), flush=True)
"""


def time_jaxdiff(n: int, data_dir: str, cache_dir: str) -> float:
    """Seconds from launch to the end of jaxdiff's first epoch, compiling into ``cache_dir``."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache_dir, "JAXDIFF_XLA_CACHE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "run"
        t0 = time.time()
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "experiments" / "ddpm.py"),
                *("--limit", str(n), "--epochs", "1", "--grid-n", "0"),
                *("--workdir", str(work), "--data-dir", data_dir, "--no-progress"),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
        )
        if r.returncode != 0:
            raise RuntimeError(f"jaxdiff run failed: {r.stderr[-2000:]}")
        return os.path.getmtime(work / "metrics.jsonl") - t0


def time_torch(n: int, data_dir: str) -> float:
    """Seconds from launch to the end of the PyTorch starter's first epoch."""
    code = TORCH_CHILD.format(
        bench=str(ROOT / "benchmarks"),
        images=str(Path(data_dir) / "train-images-idx3-ubyte.gz"),
        n=n,
    )
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"PyTorch run failed: {r.stderr[-2000:]}")
    end = next(ln for ln in r.stdout.splitlines() if ln.startswith("EPOCH_END"))
    return float(end.split()[1]) - t0


def main(argv: list[str] | None = None) -> dict:
    """Run the rounds and print (and optionally write) the medians."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", default=str(ROOT / ".." / "shared" / "data" / "mnist"))
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {"jaxdiff cold": [], "jaxdiff warm": [], "pytorch": []}
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            times["jaxdiff cold"].append(time_jaxdiff(args.images, args.data_dir, cache))
            times["jaxdiff warm"].append(time_jaxdiff(args.images, args.data_dir, cache))
        if not args.no_torch:
            times["pytorch"].append(time_torch(args.images, args.data_dir))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v))
    med = {k: statistics.median(v) for k, v in times.items() if v}
    out = {
        "images": args.images,
        "rounds": args.rounds,
        "seconds": times,
        "median_s": med,
        "load_average": os.getloadavg(),
    }
    if "pytorch" in med:
        for mode in ("cold", "warm"):
            out[f"ratio_pytorch_over_jaxdiff_{mode}"] = med["pytorch"] / med[f"jaxdiff {mode}"]
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    from jaxdiff.app.allocator import configure_cpu_allocator

    configure_cpu_allocator()  # as the training entry points do
    main()
