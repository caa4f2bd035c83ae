"""The course's PyTorch starter (SPEC section 2), the peer that ``bench.py`` measures against.

Written from the specification, faithfully: ``CNN(in_channels=1, expected_shape=(28, 28),
n_hidden=(16, 32, 32, 16), kernel_size=7, last_kernel_size=3, time_embeddings=16,
act=nn.GELU)`` built from ``CNNBlock`` = Conv2d(k, padding k//2) -> LayerNorm((28, 28))
(each channel normalised over its plane, per-pixel affine) -> GELU; the time MLP
(32 sinusoidal features -> 128 -> 128 -> 128 -> n_hidden[0], GELU between) added to the
first block's output; a final Conv2d(k=3) back to 1 channel. ``DDPM`` holds the starter's
``ddpm_schedules`` tables, its loss (Prince, Alg. 18.1) and its sampler (Alg. 18.2).

Requires ``torch`` (the optional ``bench`` extra: ``pip install torch==2.13.0``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def ddpm_schedules(beta1: float, beta2: float, T: int) -> dict[str, torch.Tensor]:  # noqa: N803
    """The starter's linear schedule: ``beta_t`` and ``alpha_t`` (cumulative product), T+1 each."""
    assert beta1 < beta2 < 1.0, "beta1 and beta2 must be in (0, 1)"
    beta_t = (beta2 - beta1) * torch.arange(0, T + 1, dtype=torch.float32) / T + beta1
    alpha_t = torch.exp(torch.cumsum(torch.log(1 - beta_t), dim=0))
    return {"beta_t": beta_t, "alpha_t": alpha_t}


class CNNBlock(nn.Module):
    """Conv2d -> LayerNorm(expected_shape) -> activation, as the course template."""

    def __init__(
        self, in_channels, out_channels, *, expected_shape=(28, 28), act=nn.GELU, kernel_size=7
    ):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.LayerNorm(expected_shape),
            act(),
        )

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """The starter denoiser (no skips, no resampling) with the sinusoidal time MLP."""

    def __init__(
        self,
        in_channels=1,
        expected_shape=(28, 28),
        n_hidden=(16, 32, 32, 16),
        kernel_size=7,
        last_kernel_size=3,
        time_embeddings=16,
        act=nn.GELU,
    ):
        super().__init__()
        last = in_channels
        self.blocks = nn.ModuleList()
        for hidden in n_hidden:
            self.blocks.append(
                CNNBlock(
                    last, hidden, expected_shape=expected_shape, act=act, kernel_size=kernel_size
                )
            )
            last = hidden
        self.blocks.append(
            nn.Conv2d(last, in_channels, last_kernel_size, padding=last_kernel_size // 2)
        )
        self.time_embed = nn.Sequential(
            nn.Linear(time_embeddings * 2, 128),
            act(),
            nn.Linear(128, 128),
            act(),
            nn.Linear(128, 128),
            act(),
            nn.Linear(128, n_hidden[0]),
        )
        frequencies = torch.tensor(
            [0.0] + [2 * math.pi * 1.5**i for i in range(time_embeddings - 1)]
        )
        self.register_buffer("frequencies", frequencies)

    def time_encoding(self, t):
        phases = torch.concat(
            (
                torch.sin(t[:, None] * self.frequencies[None, :]),
                torch.cos(t[:, None] * self.frequencies[None, :]) - 1,
            ),
            dim=1,
        )
        return self.time_embed(phases)[:, :, None, None]

    def forward(self, x, t):
        embed = self.blocks[0](x)
        embed = embed + self.time_encoding(t)
        for block in self.blocks[1:]:
            embed = block(embed)
        return embed


class DDPM(nn.Module):
    """The starter's DDPM wrapper: loss (Alg. 18.1) and ancestral sampler (Alg. 18.2)."""

    def __init__(self, gt, betas=(1e-4, 0.02), n_T=1000):  # noqa: N803
        super().__init__()
        self.gt = gt
        for k, v in ddpm_schedules(betas[0], betas[1], n_T).items():
            self.register_buffer(k, v)
        self.n_T = n_T
        self.criterion = nn.MSELoss()

    def forward(self, x):
        t = torch.randint(1, self.n_T, (x.shape[0],), device=x.device)
        eps = torch.randn_like(x)
        alpha_t = self.alpha_t[t, None, None, None]
        z_t = torch.sqrt(alpha_t) * x + torch.sqrt(1 - alpha_t) * eps
        return self.criterion(eps, self.gt(z_t, t / self.n_T))

    def sample(self, n_sample, size, device, steps=None):
        """Ancestral sampling from ``t = n_T`` down ``steps`` steps (all ``n_T`` by default)."""
        steps = self.n_T if steps is None else steps
        _one = torch.ones(n_sample, device=device)
        z_t = torch.randn(n_sample, *size, device=device)
        for i in range(self.n_T, self.n_T - steps, -1):
            alpha_t = self.alpha_t[i]
            beta_t = self.beta_t[i]
            eps = self.gt(z_t, (i / self.n_T) * _one).float()
            z_t = (z_t - (beta_t / torch.sqrt(1 - alpha_t)) * eps) / torch.sqrt(1 - beta_t)
            if i > 1:
                z_t = z_t + torch.sqrt(beta_t) * torch.randn_like(z_t)
        return z_t
