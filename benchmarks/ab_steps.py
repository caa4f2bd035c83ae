"""Interleaved A/B timing of jaxdiff configurations of the starter (train step or sampler).

Usage::

    python benchmarks/ab_steps.py '[{"prec": "bf16", "impl": "onednn"},
                                    {"prec": "bf16", "impl": "fast-onednn"}]' --rounds 7

Each configuration runs in its own process (so environment variables such as ``XLA_FLAGS`` or
``OMP_WAIT_POLICY`` can differ); the driver alternates one timed call per configuration per
round, after a short pause, and prints the median throughput. A configuration is a JSON object:
``prec`` (``fp32``/``bf16``), ``impl`` (a ``--conv-impl`` name), optional ``what`` (``train``:
``S`` scanned training steps of batch 128, the default; ``sample``: the ancestral sampler over
``S`` steps, reported per 100 steps), ``S`` (default 10), ``env`` (extra environment) and
``ablate`` (``"layernorm"``: the blocks' LayerNorm + GELU replaced by the identity, to measure
their share of a step, not a model anyone trains).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKER = r"""
import sys, time, numpy as np, jax, jax.numpy as jnp
from jaxdiff.app.allocator import configure_cpu_allocator
from jaxdiff.config import ModelConfig, TrainConfig
from jaxdiff.kernels import prepare
from jaxdiff.losses import ddpm_loss
from jaxdiff.models import build_model
from jaxdiff.sampling import ddpm_sample
from jaxdiff.schedules import linear
from jaxdiff.train import init_train_state, make_optimizer, make_run_steps, make_train_step

configure_cpu_allocator()
prec, impl, what, S, ablate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
prepare(impl)  # the native kernels, built before anything is traced (as the drivers)
import jaxdiff.models.layers as layers
if ablate == "layernorm":  # no LayerNorm + GELU at all
    layers.layer_norm_gelu = lambda x, s, b, axes, eps: x
b = 128
images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2048, 28, 28), dtype=np.uint8))
model = build_model(ModelConfig(precision=prec, conv_impl=impl))
params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,)))
tx = make_optimizer(TrainConfig())
run = make_run_steps(make_train_step(ddpm_loss(model.apply, linear()), tx))
state = {"s": init_train_state(params, tx), "i": 0}
sched = linear(T=S)


def once():
    state["i"] += 1
    t0 = time.perf_counter()
    if what == "train":
        idx = jnp.asarray(np.random.default_rng(state["i"]).integers(0, 2048, (S, b)), jnp.int32)
        st, m = run(state["s"], images, idx, jax.random.key(1))
        jax.block_until_ready(m["loss"])
        state["s"] = st
    else:
        z, _ = ddpm_sample(model.apply, params, sched, jax.random.key(2), (b, 28, 28, 1))
        jax.block_until_ready(z)
    return time.perf_counter() - t0


once()
once()
print("READY", flush=True)
for _ in sys.stdin:
    print(once(), flush=True)
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("configs", help="JSON list of configurations (see above)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--pause", type=float, default=0.5, help="seconds of idle before each call")
    args = p.parse_args(argv)
    cfgs = json.loads(args.configs)
    procs = []
    for c in cfgs:
        what, steps = c.get("what", "train"), str(c.get("S", 10))
        cmd = [sys.executable, "-c", WORKER, c["prec"], c["impl"], what, steps, c.get("ablate", "")]
        env = {**os.environ, **c.get("env", {})}
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        while (line := proc.stdout.readline()) and line.strip() != "READY":
            pass
        if not line:
            sys.exit(f"configuration {c} failed to start (see its error above)")
        procs.append(proc)
    times = [[] for _ in cfgs]
    for _ in range(args.rounds):
        for i, proc in enumerate(procs):
            time.sleep(args.pause)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            times[i].append(float(proc.stdout.readline()))
    for c, t, proc in zip(cfgs, times, procs, strict=True):
        steps = c.get("S", 10)
        med = statistics.median(t)
        ips = 128 * steps / med if c.get("what", "train") == "train" else 128 * steps / 100 / med
        print(f"{ips:8.1f} img/s  {json.dumps(c)}  rounds (s): {[round(x, 3) for x in t]}")
        proc.kill()


if __name__ == "__main__":
    main()
