"""Rectified-flow / flow-matching objective as in MoCha.

``x_t = t * x1 + (1 - t) * x0`` with ``x1`` the data latent and ``x0`` Gaussian noise, so t=0 is
pure noise and t=1 is data; the network predicts the velocity ``v = x1 - x0`` under an MSE loss.
Timesteps are drawn logit-normal by default (SD3's finding: mid-range t carries most of the
learning signal); uniform is kept for ablations. Sampling integrates dx/dt = v from 0 to 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch


@dataclass
class FlowConfig:
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # Keep t away from exactly 0/1 so every sample carries both noise and signal.
    t_eps: float = 1e-4


def sample_t(n: int, cfg: FlowConfig, generator: Optional[torch.Generator] = None,
             device=None) -> torch.Tensor:
    if cfg.timestep_sampling == "logit_normal":
        z = torch.randn(n, generator=generator, device=device) * cfg.logit_std + cfg.logit_mean
        t = torch.sigmoid(z)
    elif cfg.timestep_sampling == "uniform":
        t = torch.rand(n, generator=generator, device=device)
    else:
        raise ValueError(f"unknown timestep_sampling {cfg.timestep_sampling!r}")
    return t.clamp(cfg.t_eps, 1.0 - cfg.t_eps)


def interpolate(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity)."""
    tt = t.view(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
    return tt * x1 + (1 - tt) * x0, x1 - x0


def flow_loss(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error; ``weight[B]`` masks samples (e.g. padding) when given."""
    per = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    if weight is None:
        return per.mean()
    w = weight.float()
    return (per * w).sum() / w.sum().clamp_min(1e-8)


def euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                 steps: int = 30, shift: float = 1.0) -> torch.Tensor:
    """Integrate from noise (t=0) to data (t=1) with ``steps`` Euler steps.

    ``shift`` > 1 spends more steps near the noise end (the SD3/Wan time shift); 1 = uniform grid.
    """
    ts = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if shift != 1.0:
        # shifted in noise-level space s = 1 - t
        s = 1.0 - ts
        s = shift * s / (1.0 + (shift - 1.0) * s)
        ts = 1.0 - s
    x = x0
    for a, b in zip(ts[:-1].tolist(), ts[1:].tolist()):
        t = torch.full((x.shape[0],), a, dtype=x.dtype, device=x.device)
        x = x + (b - a) * velocity(x, t)
    return x
