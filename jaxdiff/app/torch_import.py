"""Bring the course's PyTorch starter weights into jaxdiff.

Course users hold ``state_dict`` files of the notebook's ``DDPM(gt=CNN(...))`` module. Its keys
(see ``../shared/anchors/README.md``):

* ``beta``, ``alpha``: the schedule buffers (``T + 1`` entries each);
* ``gt.freq``: the 16 time frequencies;
* ``gt.blocks.{i}.net.0.{weight,bias}``: block ``i``'s ``Conv2d`` (``OIHW``);
* ``gt.blocks.{i}.net.1.{weight,bias}``: its ``LayerNorm`` affine, ``(28, 28)`` for the
  template's per-plane form or ``(C, 28, 28)`` for the per-image variant;
* ``gt.blocks.{n}.{weight,bias}``: the last ``Conv2d`` (after the ``n`` blocks);
* ``gt.time_embed.{0,2,4,6}.{weight,bias}``: the time MLP's ``Linear`` layers (``(out, in)``).

:func:`params_from_state_dict` is pure (NumPy arrays in, a :class:`~jaxdiff.config.Config`
and a Flax parameter tree out) and checks every shape and the schedule;
:func:`read_state_dict` needs ``torch`` (an optional extra: ``pip install torch==2.13.0``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.models.layers import starter_frequencies
from jaxdiff.schedules import make_schedule


class StateDictError(ValueError):
    """Raised when a file or dict is not a starter ``state_dict`` jaxdiff can import."""


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` file into NumPy arrays (needs ``torch``).

    Args:
        path: A ``.pt`` file written by ``torch.save(model.state_dict(), path)``.

    Returns:
        ``{key: float32 array}``.

    Raises:
        StateDictError: If torch is missing, or the file cannot be read as a state dict.
    """
    try:
        import torch
    except ImportError:
        raise StateDictError(
            "reading PyTorch files needs torch: pip install torch==2.13.0 "
            '(or pip install -e ".[bench]").'
        ) from None
    try:
        sd = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StateDictError(f"{path}: no such file.") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise StateDictError(
            f"{path} is not a PyTorch state_dict file ({type(err).__name__}: {err})."
        ) from None
    if not isinstance(sd, Mapping) or not all(hasattr(v, "numpy") for v in sd.values()):
        raise StateDictError(
            f"{path} holds a {type(sd).__name__}, not a state_dict of tensors; save it with "
            "torch.save(ddpm.state_dict(), path)."
        )
    return {k: v.detach().cpu().float().numpy() for k, v in sd.items()}


def _get(sd: Mapping[str, np.ndarray], key: str, ndim: int) -> np.ndarray:
    if key not in sd:
        raise StateDictError(
            f"the state_dict has no {key!r}: not the course's DDPM(gt=CNN(...)) starter "
            f"(keys present: {sorted(sd)[:6]}...)."
        )
    a = np.asarray(sd[key], np.float32)
    if a.ndim != ndim:
        raise StateDictError(f"{key!r} has shape {a.shape}; expected {ndim} dimensions.")
    return a


def _check_schedule(sd: Mapping[str, np.ndarray]) -> tuple[int, float, float]:
    beta = _get(sd, "beta", 1)
    T = beta.shape[0] - 1  # noqa: N806
    # float32 buffers: round to 6 significant digits (1e-4, not 9.9999997e-05)
    beta1, beta2 = float(f"{beta[0]:.6g}"), float(f"{beta[-1]:.6g}")
    want = make_schedule("linear", T, beta1, beta2)
    if not np.allclose(beta, np.asarray(want.beta), rtol=1e-4, atol=1e-7):
        raise StateDictError(
            "the 'beta' buffer is not a linear schedule beta1..beta2 over T + 1 entries; "
            "jaxdiff imports the starter's ddpm_schedules only."
        )
    if "alpha" in sd and not np.allclose(
        _get(sd, "alpha", 1), np.asarray(want.alpha_bar), rtol=1e-4, atol=1e-6
    ):
        raise StateDictError("the 'alpha' buffer is not the cumulative product of (1 - beta).")
    return T, beta1, beta2


def _block_indices(sd: Mapping[str, np.ndarray]) -> list[int]:
    """The indices ``0..n-1`` of the ``gt.blocks.{i}`` convolution blocks."""
    blocks = sorted(
        {int(m.group(1)) for k in sd if (m := re.match(r"gt\.blocks\.(\d+)\.net\.0\.weight$", k))}
    )
    if not blocks or blocks != list(range(len(blocks))):
        raise StateDictError("no gt.blocks.{i}.net.0.weight convolutions found in order 0..n-1.")
    return blocks


