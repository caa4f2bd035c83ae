"""``python experiments/cold.py`` with no flags against the same UNet in PyTorch fp32.

Usage::

    python benchmarks/unet_peer.py [--rounds 5] [--steps 10] [--json out.json]

The jaxdiff side is exactly what ``cold.py`` trains with no flags (its parser's defaults:
UNet 32-64-64, bf16, ``--conv-impl auto``, batch 64, the melt restoration loss with its
training noise, Adam with warm-up + cosine, EMA), ``--steps`` steps scanned per call by
``jaxdiff.train.make_run_steps``. The PyTorch side is the same network written in
``torch.nn`` (``TorchUNet``: the same blocks, widths, GroupNorm groups, additive skips and
time MLP; parameter count checked equal to jaxdiff's) trained on an L2 restoration loss of
noisy inputs (the melt degradation itself has no PyTorch version; in jaxdiff it costs about
1% of a step), Adam, in its usual Python loop, fp32 and ``autocast(bfloat16)``. A fourth
case times jaxdiff with ``--precision fp32``, and the run records best against best (each
library's fastest case) and the host's vector extensions (on a CPU without AVX-512 bf16
autocast has no native kernels and is slow). Rounds alternate the sides; medians are
reported as images/s, with the ratio jaxdiff / PyTorch.
Requires torch (``pip install torch==2.13.0``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np


def jax_case(steps: int, argv: tuple[str, ...] = ()):
    """cold.py's training with ``argv`` (default: none), ``steps`` steps a call.

    Returns:
        (batch, timing fn, n params, config).
    """
    import jax
    import jax.numpy as jnp

    from jaxdiff.app.allocator import configure_cpu_allocator
    from jaxdiff.app.cli import common_parser, config_from_args
    from jaxdiff.pipeline import build, init_params
    from jaxdiff.train import init_train_state, make_run_steps, make_train_step

    configure_cpu_allocator()
    parser = common_parser(None, kind="cold")
    cfg = config_from_args(parser.parse_args(list(argv)), parser, kind="cold")
    pieces = build(cfg)
    params = init_params(pieces, jax.random.key(0))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    step = make_train_step(pieces.loss_fn, pieces.tx, cfg.train.ema_decay)
    run = make_run_steps(step)
    b = cfg.train.batch_size
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4096, 28, 28), np.uint8))
    holder = {"state": init_train_state(params, pieces.tx), "i": 0}

    def once() -> float:
        holder["i"] += 1
        idx = jnp.asarray(np.random.default_rng(holder["i"]).integers(0, 4096, (steps, b)))
        t0 = time.perf_counter()
        holder["state"], m = run(holder["state"], images, idx.astype(jnp.int32), jax.random.key(1))
        jax.block_until_ready(m["loss"])
        return time.perf_counter() - t0

    return b, once, n_params, cfg


def cpu_info() -> dict:
    """The host's vector extensions that matter here (AVX-512 and bf16 change the peers)."""
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
        flags = set(next(x for x in lines if x.startswith("flags")).split())
        model = next(x for x in lines if x.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        flags, model = set(), "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {"flags": [f for f in wanted if f in flags], "cores": os.cpu_count(), "model": model}


def torch_case(steps: int, b: int, autocast: bool):
    """The same UNet in PyTorch; returns (timing fn, n params)."""
    import torch
    from torch import nn

    def gn(c):
        return nn.GroupNorm(8, c, eps=1e-5)

    class Res(nn.Module):
        def __init__(self, cin, cout, tdim):
            super().__init__()
            self.n1, self.c1 = gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.t = nn.Linear(tdim, cout)
            self.n2, self.c2 = gn(cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

        def forward(self, x, temb):
            h = self.c1(nn.functional.silu(self.n1(x)))
            h = h + self.t(nn.functional.silu(temb))[:, :, None, None]
            h = self.c2(nn.functional.silu(self.n2(h)))
            return self.skip(x) + h

    class TorchUNet(nn.Module):
        def __init__(self, hidden=(32, 64, 64)):
            super().__init__()
            c0 = hidden[0]
            tdim = 4 * c0
            self.c0 = c0
            self.tmlp = nn.Sequential(nn.Linear(c0, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
            self.inp = nn.Conv2d(1, c0, 3, padding=1)
            chans = [c0, *hidden]
            self.down = nn.ModuleList(
                Res(chans[i], chans[i + 1], tdim) for i in range(len(hidden) - 1)
            )
            self.mid1 = Res(hidden[-2], hidden[-1], tdim)
            self.mid2 = Res(hidden[-1], hidden[-1], tdim)
            self.proj = nn.ModuleList(
                nn.Conv2d(hidden[i + 1], hidden[i], 1) for i in reversed(range(len(hidden) - 1))
            )
            self.up = nn.ModuleList(
                Res(hidden[i], hidden[i], tdim) for i in reversed(range(len(hidden) - 1))
            )
            self.out_norm, self.out = gn(c0), nn.Conv2d(c0, 1, 3, padding=1)

        def forward(self, x, t):
            half = self.c0 // 2
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
            args = 50.0 * t[:, None] * freqs[None]
            temb = self.tmlp(torch.cat([torch.sin(args), torch.cos(args)], -1))
            h = self.inp(x)
            skips = []
            for blk in self.down:
                h = blk(h, temb)
                skips.append(h)
                h = nn.functional.avg_pool2d(h, 2)
            h = self.mid2(self.mid1(h, temb), temb)
            for proj, blk in zip(self.proj, self.up, strict=True):
                h = nn.functional.interpolate(proj(h), scale_factor=2, mode="nearest")
                h = blk(h + skips.pop(), temb)
            return self.out(nn.functional.silu(self.out_norm(h)))

    torch.manual_seed(0)
    net = TorchUNet()
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = torch.rand(4096, 1, 28, 28) - 0.5

    def once() -> float:
        gen = torch.Generator().manual_seed(0)
        batches = [data[torch.randint(0, 4096, (b,), generator=gen)] for _ in range(steps)]
        t0 = time.perf_counter()
        for x0 in batches:
            t = torch.rand(b)
            xt = x0 + 0.3 * t[:, None, None, None] * torch.randn_like(x0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = ((net(xt, t).float() - x0) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    return once, n_params


def main(argv: list[str] | None = None) -> dict:
    """Time both sides round-robin and print (and optionally write) the medians."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="training steps per timed call")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench.py: PyTorch's best here
    b, jax_once, jax_n, cfg = jax_case(args.steps)
    _, jax_fp32, _, _ = jax_case(args.steps, ("--precision", "fp32"))
    torch_fp32, torch_n = torch_case(args.steps, b, autocast=False)
    torch_bf16, _ = torch_case(args.steps, b, autocast=True)
    if torch_n != jax_n:
        raise SystemExit(f"parameter counts differ: jaxdiff {jax_n}, PyTorch {torch_n}")
    cases = {"jaxdiff cold.py defaults": jax_once, "jaxdiff --precision fp32": jax_fp32}
    cases |= {"torch fp32": torch_fp32, "torch bf16 autocast": torch_bf16}
    for fn in cases.values():  # warm-up (compilation, oneDNN primitives)
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(args.rounds):
        for name, fn in cases.items():
            time.sleep(1.0)
            times[name].append(fn())
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    ips = {k: args.steps * b / statistics.median(v) for k, v in times.items()}
    out = {
        "batch": b,
        "steps": args.steps,
        "rounds": args.rounds,
        "params": jax_n,
        "jaxdiff_model": cfg.model.__dict__ | {"hidden": list(cfg.model.hidden)},
        "images_per_s": ips,
        "seconds": times,
        "ratio_vs_torch_fp32": ips["jaxdiff cold.py defaults"] / ips["torch fp32"],
        "ratio_vs_torch_bf16": ips["jaxdiff cold.py defaults"] / ips["torch bf16 autocast"],
        "load_average": os.getloadavg(),
        "cpu": cpu_info(),
    }
    jax_best = max((k for k in ips if k.startswith("jaxdiff")), key=ips.get)
    torch_best = max((k for k in ips if k.startswith("torch")), key=ips.get)
    out["best_against_best"] = {
        "jaxdiff": jax_best,
        "torch": torch_best,
        "ratio": ips[jax_best] / ips[torch_best],
    }
    for k, v in ips.items():
        print(f"{k:26s} {v:7.1f} img/s")
    print(
        f"ratio jaxdiff / torch fp32 {out['ratio_vs_torch_fp32']:.2f}, "
        f"/ torch bf16 {out['ratio_vs_torch_bf16']:.2f}; best against best "
        f"({jax_best} / {torch_best}) {out['best_against_best']['ratio']:.2f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
