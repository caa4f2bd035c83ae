"""Per-layer convolution timings: XLA's reference conv vs jaxdiff's Fourier conv.

Usage::

    python benchmarks/conv_layers.py [--rounds 7] [--batch 128] [--impls xla,fast] [--kernels 5,7]

For each layer of the starter CNN (and a few UNet-like 3x3 shapes) it times, interleaved
round-robin, the forward pass and the forward + backward pass (input and kernel gradient)
of ``conv_impl="xla"`` and ``"fast"`` in float32, and prints medians in milliseconds with
the nominal direct-convolution GFLOP/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import kernels

# (height, c_in, c_out, kernel)
LAYERS = [
    (28, 1, 16, 7),
    (28, 16, 32, 7),
    (28, 32, 32, 7),
    (28, 32, 16, 7),
    (28, 16, 1, 3),
    (28, 32, 32, 3),
    (14, 64, 64, 3),
    (7, 128, 128, 3),
    (28, 1, 32, 5),  # the classifier's first layer
]


def main(argv=None) -> None:
    """Time every layer with both implementations and print a table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument(
        "--impls", default="xla,fast", help="two implementations to compare (reference first)"
    )
    p.add_argument("--kernels", default="", help="only these kernel sizes, e.g. 5,7")
    args = p.parse_args(argv)
    ref, alt = args.impls.split(",")
    layers = [lay for lay in LAYERS if not args.kernels or str(lay[3]) in args.kernels.split(",")]
    rng = np.random.default_rng(0)
    cases = {}
    for h, cin, cout, k in layers:
        x = jnp.asarray(rng.standard_normal((args.batch, h, h, cin)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) * 0.1, jnp.float32)
        g = jnp.asarray(rng.standard_normal((args.batch, h, h, cout)), jnp.float32)
        for impl in (ref, alt):
            conv = kernels.get_conv(impl)
            fwd = jax.jit(conv)
            both = jax.jit(lambda x, w, g, conv=conv: jax.vjp(conv, x, w)[1](g))
            cases[(h, cin, cout, k, impl, "fwd")] = (fwd, (x, w))
            cases[(h, cin, cout, k, impl, "fwd+bwd")] = (both, (x, w, g))
    for f, a in cases.values():
        jax.block_until_ready(f(*a))
    times = {key: [] for key in cases}
    for _ in range(args.rounds):
        for key, (f, a) in cases.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*a))
            times[key].append(time.perf_counter() - t0)
    print(
        f"{'layer':24s} {'pass':8s} {ref + ' ms':>9s} {alt + ' ms':>9s} {'speed-up':>8s}  GFLOP/s"
    )
    for h, cin, cout, k in layers:
        gflop = 2 * args.batch * h * h * k * k * cin * cout / 1e9
        for what, mult in (("fwd", 1), ("fwd+bwd", 3)):
            tx = statistics.median(times[(h, cin, cout, k, ref, what)])
            tf = statistics.median(times[(h, cin, cout, k, alt, what)])
            layer = f"{h}x{h} {cin:3d}->{cout:3d} k{k}"
            print(
                f"{layer:24s} {what:8s} {1e3 * tx:9.1f} {1e3 * tf:9.1f} {tx / tf:8.2f}  "
                f"{ref} {mult * gflop / tx:5.0f}, {alt} {mult * gflop / tf:5.0f}"
            )
    print("load average:", [round(v, 2) for v in os.getloadavg()])


if __name__ == "__main__":
    from jaxdiff.app.allocator import configure_cpu_allocator

    configure_cpu_allocator()  # as the training entry points do
    main()