def _block_params(
    sd: Mapping[str, np.ndarray], i: int, cin: int, ln_over_channels: bool | None
) -> tuple[dict[str, Any], int, bool]:
    """Block ``i``'s ``CNNBlock`` params, its width and LayerNorm form (``True``: ``(C, H, W)``).

    ``cin`` is the width it must take, ``ln_over_channels`` the form of the blocks before it
    (``None`` for the first).
    """
    w = _get(sd, f"gt.blocks.{i}.net.0.weight", 4)
    if w.shape[1] != cin:
        raise StateDictError(f"block {i} takes {w.shape[1]} channels; expected {cin}.")
    scale = _get(sd, f"gt.blocks.{i}.net.1.weight", sd[f"gt.blocks.{i}.net.1.weight"].ndim)
    bias = _get(sd, f"gt.blocks.{i}.net.1.bias", scale.ndim)
    over = scale.ndim == 3
    if ln_over_channels is None:
        ln_over_channels = over
    if over != ln_over_channels or scale.shape[-2:] != (28, 28):
        raise StateDictError(f"block {i}'s LayerNorm affine has shape {scale.shape}.")
    if over:  # (C, H, W) -> (H, W, C)
        scale, bias = scale.transpose(1, 2, 0), bias.transpose(1, 2, 0)
    else:
        scale, bias = scale[..., None], bias[..., None]
    params = {
        "Conv_0": {
            "kernel": w.transpose(2, 3, 1, 0),
            "bias": _get(sd, f"gt.blocks.{i}.net.0.bias", 1),
        },
        "PlaneLayerNorm_0": {"scale": scale, "bias": bias},
    }
    return params, w.shape[0], over


def _time_mlp_params(sd: Mapping[str, np.ndarray], fan_in: int) -> tuple[dict[str, Any], int]:
    """The time MLP's ``Dense_{j}`` params from ``gt.time_embed.{0,2,4,6}`` and its width."""
    params = {}
    for j, idx in enumerate((0, 2, 4, 6)):
        w = _get(sd, f"gt.time_embed.{idx}.weight", 2)
        if w.shape[1] != fan_in:
            raise StateDictError(f"gt.time_embed.{idx}.weight has shape {w.shape}.")
        fan_in = w.shape[0]
        params[f"Dense_{j}"] = {
            "Dense_0": {"kernel": w.T.copy(), "bias": _get(sd, f"gt.time_embed.{idx}.bias", 1)}
        }
    return params, fan_in


def params_from_state_dict(sd: Mapping[str, np.ndarray]) -> tuple[Config, dict[str, Any]]:
    """Convert a starter ``state_dict`` (as NumPy arrays) to a jaxdiff config and params.

    The architecture (hidden widths, kernel sizes, LayerNorm form) and the schedule are read
    from the tensors themselves; the training settings are the starter's.

    Args:
        sd: ``{key: array}``, e.g. from :func:`read_state_dict`.

    Returns:
        ``(cfg, params)``: a CNN config and ``{"params": ...}`` for :class:`jaxdiff.models.CNN`.

    Raises:
        StateDictError: For missing keys, unexpected shapes, time frequencies or schedules.
    """
    T, beta1, beta2 = _check_schedule(sd)  # noqa: N806
    freq = _get(sd, "gt.freq", 1)
    if not np.allclose(freq, starter_frequencies(), rtol=1e-5):
        raise StateDictError("'gt.freq' differs from the starter's [0] + 2 pi 1.5^i frequencies.")
    params: dict[str, Any] = {}
    hidden, ln_over_channels, cin = [], None, 1
    for i in _block_indices(sd):
        params[f"CNNBlock_{i}"], cin, ln_over_channels = _block_params(sd, i, cin, ln_over_channels)
        hidden.append(cin)
    n = len(hidden)
    last = _get(sd, f"gt.blocks.{n}.weight", 4)
    if last.shape[:2] != (1, cin):
        raise StateDictError(
            f"the last convolution has shape {last.shape}; expected (1, {cin}, k, k)."
        )
    params["Conv_0"] = {
        "kernel": last.transpose(2, 3, 1, 0),
        "bias": _get(sd, f"gt.blocks.{n}.bias", 1),
    }
    time_mlp, fan_out = _time_mlp_params(sd, 2 * freq.shape[0])
    params.update(time_mlp)
    if fan_out != hidden[0]:
        raise StateDictError(f"the time MLP ends in {fan_out} features; block 0 has {hidden[0]}.")
    k, k_last = params["CNNBlock_0"]["Conv_0"]["kernel"].shape[0], last.shape[-1]
    cfg = Config(
        model=ModelConfig(
            name="cnn",
            hidden=tuple(hidden),
            kernel_size=int(k),
            last_kernel_size=int(k_last),
            ln_over_channels=bool(ln_over_channels),
        ),
        process=ProcessConfig(kind="ddpm", T=T, schedule="linear", beta1=beta1, beta2=beta2),
        train=TrainConfig(),
    )
    return cfg, {"params": params}
