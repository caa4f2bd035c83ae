"""One frozen, hashable configuration object for a run (model, process, training).

Frozen dataclasses are hashable, so parts of a config can be static arguments of jitted
functions, and they round-trip through JSON (``to_dict`` / ``from_dict``) so every run
records exactly what it did and a resumed run can check it continues the same one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Network architecture and numerics.

    Attributes:
        name: ``"cnn"`` (the starter) or ``"unet"``.
        hidden: Channels per block (CNN) or per resolution level (UNet).
        kernel_size: CNN block kernel size.
        last_kernel_size: CNN final kernel size.
        ln_over_channels: CNN LayerNorm over (C, H, W) instead of the template's (H, W).
        precision: ``"fp32"`` or ``"bf16"`` (bf16 compute, fp32 parameters and accumulation).
        conv_impl: Convolution implementation name (see :mod:`jaxdiff.kernels.registry`).
        attention: UNet: self-attention at the lowest resolution.
        res_blocks: UNet: residual blocks per level on each path (depth).
        norm_fp32: UNet: each GroupNorm + SiLU computed in ``float32`` under ``bf16``
            (same parameters; XLA:CPU's bf16 GroupNorm backward is slow: 1.25x faster bf16
            UNet steps). UNet configs written before this setting load as ``False``, the
            compute dtype they ran with.
    """

    name: str = "cnn"
    hidden: tuple[int, ...] = (16, 32, 32, 16)
    kernel_size: int = 7
    last_kernel_size: int = 3
    ln_over_channels: bool = False
    precision: str = "fp32"
    conv_impl: str = "auto"
    attention: bool = False
    res_blocks: int = 1
    norm_fp32: bool = True


@dataclass(frozen=True)
class ProcessConfig:
    """The forward process and its loss.

    Attributes:
        kind: ``"ddpm"`` (Gaussian noise) or ``"cold"`` (restoration).
        T: Number of diffusion / degradation steps.
        schedule: DDPM beta schedule, ``"linear"``, ``"cosine"`` or ``"sigmoid"``.
        beta1: First beta of the linear schedule.
        beta2: Last beta of the linear schedule.
        prediction: DDPM: the network's target, ``"eps"`` (the starter) or ``"v"``.
        weighting: DDPM: loss weighting over ``t``, ``"none"`` (the starter) or
            ``"min_snr"`` (Min-SNR-5, :func:`jaxdiff.losses.ddpm_loss`).
        degradation: Cold: registered degradation name.
        degradation_options: Cold: the degradation factory's options as sorted
            ``(name, value)`` pairs (e.g. ``(("sigma_max", 4.0), ("sigma_min", 0.3))`` for
            blur); empty for the factory's defaults.
        loss: Cold: ``"l1"`` or ``"l2"``.
        noise: Cold: training noise, the standard deviation of Gaussian noise added to
            each degraded input (0: Bansal et al.'s deterministic setting); with the
            ``"linear"`` schedule, its value at ``t = T``.
        noise_schedule: Cold: ``"constant"`` or ``"linear"`` in ``t``
            (:func:`jaxdiff.cold.noise_levels`).
        sample_noise: Cold: the reverse process's default step noise, on the same schedule
            (0: deterministic).
    """

    kind: str = "ddpm"
    T: int = 1000  # noqa: N815 - the paper's name
    schedule: str = "linear"
    beta1: float = 1e-4
    beta2: float = 0.02
    prediction: str = "eps"
    weighting: str = "none"
    degradation: str = ""
    degradation_options: tuple[tuple[str, Any], ...] = ()
    loss: str = "l1"
    noise: float = 0.0
    noise_schedule: str = "constant"
    sample_noise: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        lr: Adam learning rate.
        batch_size: Images per step (the last partial batch of an epoch is dropped).
        epochs: Number of epochs.
        seed: Base PRNG seed; every key of the run derives from it.
        ema_decay: Decay of the parameter EMA kept in the train state (0 disables it).
        limit: Train on the first ``limit`` images only (0 means all).
        grad_clip: Global gradient-norm clip (0 disables it; the starter has none).
        lr_schedule: ``"constant"`` (the starter) or ``"cosine"``: linear warm-up over
            ``warmup_steps`` then cosine decay to zero at the end of the last epoch.
        warmup_steps: Linear warm-up steps of the cosine schedule.
    """

    lr: float = 2e-4
    batch_size: int = 128
    epochs: int = 100
    seed: int = 0
    ema_decay: float = 0.0
    limit: int = 0
    grad_clip: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0


@dataclass(frozen=True)
class Config:
    """A whole run: model, process and training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Rebuild a config from :meth:`to_dict` output.

        Args:
            d: Nested dict with ``model``, ``process`` and ``train`` keys.

        Returns:
            The config.

        Raises:
            ValueError: If a section has unknown keys (e.g. a file from another version).
        """
        parts = {}
        for name, klass in (
            ("model", ModelConfig),
            ("process", ProcessConfig),
            ("train", TrainConfig),
        ):
            sub = dict(d.get(name, {}))
            known = {f.name for f in dataclasses.fields(klass)}
            unknown = set(sub) - known
            if unknown:
                raise ValueError(f"config section {name!r} has unknown keys {sorted(unknown)}.")
            if name == "model" and sub.get("name") == "unet" and "norm_fp32" not in sub:
                sub["norm_fp32"] = False  # UNet configs before the setting ran GroupNorm in bf16
            if "hidden" in sub:
                sub["hidden"] = tuple(sub["hidden"])
            if "degradation_options" in sub:
                sub["degradation_options"] = tuple(
                    (str(k), v) for k, v in sub["degradation_options"]
                )
            parts[name] = klass(**sub)
        return cls(**parts)
