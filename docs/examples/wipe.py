"""A user's own degradation for ``cold.py``: the digit is wiped away from left to right.

Nothing in jaxdiff is edited. Put this file's folder on ``PYTHONPATH`` and name the factory:

    PYTHONPATH=docs/examples python experiments/cold.py --degradation wipe:wipe

The factory takes ``(T=None, **options)`` and returns a :class:`Degradation` (which declares
whether the operator is affine) or a plain function ``(x0, t) -> x_t``; options come from
``--degradation-option NAME=VALUE``. Check it before training (``cold.py`` does too):

    from jaxdiff.degradations import check, get_degradation
    check(get_degradation("wipe:wipe", softness=2.0))
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdiff.degradations import Degradation

BACKGROUND = -0.5  # the model scale's black


def wipe(T: int | None = None, softness: float = 1.5) -> Degradation:  # noqa: N803
    """A soft-edged eraser sweeps across the image, left to right, over ``T`` steps.

    Args:
        T: Number of steps (default 28: one column per step).
        softness: Width of the eraser's edge in pixels.

    Returns:
        The degradation (affine in ``x0``: ``m_t * x0 + (1 - m_t) * background``).
    """
    T = 28 if T is None else T  # noqa: N806

    def fn(x0: jax.Array, t: jax.Array) -> jax.Array:
        width = x0.shape[1]
        edge = (width + 2 * softness) * t / T - softness  # the eraser's position in pixels
        columns = jnp.arange(width, dtype=jnp.float32) + 0.5
        keep = jax.nn.sigmoid((columns - edge) / (softness / 4))  # 1: untouched, 0: erased
        keep = jnp.where(t == T, 0.0, keep)[None, :, None]
        return keep * x0 + (1.0 - keep) * BACKGROUND

    return Degradation("wipe", T, fn, linear=True, end_state="a blank (black) image")


def wipe_plain(T: int | None = None) -> Callable[[jax.Array, jax.Array], jax.Array]:  # noqa: N803
    """The same eraser as a plain function (jaxdiff wraps it: deterministic, not affine)."""
    return wipe(T or 50).fn
