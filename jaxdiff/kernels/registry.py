"""Convolution implementations by name, and what ``"auto"`` and a recorded name run here.

:class:`jaxdiff.models.layers.Conv` and the fidelity classifier look their convolution up by
name (``ModelConfig.conv_impl``), and every run's ``config.json`` records the name it used:

* pure JAX, on every backend: ``"xla"`` (the reference), ``"loopsafe"``, ``"fast"`` (the
  Fourier path for 7x7 and larger, loop-safe XLA below) — :mod:`jaxdiff.kernels.conv`;
* native, CPU only, once :func:`jaxdiff.kernels.native.build` has built them:
  ``"onednn"`` (oneDNN for every kernel) and ``"fast-onednn"`` (Fourier for 7x7 and larger
  on many input channels, oneDNN for the rest) — :mod:`jaxdiff.kernels.onednn`.

``"auto"`` (:func:`resolve_conv_impl`) takes, on a CPU, ``"onednn"`` where oneDNN has AMX,
``"fast-onednn"`` where the native kernels are loaded without it, else ``"fast"``; on a GPU or
TPU XLA's own convolution. A native name where the native kernels are not available (a run
recorded on another machine, a failed build, a GPU) resolves to its pure-JAX fallback
(:data:`NATIVE_FALLBACK`) with one :class:`jaxdiff.kernels.native.KernelFallbackWarning`:
every implementation is tested equal to XLA's up to float rounding, so this changes speed,
not results.
"""

from __future__ import annotations

import jax

from jaxdiff.kernels import native
from jaxdiff.kernels.conv import ConvFn, conv2d_fourier, conv2d_loopsafe, conv2d_reference
from jaxdiff.kernels.onednn import conv2d_fast_onednn, conv2d_onednn

_CONVS: dict[str, ConvFn] = {
    "xla": conv2d_reference,
    "fast": conv2d_fourier,
    "loopsafe": conv2d_loopsafe,
    "onednn": conv2d_onednn,
    "fast-onednn": conv2d_fast_onednn,
}

#: The name that picks the fastest tested implementation for the backend (the default).
AUTO = "auto"
#: What :data:`AUTO` resolves to on backends other than CPU (GPU, TPU): XLA's own
#: convolution (cuDNN), where Fourier-as-matmul is not known to be faster.
AUTO_FALLBACK = "xla"
#: The names that need the native kernels, and what runs instead on a CPU without them. On
#: other backends they fall back to :data:`AUTO_FALLBACK`.
NATIVE_FALLBACK = {"fast-onednn": "fast", "onednn": "fast"}
#: The names that never need the native kernels.
PURE_JAX = ("xla", "fast", "loopsafe")
#: On a CPU whose oneDNN ISA includes this one, :data:`AUTO` takes ``"onednn"`` for every
#: kernel: with AMX, oneDNN's direct 7x7 convolutions beat the Fourier path, 1.9x in a bf16
#: starter training step and 1.07x in fp32 (``docs/benchmarks.md``). Without AMX the
#: Fourier path wins for 7x7 kernels (AVX2 and AVX-512 hosts, measured).
AUTO_ONEDNN_ALL_ISA = "avx512_core_amx"


def resolve_conv_impl(name: str, backend: str | None = None) -> str:
    """The concrete implementation that ``name`` runs on this machine and ``backend``.

    ``"auto"``: on CPU ``"onednn"`` where the native kernels are loaded and oneDNN has AMX
    (:data:`AUTO_ONEDNN_ALL_ISA`), ``"fast-onednn"`` where they are loaded without it, else
    ``"fast"``; elsewhere :data:`AUTO_FALLBACK`. The native kernels count only once built
    (:func:`jaxdiff.kernels.build`); nothing is compiled here. A native name (``"onednn"``,
    ``"fast-onednn"``) where they are not available resolves to its pure-JAX fallback
    (:data:`NATIVE_FALLBACK`). Either fallback warns once per process
    (:func:`jaxdiff.kernels.native.warn_fallback`), except for ``"auto"`` where the native
    kernels do not apply by design (another platform, ``JAXDIFF_ONEDNN=0``). The pure-JAX
    names are returned unchanged.

    Args:
        name: ``"auto"`` or a registered name.
        backend: A JAX backend name (``"cpu"``, ``"gpu"``, ``"tpu"``); default: the
            current default backend.

    Returns:
        A registered, concrete implementation name that runs here.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if name != AUTO and name not in _CONVS:
        raise ValueError(
            f"unknown conv impl {name!r}; choose from {available_convs()} "
            f"({AUTO!r} picks the fastest for the backend)."
        )
    if name != AUTO and name not in NATIVE_FALLBACK:
        return name
    backend = backend or jax.default_backend()
    if backend != "cpu":
        if name != AUTO:
            native.warn_fallback(
                AUTO_FALLBACK,
                f"they run on CPU only, this is {backend}",
                f"the speed of XLA's own convolution, what {AUTO!r} picks on {backend}",
            )
        return AUTO_FALLBACK
    if native.available():
        if name == AUTO:
            return "onednn" if native.has_isa(AUTO_ONEDNN_ALL_ISA) else "fast-onednn"
        return name
    fallback = NATIVE_FALLBACK.get(name, "fast")
    if name != AUTO or not native.expected_absence():
        native.warn_fallback(fallback)
    return fallback


def prepare(name: str | None = AUTO) -> bool:
    """Build the native kernels up front where ``name`` may run them (the drivers call this).

    Announced with a progress line (:func:`jaxdiff.kernels.native.build`); does nothing for a
    pure-JAX name or on a backend other than CPU.

    Args:
        name: The ``--conv-impl`` a driver was given; ``None`` for a run's recorded one (not
            known before its config is read).

    Returns:
        Whether the native kernels are loaded for it.
    """
    if name is not None and name != AUTO and name not in NATIVE_FALLBACK:
        return False
    if jax.default_backend() != "cpu":
        return False
    return native.build()


def register_conv(name: str, fn: ConvFn) -> None:
    """Register a convolution implementation ``fn(x_nhwc, kernel_hwio) -> y_nhwc``.

    Args:
        name: Name used by ``Conv(impl=name)``.
        fn: 'SAME', stride-1 convolution equivalent to
            :func:`jaxdiff.kernels.conv.conv2d_reference`.
    """
    _CONVS[name] = fn


def get_conv(name: str) -> ConvFn:
    """Look up the convolution that ``name`` runs here (:func:`resolve_conv_impl`).

    Args:
        name: A registered name, e.g. ``"xla"``, or ``"auto"``; a native name where the
            native kernels are not available gives its pure-JAX fallback (with a warning).

    Returns:
        The convolution function.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    return _CONVS[resolve_conv_impl(name)]


def available_convs() -> list[str]:
    """Names accepted by :func:`get_conv`: ``"auto"`` and the registered implementations."""
    return [AUTO, *sorted(_CONVS)]
