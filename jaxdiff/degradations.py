"""Cold-diffusion degradations: pure per-example operators ``D(x0, t) -> x_t``.

Convention (every degradation here):

* ``x0`` is ONE image ``(H, W, C)`` in the model scale (background ``-0.5``, ink ``+0.5``);
  batch with ``jax.vmap(degrade)``.
* ``t`` is an integer scalar in ``0..T`` (``T`` fixed by the factory; out-of-range values are
  clipped). ``D(x0, 0) == x0`` exactly (enforced by a final ``where``), severity grows with
  ``t``, and ``t = T`` is the fully degraded state. The restorer sees ``t / T``.
* Every operator is a closed form or a table lookup: traceable under ``jit`` with a traced
  ``t``, no Python loop over time.
* Deterministic degradations are called ``D(x0, t)``. The stochastic one (``"noise"``, the
  DDPM forward process) is called ``D(x0, t, key)``: the key draws the Gaussian noise, so the
  function stays pure. ``degrade.stochastic`` says which kind an object is; callers batch
  keys with ``jax.vmap(degrade)(x0, t, keys)``. A deterministic degradation ignores a key.
* ``degrade.linear`` is ``True`` when ``D(., t)`` is affine in ``x0`` (``A_t x0 + c_t``):
  blur, pixelate and fade. For these, Bansal et al.'s Alg. 2 telescopes to a closed form
  (see :mod:`jaxdiff.cold`); with an exact restorer both algorithms recover ``x0``.

Registry: :data:`DEGRADATIONS` maps a name to a factory ``factory(T=None, **options)``;
:func:`get_degradation` builds one by name and :func:`default_T` gives each one's default
number of steps.

| name | default T | affine | fully degraded state (t = T) |
| --- | --- | --- | --- |
| ``noise`` | 1000 | for a fixed key | white noise (signal ``sqrt(abar_T) = 0.0063``) |
| ``identity`` | 50 | yes | the image itself (a control: only training noise corrupts it) |
| ``blur`` | 50 | yes | a soft grey blob (Gaussian sigma 20 px, reflecting edges) |
| ``fade`` | 50 | yes | black: a hole grown from the centre erased the ink (< 1 % left) |
| ``pixelate`` | 50 | yes | a 4 x 4 mosaic of block means (blocks 6, 8, 8, 6 px) |
| ``sediment`` | 50 | no | the ink settled to the bottom: one solid pile per column |
| ``melt`` | 50 | no | a soft dune along the bottom (settled, then blurred by 4 px) |

``sediment`` is this project's custom degradation for handwritten digits: see
:func:`sediment` for the design argument and ``docs/degradations.md`` for measurements.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.schedules import make_schedule, q_sample

BACKGROUND = -0.5
"""Model-scale value of an empty (black) MNIST pixel; ink is ``x - BACKGROUND`` in [0, 1]."""


@dataclasses.dataclass(frozen=True, eq=False)
class Degradation:
    """A named forward process ``D(x0, t) -> x_t`` for one example.

    Instances are callables, hashable and compared by ``(name, T, options)``, so they can be
    static arguments of jitted functions (two equal configurations share compiled code).

    Attributes:
        name: Registry name.
        T: Number of steps; ``t = T`` is fully degraded.
        fn: The raw operator ``fn(x0, t)`` (or ``fn(x0, t, key)`` when ``stochastic``) with
            ``t`` already an ``int32`` scalar in ``0..T``.
        linear: Whether ``D(., t)`` is affine in ``x0`` (Alg. 2 telescopes exactly).
        stochastic: Whether the operator needs a PRNG key (third argument).
        options: The factory options, as sorted ``(name, value)`` pairs.
        end_state: One line describing what ``D(x0, T)`` looks like.
    """

    name: str
    T: int
    fn: Callable[..., jax.Array]
    linear: bool
    stochastic: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    end_state: str = ""

    def _id(self) -> tuple:
        return (self.name, self.T, self.options)

    def __hash__(self) -> int:
        return hash(self._id())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Degradation) and self._id() == other._id()

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"Degradation({self.name!r}, T={self.T}{opts})"

    def __call__(self, x0: jax.Array, t: Any, key: jax.Array | None = None) -> jax.Array:
        """Degrade one image to time ``t``.

        Args:
            x0: One image ``(H, W, C)``, float, model scale.
            t: Integer scalar (Python int or integer array) in ``0..T``; clipped into range.
            key: PRNG key; required when :attr:`stochastic`, ignored otherwise.

        Returns:
            ``x_t`` with the shape and dtype of ``x0``; exactly ``x0`` where ``t == 0``.

        Raises:
            ValueError: If ``x0`` is not one ``(H, W, C)`` image, ``t`` is not an integer
                scalar, or a stochastic degradation gets no key.
        """
        x0 = jnp.asarray(x0)
        if x0.ndim != 3:
            raise ValueError(
                f"degradation {self.name!r} acts on one image (H, W, C); got shape {x0.shape}. "
                "Batch with jax.vmap(degrade)(x0, t)."
            )
        if not jnp.issubdtype(x0.dtype, jnp.floating):
            raise ValueError(
                f"x0 must be a float image in the model scale, got dtype {x0.dtype}; "
                "use jaxdiff.data.normalize for uint8 images."
            )
        t = jnp.asarray(t)
        if t.ndim != 0 or not jnp.issubdtype(t.dtype, jnp.integer):
            raise ValueError(
                f"t must be an integer scalar in 0..{self.T}, got shape {t.shape} dtype "
                f"{t.dtype}; batch with jax.vmap and pass integer times (not t / T)."
            )
        t = jnp.clip(t.astype(jnp.int32), 0, self.T)
        if self.stochastic:
            if key is None:
                raise ValueError(
                    f"degradation {self.name!r} is stochastic: call it as D(x0, t, key) "
                    "(batched: jax.vmap(degrade)(x0, t, keys))."
                )
            out = self.fn(x0, t, key)
        else:
            out = self.fn(x0, t)
        return jnp.where(t == 0, x0, out.astype(x0.dtype))


# --------------------------------------------------------------------------------------------
# Shared linear-algebra helpers (numpy, built once per size and cached; constants under jit).


@functools.cache
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C`` (``n x n``): ``C @ v`` are the cosine coefficients."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (i + 0.5) * k / n)
    c[0] /= np.sqrt(2.0)
    return c


def _separable(m_h: jax.Array, x: jax.Array, m_w: jax.Array) -> jax.Array:
    """Apply ``M_h X M_w^T`` to every channel of ``x`` ``(H, W, C)``."""
    return jnp.einsum("ij,jkc,lk->ilc", m_h, x, m_w, precision=jax.lax.Precision.HIGHEST)


def _options(**kw: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(kw.items()))


def _check_T(T: int | None, default: int, name: str) -> int:  # noqa: N802, N803
    T = default if T is None else T  # noqa: N806
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"{name}: T must be a positive integer number of steps, got {T!r}.")
    return int(T)


def _tau(t: jax.Array, T: int) -> jax.Array:  # noqa: N803
    return t.astype(jnp.float32) / T


# --------------------------------------------------------------------------------------------
# Gaussian noise: the DDPM forward process in this interface.


def gaussian_noise(
    T: int | None = None,  # noqa: N803
    schedule: str = "linear",
    beta1: float = 1e-4,
    beta2: float = 0.02,
) -> Degradation:
    """The DDPM forward process ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

    Called ``D(x0, t, key)`` with ``eps = normal(key, x0.shape)``; for ``t >= 1`` this equals
    :func:`jaxdiff.schedules.q_sample` with that ``eps`` (``t = 0`` returns ``x0`` exactly,
    the cold-diffusion convention, where the starter's ``abar_0 = 1 - beta1``). Affine in
    ``x0`` only for a fixed key; in :func:`jaxdiff.cold.cold_sample` the key of each
    trajectory is held fixed over all steps (Bansal et al.'s fixed-noise reading).

    Args:
        T: Number of steps (default 1000, the starter's).
        schedule: ``"linear"`` (the starter's) or ``"cosine"``.
        beta1: First beta of the linear schedule.
        beta2: Last beta of the linear schedule.

    Returns:
        The stochastic :class:`Degradation` ``"noise"``.
    """
    T = _check_T(T, DEFAULT_T["noise"], "noise")  # noqa: N806
    sched = make_schedule(schedule, T, beta1, beta2)

    def fn(x0: jax.Array, t: jax.Array, key: jax.Array) -> jax.Array:
        return q_sample(sched, x0, t, jax.random.normal(key, x0.shape, jnp.float32))

    return Degradation(
        "noise",
        T,
        fn,
        linear=False,
        stochastic=True,
        options=_options(schedule=schedule, beta1=float(beta1), beta2=float(beta2)),
        end_state="nearly pure white noise (signal sqrt(abar_T) = "
        f"{float(jnp.sqrt(sched.alpha_bar[T])):.4f})",
    )


# --------------------------------------------------------------------------------------------
# Identity: the control that degrades nothing.


def identity(T: int | None = None) -> Degradation:  # noqa: N803
    """The identity ``D(x0, t) = x0``: a control, not a degradation.

    Trained as a cold process with training noise ``sigma(t)`` (``--noise``), the restorer
    learns to denoise clean images at a growing noise level and the sampler starts from the
    start-state mixture fitted to clean digits. It is the "noise only" control of a cold
    degradation: the same noise, mixture and sampler with nothing degraded, so what a real
    degradation adds over it is what the degradation itself earns.

    Args:
        T: Number of steps (default 50, as melt).

    Returns:
        The :class:`Degradation` ``"identity"`` (affine: trivially).
    """
    T = _check_T(T, DEFAULT_T["identity"], "identity")  # noqa: N806

    def fn(x0: jax.Array, t: jax.Array) -> jax.Array:
        del t
        return x0

    return Degradation("identity", T, fn, linear=True, end_state="the image itself")


# --------------------------------------------------------------------------------------------
# Gaussian blur, one operator per t, exactly diagonal in the DCT basis.


def blur_sigmas(T: int, sigma_min: float = 0.5, sigma_max: float = 20.0) -> np.ndarray:  # noqa: N803
    """The blur schedule: ``sigma_0 = 0``, then log-spaced from ``sigma_min`` to ``sigma_max``.

    Args:
        T: Number of steps.
        sigma_min: Blur width (pixels) at ``t = 1``.
        sigma_max: Blur width (pixels) at ``t = T``.

    Returns:
        ``float32`` array of length ``T + 1``.
    """
    s = np.geomspace(sigma_min, sigma_max, T) if T > 1 else np.array([sigma_max])
    return np.concatenate([[0.0], s]).astype(np.float32)


def blur(
    T: int | None = None,  # noqa: N803
    sigma_min: float = 0.5,
    sigma_max: float = 20.0,
) -> Degradation:
    """Gaussian blur of width ``sigma(t)``, applied as ONE operator per ``t``.

    ``x_t = M_h x0 M_w^T`` with ``M = C^T diag(exp(-sigma(t)^2 w_k^2 / 2)) C``, ``C`` the
    orthonormal DCT-II and ``w_k = pi k / n``: the Gaussian heat kernel with reflecting
    (Neumann) edges, so the mean intensity is preserved exactly and the background never wraps
    around (as in Rissanen et al.'s Inverse Heat Dissipation). Widths are log-spaced
    (:func:`blur_sigmas`), so each step removes a similar share of the remaining detail; the
    cumulative blur is one Gaussian (Bansal et al. iterate a fixed kernel, which composes to
    the same thing). Linear in ``x0``.

    End state (``sigma = 20``): a soft grey blob, the image mean plus the lowest cosine modes
    at <= 8% amplitude. Nearly every digit ends in a similar blob, which is why generation
    needs the start-state mixture of :mod:`jaxdiff.start_states`.

    Args:
        T: Number of steps (default 50).
        sigma_min: Width at ``t = 1`` in pixels.
        sigma_max: Width at ``t = T`` in pixels.

    Returns:
        The :class:`Degradation` ``"blur"``.

    Raises:
        ValueError: For non-positive or decreasing widths.
    """
    T = _check_T(T, DEFAULT_T["blur"], "blur")  # noqa: N806
    if not 0.0 < sigma_min <= sigma_max:
        raise ValueError(f"blur needs 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}.")
    sig2 = jnp.asarray(blur_sigmas(T, sigma_min, sigma_max) ** 2)

    def axis_op(n: int, s2: jax.Array) -> jax.Array:
        c = jnp.asarray(_dct_matrix(n), jnp.float32)
        w2 = jnp.asarray((np.pi * np.arange(n) / n) ** 2, jnp.float32)
        return c.T @ (jnp.exp(-0.5 * s2 * w2)[:, None] * c)

    def fn(x0: jax.Array, t: jax.Array) -> jax.Array:
        h, w, _ = x0.shape
        return _separable(axis_op(h, sig2[t]), x0, axis_op(w, sig2[t]))

    return Degradation(
        "blur",
        T,
        fn,
        linear=True,
        options=_options(sigma_min=float(sigma_min), sigma_max=float(sigma_max)),
        end_state=f"a soft grey blob (Gaussian blur of sigma {sigma_max:g} px)",
    )


# --------------------------------------------------------------------------------------------
# Gaussian-mask fade (inpainting).

FADE_REFERENCE_T = 50
"""``kappa`` is the per-step attenuation at this ``T``; other ``T`` rescale it (same end)."""


@functools.cache
def _fade_masks(
    h: int, w: int, T: int, kappa: float, width_min: float, width_max: float
) -> np.ndarray:
    """Cumulative masks ``m_t = prod_{i<=t} (1 - kappa g_i) ** (50 / T)``, ``(T + 1, h, w)``."""
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    r2 = yy**2 + xx**2
    widths = np.linspace(width_min, width_max, T)
    g = np.exp(-r2[None] / (2.0 * widths[:, None, None] ** 2))
    log_m = np.cumsum(np.log1p(-kappa * g), axis=0) * (FADE_REFERENCE_T / T)
    return np.concatenate([np.ones((1, h, w)), np.exp(log_m)]).astype(np.float32)


def fade(
    T: int | None = None,  # noqa: N803
    kappa: float = 0.2,
    width_min: float = 1.0,
    width_max: float = 16.0,
) -> Degradation:
    """Gaussian-mask fade (Bansal et al.'s inpainting degradation), fading ink to black.

    ``x_t = b + m_t (x0 - b)`` with ``b = -0.5`` (background) and the cumulative mask
    ``m_t = prod_{i=1..t} (1 - kappa exp(-r^2 / (2 w_i^2)))``, ``r`` the distance to the image
    centre and ``w_i`` growing linearly from ``width_min`` to ``width_max``: a soft hole opens
    at the centre and spreads outwards, each pixel's ink decaying geometrically once the hole
    reaches it. For ``T != 50`` each factor is raised to ``50 / T``, so the path from clean to
    fully faded (a Riemann sum of the same integral) does not depend on ``T``. Affine in
    ``x0``.

    End state: black, under 1% of the ink left (faint only far from the centre); the whole
    digit is erased, so every image ends in (nearly) the same state. This is an
    inpainting operator for conditional restoration; unconditional generation from it has
    only the start-state noise to create diversity.

    Args:
        T: Number of steps (default 50).
        kappa: Per-step attenuation at the centre of the hole (at ``T = 50``), in (0, 1).
        width_min: Hole width (pixels) at the first step.
        width_max: Hole width (pixels) at the last step.

    Returns:
        The :class:`Degradation` ``"fade"``.

    Raises:
        ValueError: For ``kappa`` outside (0, 1) or non-positive widths.
    """
    T = _check_T(T, DEFAULT_T["fade"], "fade")  # noqa: N806
    if not 0.0 < kappa < 1.0:
        raise ValueError(f"fade needs 0 < kappa < 1, got {kappa}.")
    if not 0.0 < width_min <= width_max:
        raise ValueError(f"fade needs 0 < width_min <= width_max, got {width_min}, {width_max}.")

    def fn(x0: jax.Array, t: jax.Array) -> jax.Array:
        h, w, _ = x0.shape
        masks = jnp.asarray(_fade_masks(h, w, T, float(kappa), float(width_min), float(width_max)))
        return BACKGROUND + masks[t][:, :, None] * (x0 - BACKGROUND)

    return Degradation(
        "fade",
        T,
        fn,
        linear=True,
        options=_options(
            kappa=float(kappa), width_min=float(width_min), width_max=float(width_max)
        ),
        end_state="black: a Gaussian hole grown from the centre has erased all ink",
    )


# --------------------------------------------------------------------------------------------
# Pixelate (resolution reduction) over nested, centre-aligned dyadic blocks.


def _dyadic_edges(n: int, level: int) -> list[int]:
    """Block edges ``0 < n // 2 + k * 2**level < n`` plus the image borders."""
    c, width = n // 2, 2**level
    return sorted({0, n} | {c + k * width for k in range(-n, n + 1) if 0 < c + k * width < n})


@functools.cache
def _dyadic_projector(n: int, level: int) -> np.ndarray:
    """Orthogonal projector (``n x n``) onto signals constant on blocks of ``2**level`` pixels.

    Block edges sit at ``n // 2 + k * 2**level``, so the partitions are nested across levels
    and centred on the image (MNIST digits are centred); edge blocks may be narrower.
    """
    edges = _dyadic_edges(n, level)
    u = np.zeros((n, len(edges) - 1))
    for j, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        u[a:b, j] = 1.0
    return u @ np.diag(1.0 / u.sum(0)) @ u.T


@functools.cache
def _pixelate_ops(n: int, T: int, levels: int) -> np.ndarray:  # noqa: N803
    """Per-t axis operators ``(T + 1, n, n)``: level ``levels * t / T``, blended linearly.

    Between integer levels ``j`` and ``j + 1`` the operator is ``(1 - f) P_j + f P_{j+1}``;
    nested projectors make the image's variance non-increasing in ``t``.
    """
    if 2**levels >= n:
        raise ValueError(
            f"pixelate: levels={levels} gives blocks of {2**levels} px on a {n}-px axis; "
            f"use levels <= {max(1, math.ceil(math.log2(n)) - 1)}."
        )
    ops = np.empty((T + 1, n, n))
    for t in range(T + 1):
        lam = levels * t / T
        j = min(int(np.floor(lam)), levels)
        f = lam - j
        ops[t] = _dyadic_projector(n, j)
        if f > 0:
            ops[t] = (1.0 - f) * ops[t] + f * _dyadic_projector(n, j + 1)
    return ops.astype(np.float32)


def pixelate(T: int | None = None, levels: int = 3) -> Degradation:  # noqa: N803
    """Resolution reduction: block means over blocks that double in size ``levels`` times.

    The block width grows continuously from 1 px to ``2**levels`` px: at level ``lambda =
    levels * t / T`` the axis operator blends the block-mean projectors of the two nearest
    integer levels, ``(1 - f) P_j + f P_{j+1}``. Block edges sit at ``14 + k 2**j`` (centred,
    nested partitions: 1, 2, 4, 8 px blocks; on 28 px the 8-px level has blocks 6, 8, 8, 6),
    so the image variance never increases with ``t`` and ``x_t`` changes continuously.
    Applied separably (``x_t = P_h x0 P_w^T``, one linear operator per ``t``); block means
    preserve the total ink.

    End state (``levels = 3``): a 4 x 4 mosaic of block means, 16 numbers per digit, which
    still tell a 1 from a 0 and give the start-state mixture a real space to sample from.
    ``levels = 4`` ends in 2 x 2 halves.

    Args:
        T: Number of steps (default 50).
        levels: Number of block doublings (1 to 4 on 28 px).

    Returns:
        The :class:`Degradation` ``"pixelate"``.

    Raises:
        ValueError: If ``levels`` is not a positive integer (or too large for the image,
            when first called).
    """
    T = _check_T(T, DEFAULT_T["pixelate"], "pixelate")  # noqa: N806
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"pixelate needs an integer levels >= 1, got {levels!r}.")

    def fn(x0: jax.Array, t: jax.Array) -> jax.Array:
        h, w, _ = x0.shape
        p_h = jnp.asarray(_pixelate_ops(h, T, int(levels)))[t]
        p_w = jnp.asarray(_pixelate_ops(w, T, int(levels)))[t]
        return _separable(p_h, x0, p_w)

    cells = len(_dyadic_edges(28, int(levels))) - 1
    return Degradation(
        "pixelate",
        T,
        fn,
        linear=True,
        options=_options(levels=int(levels)),
        end_state=f"block means on {2**levels}-px blocks ({cells} x {cells} on 28 x 28 images)",
    )


# --------------------------------------------------------------------------------------------
# Sediment: the custom degradation for handwritten digits.


def _settle_column(ink: jax.Array, s: jax.Array) -> jax.Array:
    """Move one column's ink a fraction ``s`` of the way to a pile at the bottom.

    The column is a mass density on ``[0, n]`` (pixel ``i`` covers ``[i, i + 1]``). The
    ``u``-th unit of mass (counted from the top) sits at ``Q0(u)`` and, settled, at
    ``Q1(u) = n - m + u`` (a solid pile of height ``m``, the column's mass). Displacement
    interpolation (1-D optimal transport) puts it at ``Q_s = (1 - s) Q0 + s Q1``. ``Q_s`` is
    piecewise linear with knots at the pixel edges of ``Q0``, so the new cumulative mass at
    the pixel edges is one ``interp`` and the new pixels are its differences.
    """
    n = ink.shape[0]
    cum = jnp.concatenate([jnp.zeros((1,), ink.dtype), jnp.cumsum(ink)])
    mass = cum[-1]
    edges = jnp.arange(n + 1, dtype=ink.dtype)
    knots = (1.0 - s) * edges + s * (n - mass + cum)
    cdf = jnp.interp(edges, knots, cum)
    return jnp.diff(cdf)


def sediment(T: int | None = None) -> Degradation:  # noqa: N803
    """Ink sedimentation: the digit's ink sinks and settles into a sand pile per column.

    Design. Read each column of a digit as a column of ink in water. Under "gravity" the ink
    sinks and settles at the bottom into a solid pile whose height is the column's ink mass.
    The path is the 1-D optimal-transport (displacement) interpolation between the digit and
    its settled state, ``s = t / T``: the ``u``-th unit of ink moves linearly from its position
    to its place in the pile, order preserved (see :func:`_settle_column`). Consequences:

    * Strokes keep their ink and stay sharp: a solid stroke falls as a solid block (its
      density ``1 / ((1 - s) / rho + s)`` never exceeds 1); only the gaps between strokes
      close, shrinking by ``(1 - s)``. Mid-way a digit looks like it is slumping to the
      floor; no blur, no noise, nothing like Gaussian noise.
    * Total ink of every column is conserved exactly, and every unit of ink only moves down,
      so the ink's centre of mass drops linearly in ``t``: a clean severity measure.
    * Smooth in ``t`` (pixel values are continuous in ``s``), invertible for ``t < T``
      (``Q0 = (Q_s - s Q1) / (1 - s)``) and ever worse conditioned as ``t -> T``: each step
      loses a little more geometry, like blur, but in a digit-shaped way.
    * Well-defined end state: ``D(x0, T)`` is the column-wise "skyline" of ink masses, a
      bar chart whose bars have soft tops. It is idempotent (settled ink stays settled).

    Why it suits digits and gives diversity. MNIST digits are thin strokes on black, so the
    column masses are a compact, informative signature of the digit (a 1 is one tall narrow
    pile, a 0 two piles with a dip, a 7 a wide low pile with a bump under the stem), unlike
    blur or fade whose end states collapse to nearly one image. The skylines of training
    digits form a ~28-dimensional, varied distribution, so drawing start states from a
    mixture fitted to them (:func:`jaxdiff.start_states.fit_start_distribution`, re-settled with
    ``D(., T)``) gives genuinely different start states, from which the restorer "lifts" the
    ink back up into different digits.

    Not affine in ``x0`` (the transport map depends on the image), so Alg. 2 is not exact
    for an imperfect restorer; it is exact with a perfect one. Inputs are read as ink
    ``clip(x0 + 0.5, 0, 1)`` per channel.

    Args:
        T: Number of steps (default 50: the top ink falls at most 28 / 50 px per step).

    Returns:
        The :class:`Degradation` ``"sediment"``.
    """
    T = _check_T(T, DEFAULT_T["sediment"], "sediment")  # noqa: N806

    def fn(x0: jax.Array, t: jax.Array) -> jax.Array:
        ink = jnp.clip(x0.astype(jnp.float32) - BACKGROUND, 0.0, 1.0)
        s = _tau(t, T)
        # vmap over channels (last axis) and columns (axis 1); a column runs along axis 0.
        settle = jax.vmap(jax.vmap(_settle_column, (1, None), 1), (2, None), 2)
        return BACKGROUND + settle(ink, s)

    return Degradation(
        "sediment",
        T,
        fn,
        linear=False,
        end_state="the ink settled at the bottom: one solid pile per column (a skyline)",
    )


def melt(T: int | None = None, sigma_max: float = 4.0, sigma_min: float = 0.3) -> Degradation:  # noqa: N803
    """Melting: the digit slumps to the floor (sediment) while its ink bleeds (heat flow).

    Design. Wet ink on a page that is tipped up: the ink runs down and spreads at the same
    time. ``melt(x0, t) = blur_{sigma(t)}(sediment(x0, t))``: first each column's ink
    settles a fraction ``t / T`` of the way to its pile (:func:`sediment`, the 1-D
    optimal-transport path), then the result is blurred by the reflecting-edge heat kernel
    of width ``sigma(t)``, log-spaced from ``sigma_min`` to ``sigma_max`` (:func:`blur`).
    Ink mass is conserved exactly (both stages conserve it), and the end state is a soft
    "dune" along the bottom edge whose profile is the blurred column-mass skyline.

    Why the two parts. Sediment alone destroys *where* in a column the ink was but keeps
    a sharp skyline; a deterministic restorer from a skyline regresses to the mean of all
    digits that settle into it (this project's measured failure: FD 269 after 6 epochs).
    The heat flow adds what makes Inverse Heat Dissipation generate: its inverse is
    unstable, so the small noise added along a stochastic reverse process
    (:func:`jaxdiff.cold.cold_sample` with ``noise``) is amplified into structure instead of
    being averaged away, and the end state is nearly one low-dimensional family that a
    Gaussian mixture fits well. Unlike blur alone, the path moves mass downwards, so the
    digit's vertical layout has to be re-invented from a dune, not a blob.

    Not affine in ``x0`` (the sediment stage is not). Inputs are read as ink
    ``clip(x0 + 0.5, 0, 1)`` per channel.

    Args:
        T: Number of steps (default 50).
        sigma_max: Blur width in pixels at ``t = T``.
        sigma_min: Blur width in pixels at ``t = 1``.

    Returns:
        The :class:`Degradation` ``"melt"``.

    Raises:
        ValueError: For non-positive or decreasing widths.
    """
    T = _check_T(T, DEFAULT_T["melt"], "melt")  # noqa: N806
    settle = sediment(T).fn
    bleed = blur(T, sigma_min, sigma_max).fn

    def fn(x0: jax.Array, t: jax.Array) -> jax.Array:
        return bleed(settle(x0, t), t)

    opts = _options(sigma_min=float(sigma_min), sigma_max=float(sigma_max))
    end = f"a soft dune along the bottom: the settled skyline blurred by {sigma_max:g} px"
    return Degradation("melt", T, fn, linear=False, options=opts, end_state=end)


# --------------------------------------------------------------------------------------------
# Registry.

#: Each registered degradation's factory and default number of steps.
_REGISTRY: dict[str, tuple[Callable[..., Degradation], int]] = {
    "noise": (gaussian_noise, 1000),
    "identity": (identity, 50),
    "blur": (blur, 50),
    "fade": (fade, 50),
    "pixelate": (pixelate, 50),
    "sediment": (sediment, 50),
    "melt": (melt, 50),
}
DEFAULT_T: dict[str, int] = {name: t for name, (_, t) in _REGISTRY.items()}
"""Default number of steps per registered degradation."""
DEGRADATIONS: dict[str, Callable[..., Degradation]] = {n: f for n, (f, _) in _REGISTRY.items()}
"""Registered degradation factories: ``name -> factory(T=None, **options)``."""

DEFAULT_DEGRADATION = "melt"
"""The project's custom degradation, the default of the cold experiment."""


PLUGIN_DEFAULT_T = 50
"""``T`` of a plug-in factory that returns a plain function and is given none."""


def is_plugin(name: str) -> bool:
    """Whether ``name`` names a user's factory (``"package.module:factory"``), not a built-in."""
    return ":" in name


def _load_plugin(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:factory"`` and return the factory, or one clear error."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(
            f"degradation {spec!r}: write a user's degradation as 'package.module:factory'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"degradation {spec!r}: cannot import {module_name!r} ({err}); put its folder on "
            "PYTHONPATH or install it."
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"degradation {spec!r}: {module_name} has no callable {attr!r}.")
    return factory


def _plugin(spec: str, T: int | None, **options: Any) -> Degradation:  # noqa: N803
    """Build a user's degradation from its factory (see :func:`get_degradation`)."""
    factory = _load_plugin(spec)
    try:
        made = factory(T, **options) if T is not None else factory(**options)
    except TypeError as err:
        raise ValueError(
            f"degradation {spec!r}: calling its factory with T={T} and options {options} "
            f"failed ({err}); a factory takes (T=None, **options)."
        ) from None
    if isinstance(made, Degradation):
        if T is not None and made.T != T:
            raise ValueError(f"degradation {spec!r}: asked for T={T}, its factory made T={made.T}.")
        return dataclasses.replace(made, name=spec, options=_options(**options))
    if callable(made):
        T = _check_T(T, PLUGIN_DEFAULT_T, spec)  # noqa: N806
        return Degradation(spec, T, made, linear=False, options=_options(**options))
    raise ValueError(
        f"degradation {spec!r}: its factory returned {type(made).__name__}; return a "
        "jaxdiff.degradations.Degradation or a function (x0, t) -> x_t."
    )


def _check_name(name: str) -> None:
    if is_plugin(name):
        _load_plugin(name)
        return
    if name not in DEGRADATIONS:
        raise ValueError(
            f"unknown degradation {name!r}; choose one of {', '.join(sorted(DEGRADATIONS))}, "
            "or name your own factory as 'package.module:factory'."
        )


def default_T(name: str) -> int:  # noqa: N802
    """The default number of steps of a registered degradation or a user's factory.

    Args:
        name: Registry name, or ``"package.module:factory"``.

    Returns:
        The ``T`` the factory uses when none is given.

    Raises:
        ValueError: For an unknown name (the message lists the registered ones).
    """
    _check_name(name)
    if is_plugin(name):
        return _plugin(name, None).T
    return DEFAULT_T[name]


def get_degradation(name: str, T: int | None = None, **options: Any) -> Degradation:  # noqa: N803
    """Build a registered degradation, or a user's own, by name.

    A user's degradation needs no edit of jaxdiff: name its factory as
    ``"package.module:factory"`` (importable, e.g. a file on ``PYTHONPATH``). The factory
    takes ``(T=None, **options)`` and returns either a :class:`Degradation` (to declare
    ``linear`` or ``stochastic``) or a plain per-example function ``(x0, t) -> x_t``
    (deterministic, not affine, ``T`` default :data:`PLUGIN_DEFAULT_T`). Run
    :func:`check` on it first: it names every property the function breaks.

    Args:
        name: One of :data:`DEGRADATIONS` (the table of this module's docstring), or
            ``"package.module:factory"``.
        T: Number of steps; ``None`` for the degradation's default (:func:`default_T`).
        **options: Factory options (see each factory).

    Returns:
        The :class:`Degradation` (a user's is named by its ``"module:factory"`` string, so
        a run's config records how to rebuild it).

    Raises:
        ValueError: For an unknown name, a module that does not import, a bad ``T`` or an
            unknown option.
    """
    _check_name(name)
    if is_plugin(name):
        return _plugin(name, T, **options)
    factory = DEGRADATIONS[name]
    allowed = [p for p in inspect.signature(factory).parameters if p != "T"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"degradation {name!r} has no option(s) {unknown}; its options are {allowed or 'none'}."
        )
    return factory(T, **options)


def degradation_strip(
    degrade: Degradation, x0: jax.Array, ts: Any, key: jax.Array | None = None
) -> jax.Array:
    """Degrade several images at several times (for a figure of ``D(x0, t)`` across ``t``).

    Args:
        degrade: The degradation.
        x0: Images ``(n, H, W, C)`` in the model scale.
        ts: Integer times, a sequence or 1-D array of length ``k``.
        key: PRNG key (stochastic degradations only; image ``i`` uses ``fold_in(key, i)``
            at every ``t``, so a strip shows one noise draw growing).

    Returns:
        Array ``(n, k, H, W, C)``: row ``i`` is ``[D(x0[i], t) for t in ts]``.

    Raises:
        ValueError: If ``x0`` is not a batch of images or a needed key is missing.
    """
    x0 = jnp.asarray(x0)
    if x0.ndim != 4:
        raise ValueError(f"x0 must be a batch (n, H, W, C), got shape {x0.shape}.")
    ts = jnp.asarray(np.asarray(ts, dtype=np.int32))
    if ts.ndim != 1:
        raise ValueError(f"ts must be a 1-D sequence of integer times, got shape {ts.shape}.")
    if degrade.stochastic and key is None:
        raise ValueError(f"degradation {degrade.name!r} is stochastic: pass a key.")
    return _strip(degrade, x0, ts, key)


@functools.partial(jax.jit, static_argnames=("degrade",))
def _strip(degrade: Degradation, x0: jax.Array, ts: jax.Array, key: jax.Array | None):
    if degrade.stochastic:
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x0.shape[0]))
        per_t = jax.vmap(degrade, (None, 0, None))
        return jax.vmap(per_t, (0, None, 0))(x0, ts, keys)
    return jax.vmap(jax.vmap(degrade, (None, 0)), (0, None))(x0, ts)


# --------------------------------------------------------------------------------------------
# The contract a degradation must keep, checked (for users' own degradations).


class DegradationContractError(ValueError):
    """A degradation breaks the contract of this module; the message lists each failure."""


def _contract_images() -> jax.Array:
    """Four synthetic 28 x 28 'digits' in the model scale (no data needed): ring, bar, cross, L."""
    yy, xx = np.mgrid[:28, :28].astype(np.float32)
    r = np.hypot(yy - 13.5, xx - 13.5)
    ring = np.abs(r - 8) < 1.6
    bar = (np.abs(xx - 14) < 1.6) & (yy > 4) & (yy < 24)
    cross = (np.abs(xx - yy) < 1.6) | (np.abs(xx + yy - 27) < 1.6)
    ell = ((np.abs(xx - 9) < 1.6) & (yy > 5) & (yy < 23)) | ((np.abs(yy - 22) < 1.6) & (xx > 8))
    ink = np.stack([ring, bar, cross & (r < 10), ell]).astype(np.float32)
    return jnp.asarray(ink[..., None] - 0.5)


class _Probe(NamedTuple):
    """A degradation under test, its test images and keys, batched and raw calls."""

    deg: Degradation
    x0: jax.Array
    keys: jax.Array

    def batched(self, x: jax.Array, t: jax.Array, keys: jax.Array | None = None) -> jax.Array:
        k = self.keys if keys is None else keys
        return jax.vmap(self.deg)(x, t, k) if self.deg.stochastic else jax.vmap(self.deg)(x, t)

    def raw(self, t: int) -> jax.Array:
        tt = jnp.asarray(t, jnp.int32)
        x, k = self.x0[0], self.keys[0]
        return self.deg.fn(x, tt, k) if self.deg.stochastic else self.deg.fn(x, tt)

    def full(self, t: int) -> jax.Array:
        return jnp.full((self.x0.shape[0],), t, jnp.int32)


def _rms(a: Any) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.square(a))))


def _check_call(pr: _Probe) -> list[str]:
    """One image in: shape and dtype kept; nothing moved at ``t = 0``."""
    x = pr.x0[0]
    for t in (1, pr.deg.T):
        out = pr.raw(t)
        if out.shape != x.shape or out.dtype != x.dtype:
            return [
                f"shape/dtype: D(x0, {t}) has shape {out.shape} dtype {out.dtype}; it must "
                f"keep the input's {x.shape} {x.dtype}."
            ]
    called0 = pr.deg(x, 0, pr.keys[0]) if pr.deg.stochastic else pr.deg(x, 0)
    gap0 = float(jnp.max(jnp.abs(called0 - x)))
    jump0, step1 = _rms(pr.raw(0) - x), _rms(pr.raw(1) - x)
    if not gap0 <= 1e-6:
        return [f"identity at t = 0: max |D(x0, 0) - x0| = {gap0:.3g}; it must be 0."]
    if not jump0 <= step1 + 1e-5:
        return [
            f"identity at t = 0: the raw function moves x0 by {jump0:.3g} (RMS) at t = 0, more "
            f"than at t = 1 ({step1:.3g}); D(x0, 0) must be x0, and the first step small."
        ]
    return []


def _check_pure(pr: _Probe) -> list[str]:
    """``jit(vmap(D))`` with traced times equals one image at a time, and repeats itself."""
    n, T = pr.x0.shape[0], pr.deg.T  # noqa: N806
    t_mixed = jnp.asarray(np.resize(np.array([T, 1, T // 2, 0]), n), jnp.int32)
    compiled = jax.jit(pr.batched)
    jitted = np.asarray(compiled(pr.x0, t_mixed))
    loop = np.stack([np.asarray(pr.deg(pr.x0[i], int(t_mixed[i]), pr.keys[i])) for i in range(n)])
    fails = []
    if not np.allclose(jitted, loop, atol=1e-4):
        fails.append(
            "pure under jit and vmap: jit(vmap(D)) differs from D one image at a time by "
            f"{np.abs(jitted - loop).max():.3g}; D must depend only on (x0, t) and its key."
        )
    if not np.array_equal(jitted, np.asarray(compiled(pr.x0, t_mixed))):
        fails.append("deterministic: two identical calls gave different results.")
    return fails


def _check_severity(pr: _Probe, per_t: np.ndarray) -> list[str]:
    """The RMS distance from ``x0`` grows with ``t`` (10% slack per step) and is nonzero."""
    dist = np.sqrt(((per_t - np.asarray(pr.x0)[None]) ** 2).mean(axis=(2, 3, 4)))  # (T + 1, n)
    end = dist[-1]
    drops = (-np.diff(dist, axis=0) / np.maximum(end, 1e-12)).max()
    if end.mean() <= 1e-4:
        return ["severity: D(x0, T) equals x0; the end state must be degraded."]
    if drops > 0.1 or np.any(end < dist[1]):
        return [
            "severity grows with t: the RMS distance of D(x0, t) from x0 falls by "
            f"{100 * drops:.0f}% of its final value between two steps (at most 10% allowed), "
            "or ends below its value at t = 1; later t must degrade at least as much."
        ]
    return []


def _check_declared(pr: _Probe, per_t: np.ndarray, key: jax.Array) -> list[str]:
    """A stochastic degradation uses its key; a linear one is affine in ``x0``."""
    fails, n, T = [], pr.x0.shape[0], pr.deg.T  # noqa: N806
    if pr.deg.stochastic:
        other = pr.batched(pr.x0, pr.full(T), jax.random.split(jax.random.fold_in(key, 1), n))
        if np.allclose(np.asarray(other), per_t[-1], atol=1e-6):
            fails.append(
                "key: declared stochastic, but another key gives the same D(x0, T); "
                "declare it deterministic (stochastic=False) or use the key."
            )
    if pr.deg.linear:
        y, tt = jnp.roll(pr.x0, 1, axis=0), pr.full(max(1, T // 2))
        mix = np.asarray(pr.batched(0.3 * pr.x0 + 0.7 * y, tt))
        lin = 0.3 * np.asarray(pr.batched(pr.x0, tt)) + 0.7 * np.asarray(pr.batched(y, tt))
        if not np.allclose(mix, lin, atol=1e-4):
            fails.append(
                "linear: declared affine in x0, but D(a x + (1 - a) y) differs from "
                f"a D(x) + (1 - a) D(y) by {np.abs(mix - lin).max():.3g}; set linear=False."
            )
    return fails


def _guarded(what: str, check_fn: Callable[[], list[str]]) -> tuple[list[str], bool]:
    """Run one check; a user's function may raise anything: that is a failure, not a crash."""
    try:
        return check_fn(), True
    except Exception as err:  # noqa: BLE001
        return [f"{what}: calling D raised {type(err).__name__}: {err}"], False


def _contract_failures(deg: Degradation, x0: jax.Array, key: jax.Array) -> list[str]:
    """Every broken property of ``deg`` on ``x0`` (``(n, H, W, C)``), as messages."""
    pr = _Probe(deg, x0, jax.random.split(key, x0.shape[0]))
    fails, ok = _guarded("call on one (H, W, C) image", lambda: _check_call(pr))
    if not ok or any(f.startswith("shape/dtype") for f in fails):
        return fails
    per_t = []
    more, ok = _guarded(
        "vmap",
        lambda: (
            per_t.append(np.stack([pr.batched(x0, pr.full(t)) for t in range(deg.T + 1)])) or []
        ),
    )
    if not ok:
        return fails + more
    if not np.all(np.isfinite(per_t[0])):
        bad = sorted({int(t) for t in np.nonzero(~np.isfinite(per_t[0]))[0]})[:5]
        return [*fails, f"finite: D(x0, t) has NaN or inf values at t = {bad}."]
    more, ok = _guarded("jit with a traced t", lambda: _check_pure(pr))
    fails += more
    fails += _check_severity(pr, per_t[0])
    fails += _guarded("declared properties", lambda: _check_declared(pr, per_t[0], key))[0]
    return fails


def check(degrade: Degradation, x0: Any | None = None, key: jax.Array | None = None) -> Degradation:
    """Check that a degradation keeps this module's contract (run it on your own).

    Properties, each reported with its own message: ``D(x0, 0) = x0``; shape and dtype
    kept; finite at every ``t``; pure under ``jit`` and ``vmap`` (batched, traced ``t``
    equals one image at a time) and deterministic for a fixed key; severity (RMS distance
    from ``x0``) growing with ``t`` and nonzero at ``T``; a key used only where the
    degradation is stochastic (a stochastic one must change with its key); and, where
    declared ``linear``, affine in ``x0``.

    Args:
        degrade: A :class:`Degradation` (e.g. ``get_degradation("pkg.mod:factory")``).
        x0: Test images ``(n, H, W, C)``, model scale; default four synthetic strokes.
        key: PRNG key for stochastic degradations (default ``PRNGKey(0)``).

    Returns:
        ``degrade`` itself, so ``check(get_degradation(spec))`` can be used inline.

    Raises:
        DegradationContractError: Listing every property that fails.
        TypeError: If ``degrade`` is not a :class:`Degradation`.
    """
    if not isinstance(degrade, Degradation):
        raise TypeError(
            f"check takes a jaxdiff.degradations.Degradation, got {type(degrade).__name__}; "
            "wrap a function as Degradation(name, T, fn, linear=False)."
        )
    x0 = _contract_images() if x0 is None else jnp.asarray(x0, jnp.float32)
    if x0.ndim != 4 or x0.shape[0] < 2:
        raise ValueError(f"x0 must be a batch of at least 2 images (n, H, W, C), got {x0.shape}.")
    fails = _contract_failures(degrade, x0, jax.random.PRNGKey(0) if key is None else key)
    if fails:
        lines = "\n".join(f"  - {f}" for f in fails)
        raise DegradationContractError(
            f"degradation {degrade.name!r} breaks {len(fails)} propert"
            f"{'y' if len(fails) == 1 else 'ies'} of the contract:\n{lines}"
        )
    return degrade
