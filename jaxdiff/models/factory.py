"""Build a network from a :class:`~jaxdiff.config.ModelConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxdiff.config import ModelConfig
from jaxdiff.models.cnn import CNN

PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the network a config describes.

    Args:
        cfg: The model config.

    Returns:
        A stateless Linen module called as ``module.apply(params, x, t_frac)``.

    Raises:
        ValueError: For an unknown model name or precision.
    """
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {cfg.precision!r}; use one of {sorted(PRECISIONS)}.")
    dtype = PRECISIONS[cfg.precision]
    if cfg.name == "cnn":
        return CNN(
            n_hidden=tuple(cfg.hidden),
            kernel_size=cfg.kernel_size,
            last_kernel_size=cfg.last_kernel_size,
            ln_over_channels=cfg.ln_over_channels,
            dtype=dtype,
            conv_impl=cfg.conv_impl,
        )
    if cfg.name == "unet":
        from jaxdiff.models.unet import UNet

        return UNet(
            hidden=tuple(cfg.hidden),
            attention=cfg.attention,
            dtype=dtype,
            conv_impl=cfg.conv_impl,
            num_res_blocks=cfg.res_blocks,
            norm_fp32=cfg.norm_fp32,
        )
    raise ValueError(f"unknown model {cfg.name!r}; use 'cnn' or 'unet'.")
