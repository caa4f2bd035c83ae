"""jaxdiff's convolutions, and the native build behind the fastest of them.

Why not XLA's own routes. On XLA:CPU the convolution gradients that JAX derives run one to two
orders of magnitude slower inside a ``lax.scan`` body than outside one (jax-ml/jax#12868), and
jaxdiff trains each epoch as scans of steps. XLA's own alternatives do not fix it. The UNet's
fp32 training step in a scan, ``python benchmarks/scan_train_step.py --impl xla --precision
fp32`` (``--impl fast``, ``--impl auto``; XLA's routes through ``XLA_FLAGS``), jax 0.10.2, an
AMD EPYC with AVX-512 and ``avx512_bf16``, 2026-12-07, interleaved beside a training job
(``docs/benchmarks.md``):

| route | img/s |
| --- | --- |
| XLA's convolution (``xla``) | 2.9 |
| ... with ``--xla_cpu_experimental_onednn_custom_call=true`` | 3.2 |
| ... and ``--xla_cpu_use_onednn=true`` | 3.3 |
| ... with ``--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`` | 3.1 |
| jaxdiff's pure-JAX path (``fast``) | 80.1-91.5 |
| jaxdiff's ``auto`` (``fast-onednn``: oneDNN through the XLA FFI) | 166.6-191.0 |

So jaxdiff carries its own convolutions, each with a hand-written gradient and tested equal to
XLA's in values and gradients:

* :mod:`jaxdiff.kernels.conv`: pure JAX, every backend, no build. XLA's convolution (the
  reference), a loop-safe gradient for it, and the Fourier path (7x7 convolutions as matrix
  products, 4x fewer FLOPs).
* :mod:`jaxdiff.kernels.onednn`: oneDNN's convolutions through the XLA FFI (CPU, x86-64
  Linux), from ``csrc/onednn_conv.cc``, which :mod:`jaxdiff.kernels.native` compiles once per
  machine when :func:`build` is called.
* :mod:`jaxdiff.kernels.registry`: the names (``conv_impl``), what ``"auto"`` picks, and the
  fallback to the pure-JAX path, with one warning, wherever the native kernels are absent.
* :mod:`jaxdiff.kernels.fused`: the starter block's LayerNorm + GELU (XLA).

Build ahead, never mid-trace: ``python -c "import jaxdiff.kernels as k; k.build()"`` (what
``scripts/install.sh`` and the drivers do, announced with a progress line). Until then
``"auto"`` runs the pure-JAX path; nothing in the library runs a compiler.
"""

from jaxdiff.kernels.native import (
    KernelFallbackWarning,
    OneDNNUnavailable,
    available,
    build,
    unavailable_reason,
)
from jaxdiff.kernels.registry import (
    AUTO,
    available_convs,
    get_conv,
    prepare,
    register_conv,
    resolve_conv_impl,
)

__all__ = [
    "AUTO",
    "KernelFallbackWarning",
    "OneDNNUnavailable",
    "available",
    "available_convs",
    "build",
    "get_conv",
    "prepare",
    "register_conv",
    "resolve_conv_impl",
    "unavailable_reason",
]
