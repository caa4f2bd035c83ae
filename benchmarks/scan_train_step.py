"""Train-step throughput of the UNet inside a ``lax.scan`` (the shape of jaxdiff's epoch loop).

On XLA:CPU the convolution gradients JAX derives run much slower in a loop body than
outside one (jax-ml/jax#12868). ``--impl xla`` uses them; ``--impl fast`` routes the UNet's
3x3/1x1 convolutions to ``jaxdiff.kernels.conv.conv2d_loopsafe``, whose gradient avoids them;
``--impl auto`` (what the drivers use) adds oneDNN through the XLA FFI where the native kernels
build (they are built first, as the drivers do). XLA's own alternatives are switched on with
``XLA_FLAGS`` (the measurement behind :mod:`jaxdiff.kernels`, ``docs/benchmarks.md``).

Example:
    python benchmarks/scan_train_step.py --impl xla --precision fp32
    python benchmarks/scan_train_step.py --impl auto --precision fp32
    XLA_FLAGS=--xla_cpu_experimental_onednn_custom_call=true \
        python benchmarks/scan_train_step.py --impl xla --precision fp32
    XLA_FLAGS="--xla_cpu_experimental_onednn_custom_call=true --xla_cpu_use_onednn=true" \
        python benchmarks/scan_train_step.py --impl xla --precision fp32
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution \
        python benchmarks/scan_train_step.py --impl xla --precision fp32
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.kernels import prepare, resolve_conv_impl
from jaxdiff.pipeline import build, init_params
from jaxdiff.train import epoch_indices, init_train_state, make_run_steps, make_train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", default="fast")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", default="32,64,64", help="UNet channels per level")
    args = p.parse_args()
    hidden = tuple(int(c) for c in args.hidden.split(","))
    b = args.batch
    prepare(args.impl)
    cfg = Config(
        ModelConfig(name="unet", hidden=hidden, precision=args.precision, conv_impl=args.impl),
        ProcessConfig(),
        TrainConfig(lr=1e-3, batch_size=b, ema_decay=0.999),
    )
    pieces = build(cfg)
    state = init_train_state(init_params(pieces, jax.random.PRNGKey(0)), pieces.tx)
    run_steps = make_run_steps(make_train_step(pieces.loss_fn, pieces.tx, 0.999))
    n = b * args.steps
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (n, 28, 28), np.uint8))
    idx = epoch_indices(jax.random.PRNGKey(0), 0, n, b)
    key = jax.random.PRNGKey(1)
    state, m = run_steps(state, images, idx, key)  # compile
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    state, m = run_steps(state, images, idx, key)
    jax.block_until_ready(m)
    rate = n / (time.perf_counter() - t0)
    impl = f"{args.impl} ({resolve_conv_impl(args.impl)})" if args.impl == "auto" else args.impl
    flags = os.environ.get("XLA_FLAGS", "")
    print(
        f"impl {impl} {args.precision} hidden {hidden} batch {b}"
        f"{f' XLA_FLAGS={flags!r}' if flags else ''}: {rate:.1f} img/s in scan"
    )


if __name__ == "__main__":
    from jaxdiff.app.allocator import configure_cpu_allocator

    configure_cpu_allocator()  # as the training entry points do
    main()
