"""Every sampler behind one interface, in one registry.

A sampler is ``draw(pieces, params, key, n, options) -> x`` with ``x`` the ``n`` samples
``(n, 28, 28, 1)`` in the model scale: ``pieces`` is a run's assembly
(:class:`jaxdiff.pipeline.Pieces`, which knows its config), ``options`` a
:class:`SamplerOptions`. :data:`SAMPLERS` maps each name to a :class:`Sampler`;
:func:`jaxdiff.pipeline.generate`, the drivers' ``--sampler`` flag and the API docs read it.
The scans themselves live beside their maths (:mod:`jaxdiff.sampling` for DDPM,
:mod:`jaxdiff.cold` for cold diffusion), where they also return trajectories for figures.

A new sampler is one function of that signature and one :func:`register` call::

    def my_draw(pieces, params, key, n, options):
        ...
        return x

    register(Sampler("mine", "ddpm", my_draw, lambda cfg: 50, "my sampler"))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jaxdiff.config import Config
from jaxdiff.sampling import CLIP_RANGES, ddim_sample, ddpm_sample, dpmpp_sample

SHAPE = (28, 28, 1)
"""One MNIST image, channels last."""


class SamplerOptions(NamedTuple):
    """The options a sampler may read (each ignores those that do not apply to it).

    Attributes:
        steps: Network evaluations / reverse steps (``None``: the sampler's default).
        eta: DDIM's stochasticity.
        clip: DDIM / DPM-Solver++: clip each predicted clean image, ``"wide"`` ([-1, 1]) or
            ``"data"`` ([-0.5, 0.5]); ``None`` for no clipping.
        noise: Cold: step noise of the reverse process (``None``: the run's own).
        start: Cold: ``start(key, n) -> x_T`` start states (required by cold samplers).
    """

    steps: int | None = None
    eta: float = 0.0
    clip: str | None = None
    noise: float | None = None
    start: Callable[[jax.Array, int], jax.Array] | None = None


Draw = Callable[[Any, Any, jax.Array, int, SamplerOptions], jax.Array]


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A registered sampler.

    Attributes:
        name: Registry name (``--sampler NAME``).
        kind: The process it samples: ``"ddpm"`` or ``"cold"``.
        draw: ``draw(pieces, params, key, n, options) -> (n, 28, 28, 1)``.
        default_steps: ``default_steps(cfg) -> int``, the steps used when none are given.
        summary: One line for ``--help`` and the docs.
        clips: Whether it takes ``options.clip``.
    """

    name: str
    kind: str
    draw: Draw
    default_steps: Callable[[Config], int]
    summary: str
    clips: bool = False


SAMPLERS: dict[str, Sampler] = {}
"""Every sampler by name, in registration order."""


def register(sampler: Sampler) -> Sampler:
    """Add a sampler to :data:`SAMPLERS` (a name may be registered once).

    Args:
        sampler: The sampler.

    Returns:
        It, unchanged.

    Raises:
        ValueError: If the name is taken or the kind unknown.
    """
    if sampler.name in SAMPLERS:
        raise ValueError(f"a sampler named {sampler.name!r} is already registered.")
    if sampler.kind not in ("ddpm", "cold"):
        raise ValueError(f"sampler kind must be 'ddpm' or 'cold', got {sampler.kind!r}.")
    SAMPLERS[sampler.name] = sampler
    return sampler


def get_sampler(name: str, cfg: Config, options: SamplerOptions | None = None) -> Sampler:
    """The sampler ``name`` for a run, checked against its process and the options.

    Args:
        name: A name in :data:`SAMPLERS`.
        cfg: The run's config.
        options: The options it will be called with (checked: clipping, start states).

    Returns:
        The :class:`Sampler`.

    Raises:
        ValueError: For an unknown name, one that does not fit the run's process, clipping
            asked of a sampler that does not clip, or a cold sampler without start states.
    """
    fits = [s for s in SAMPLERS.values() if s.kind == cfg.process.kind]
    names = ", ".join(s.name for s in fits)
    if name not in SAMPLERS or SAMPLERS[name].kind != cfg.process.kind:
        raise ValueError(f"sampler {name!r} does not fit a {cfg.process.kind} run; use {names}.")
    sampler, options = SAMPLERS[name], options or SamplerOptions()
    if options.clip is not None:
        if not sampler.clips:
            clipping = ", ".join(s.name for s in SAMPLERS.values() if s.clips)
            raise ValueError(f"clipping x0 (--clip-x0) applies to {clipping}, not {name!r}.")
        if options.clip not in CLIP_RANGES:
            raise ValueError(f"--clip-x0 {options.clip!r} unknown; use {sorted(CLIP_RANGES)}.")
    if sampler.kind == "cold" and options.start is None:
        raise ValueError("cold sampling needs start states: options.start(key, n) -> x_T.")
    return sampler


def default_sampler(cfg: Config) -> str:
    """The sampler a run uses unless told otherwise.

    DDPM: the starter's ancestral sampler. Cold: Bansal's Alg. 2, which for a noise level
    that grows with ``t`` rescales the carried residual (the DDIM-like reading; measured
    best for melt); with IHDM's constant training noise, Alg. 1 with fresh step noise.

    Args:
        cfg: The run's config.

    Returns:
        A name in :data:`SAMPLERS`.
    """
    p = cfg.process
    if p.kind == "ddpm":
        return "ancestral"
    return "cold1" if p.noise > 0 and p.noise_schedule == "constant" else "cold2"


def cold_noise_tables(cfg: Config, noise: float | None = None) -> tuple[Any, Any]:
    """A cold run's reverse-process noise: ``(step_noise, residual_sigmas)`` per step.

    Args:
        cfg: A cold run's config.
        noise: Step noise level (default: the run's ``process.sample_noise``).

    Returns:
        The fresh step noise (``T + 1`` levels on the run's noise schedule) and, for a
        noise level that grows with ``t``, the training noise levels by which Alg. 2
        rescales its carried residual (``None`` for a constant schedule).
    """
    from jaxdiff.cold import noise_levels

    p = cfg.process
    step_noise = noise_levels(p.T, p.sample_noise if noise is None else noise, p.noise_schedule)
    residual = (
        None if p.noise_schedule == "constant" else noise_levels(p.T, p.noise, p.noise_schedule)
    )
    return step_noise, residual


def _clip(options: SamplerOptions) -> tuple[float, float] | None:
    return None if options.clip is None else CLIP_RANGES[options.clip]


def _ancestral(pieces, params, key, n, options):
    x, _ = ddpm_sample(pieces.apply_fn, params, pieces.sched, key, (n, *SHAPE))
    return x


def _ddim(pieces, params, key, n, options):
    steps = options.steps or 100
    x, _ = ddim_sample(
        pieces.apply_fn,
        params,
        pieces.sched,
        key,
        (n, *SHAPE),
        steps,
        options.eta,
        clip=_clip(options),
    )
    return x


def _dpmpp(pieces, params, key, n, options):
    steps = options.steps or 20
    return dpmpp_sample(
        pieces.apply_fn, params, pieces.sched, key, (n, *SHAPE), steps, clip=_clip(options)
    )


def _split_start(options: SamplerOptions, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """The start states of a batch (from ``split(key)[0]``) and the key of its reverse process."""
    k_start, k_rest = jax.random.split(key)
    return options.start(k_start, n), k_rest


def _cold(algorithm: int) -> Draw:
    def draw(pieces, params, key, n, options):
        from jaxdiff.cold import cold_sample

        cfg = pieces.cfg
        step_noise, residual = cold_noise_tables(cfg, options.noise)
        x_T, k = _split_start(options, key, n)  # noqa: N806
        return cold_sample(
            pieces.apply_fn,
            params,
            pieces.degrade,
            x_T,
            cfg.process.T,
            algorithm,
            steps=options.steps,
            key=k,
            noise=step_noise,
            residual_sigmas=residual,
        )

    return draw


def _start_only(pieces, params, key, n, options):
    return _split_start(options, key, n)[0]


def _process_T(cfg: Config) -> int:  # noqa: N802
    return cfg.process.T


register(
    Sampler(
        "ancestral",
        "ddpm",
        _ancestral,
        _process_T,
        "the starter's sampler (Prince Alg. 18.2), T steps",
    )
)
register(
    Sampler(
        "ddim",
        "ddpm",
        _ddim,
        lambda cfg: 100,
        "DDIM (eta 0: deterministic), default 100 steps",
        clips=True,
    )
)
register(
    Sampler(
        "dpmpp", "ddpm", _dpmpp, lambda cfg: 20, "DPM-Solver++(2M), default 20 steps", clips=True
    )
)
register(Sampler("cold1", "cold", _cold(1), _process_T, "Bansal et al.'s Alg. 1 (naive), T steps"))
register(
    Sampler("cold2", "cold", _cold(2), _process_T, "Bansal et al.'s Alg. 2 (improved), T steps")
)
register(
    Sampler(
        "start",
        "cold",
        _start_only,
        lambda cfg: 0,
        "the start states themselves, no restorer (a control)",
    )
)
