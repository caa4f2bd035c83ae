"""The study's recipes as code: named functions that return a :class:`~jaxdiff.config.Config`.

Each recipe is the exact configuration one of the study's runs trained with, and the
defaults of a driver come from one of them (``experiments/ddpm.py``: :func:`starter`;
``experiments/cold.py``: :func:`melt`). Any field can be changed by keyword; names are unique
across the config's three sections, so ``starter(epochs=1, limit=2048, hidden=(8, 8))``
routes each to its place::

    from jaxdiff import recipes

    cfg = recipes.melt(epochs=2, seed=1)
    cfg = recipes.get("gaussian_unet_tuned", lr=1e-3)

A new recipe is one function here plus one line in :data:`RECIPES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig

MNIST_TRAIN_SIZE = 60000
"""Images in MNIST's training set (an epoch's size unless ``limit`` cuts it)."""

_SECTIONS = {"model": ModelConfig, "process": ProcessConfig, "train": TrainConfig}


def steps_per_epoch(train: TrainConfig) -> int:
    """Optimizer steps in one epoch: the (limited) training set over the batch, rounded down."""
    return min(train.limit or MNIST_TRAIN_SIZE, MNIST_TRAIN_SIZE) // train.batch_size


def scaled_warmup(train: TrainConfig, default: int) -> int:
    """A recipe's warm-up, shortened for short runs: ``default`` or a tenth of all steps.

    Args:
        train: The run's training settings (epochs, batch size, limit).
        default: The recipe's warm-up for a full-length run.

    Returns:
        ``min(default, total_steps // 10)``: a quick one-epoch try on a subset of the data
        warms up over a tenth of its few steps instead of failing on the default.
    """
    return min(default, steps_per_epoch(train) * train.epochs // 10)


def override(cfg: Config, **changes: Any) -> Config:
    """Return ``cfg`` with fields changed by name, whichever section holds them.

    Args:
        cfg: A config.
        **changes: ``field=value`` for fields of ``ModelConfig``, ``ProcessConfig`` or
            ``TrainConfig`` (their names are unique across the three).

    Returns:
        The new config.

    Raises:
        ValueError: For a name no section has (the message lists them).
    """
    parts = {name: {} for name in _SECTIONS}
    for key, value in changes.items():
        owner = [n for n, k in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(k)}]
        if not owner:
            known = sorted(f.name for k in _SECTIONS.values() for f in dataclasses.fields(k))
            raise ValueError(f"no config field {key!r}; the fields are {', '.join(known)}.")
        parts[owner[0]][key] = tuple(value) if key == "hidden" else value
    return Config(**{n: dataclasses.replace(getattr(cfg, n), **kw) for n, kw in parts.items()})


def _finish(cfg: Config, warmup: int, changes: dict[str, Any]) -> Config:
    """Apply a caller's changes, then scale the recipe's warm-up unless they set one."""
    cfg = override(cfg, **changes)
    if "warmup_steps" not in changes:
        cfg = override(cfg, warmup_steps=scaled_warmup(cfg.train, warmup))
    return cfg


def starter(**changes: Any) -> Config:
    """The course's PyTorch starter, exactly (SPEC section 2): the first Q1 recipe.

    CNN 16-32-32-16 (7x7 kernels, LayerNorm over each 28x28 plane, GELU), linear betas
    1e-4..0.02 with T = 1000, epsilon loss; Adam 2e-4, batch 128, 100 epochs, fp32, no EMA,
    no clipping, no warm-up.

    Args:
        **changes: Fields to change (see :func:`override`).

    Returns:
        The config (``experiments/ddpm.py``'s defaults).
    """
    cfg = Config(
        model=ModelConfig(name="cnn", hidden=(16, 32, 32, 16), precision="fp32"),
        process=ProcessConfig(kind="ddpm", T=1000, schedule="linear", beta1=1e-4, beta2=0.02),
        train=TrainConfig(lr=2e-4, batch_size=128, epochs=100),
    )
    return _finish(cfg, 0, changes)


def starter_alt(**changes: Any) -> Config:
    """The second Q1 recipe: the starter with Adam 1e-3 and an EMA of 0.999, 50 epochs.

    Args:
        **changes: Fields to change (see :func:`override`).

    Returns:
        The config of the study's ``q1_alt`` run.
    """
    return override(starter(), lr=1e-3, ema_decay=0.999, epochs=50, **changes)


def _unet_training(**train: Any) -> tuple[ModelConfig, TrainConfig]:
    """The Q2 UNet (32-64-64, bf16) and its optimiser: batch 64, Adam 1e-3, cosine, EMA."""
    model = ModelConfig(name="unet", hidden=(32, 64, 64), precision="bf16")
    base = TrainConfig(
        lr=1e-3, batch_size=64, epochs=10, ema_decay=0.999, grad_clip=1.0, lr_schedule="cosine"
    )
    return model, dataclasses.replace(base, **train)


def melt(**changes: Any) -> Config:
    """Q2's custom degradation: melt, restored by a UNet (``experiments/cold.py``'s defaults).

    The digit's ink settles down its columns while it blurs to 4 px (T = 50); the UNet is
    trained with an L2 loss on ``D(x0, t) + sigma(t) z``, ``sigma`` linear to 0.3, and sampled
    with Bansal's Alg. 2 from a Gaussian mixture fitted to melted training digits. Batch 64,
    Adam 1e-3 with a 500-step warm-up and cosine decay, EMA 0.999, clip 1, 10 epochs, bf16.

    Args:
        **changes: Fields to change (see :func:`override`).

    Returns:
        The config.
    """
    model, train = _unet_training()
    process = ProcessConfig(
        kind="cold", T=50, degradation="melt", loss="l2", noise=0.3, noise_schedule="linear"
    )
    return _finish(Config(model=model, process=process, train=train), 500, changes)


def gaussian_unet(**changes: Any) -> Config:
    """The Gaussian DDPM counterpart of :func:`melt`, untuned: the same UNet and training.

    Epsilon prediction, linear betas, T = 1000, no loss weighting (the study's first
    ``q2_gaussian`` run).

    Args:
        **changes: Fields to change (see :func:`override`).

    Returns:
        The config.
    """
    model, train = _unet_training()
    return _finish(
        Config(model=model, process=ProcessConfig(kind="ddpm"), train=train), 500, changes
    )


def gaussian_unet_tuned(**changes: Any) -> Config:
    """The Gaussian DDPM at the ablation's best settings: v-prediction, Min-SNR-5, lr 2e-3.

    Batch 64 as :func:`melt`; the learning rate 2e-3 won a 2-epoch check against 1e-3
    (``results/q2_evidence.md``).

    Args:
        **changes: Fields to change (see :func:`override`).

    Returns:
        The config.
    """
    model, train = _unet_training(lr=2e-3)
    process = ProcessConfig(kind="ddpm", prediction="v", weighting="min_snr")
    return _finish(Config(model=model, process=process, train=train), 500, changes)


RECIPES: dict[str, Callable[..., Config]] = {
    "starter": starter,
    "starter_alt": starter_alt,
    "melt": melt,
    "gaussian_unet": gaussian_unet,
    "gaussian_unet_tuned": gaussian_unet_tuned,
}
"""Every recipe by name."""


def get(name: str, **changes: Any) -> Config:
    """A recipe's config by name.

    Args:
        name: One of :data:`RECIPES`.
        **changes: Fields to change (see :func:`override`).

    Returns:
        The config.

    Raises:
        ValueError: For an unknown name (the message lists the recipes).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    return RECIPES[name](**changes)
