"""Rectified flow in the convention of the pretrained base (Wan 2.1, diffusers' flow schedulers).

``x_s = (1 - s) * x_data + s * noise`` with ``s`` the noise level (1 = pure noise, 0 = data);
the network predicts the velocity ``v = noise - x_data`` under an MSE loss and is told the
timestep ``1000 * s`` (Wan's ``num_train_timesteps``). Fine-tuning a pretrained Wan must keep
its convention: the base already predicts exactly this velocity for these timesteps.

Noise levels for training are drawn logit-normal by default (SD3's finding: mid-range levels
carry most of the learning signal), optionally pushed towards high noise by Wan's time shift;
sampling runs one of diffusers' flow-matching schedulers (UniPC with flow sigmas, Wan's own,
or flow-matching Euler) with the same shift.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch

# Wan 2.1 was trained with timesteps 0..1000 (diffusers' num_train_timesteps)
NUM_TRAIN_TIMESTEPS = 1000


@dataclass
class FlowConfig:
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # Wan's time shift applied to the drawn noise levels (1 = none). Wan trains and samples
    # with shifted levels (3 at 480p, 5 at 720p); a short fine-tune keeps 1 unless it matches
    # the resolution the base was trained at.
    shift: float = 1.0
    # Keep the level away from exactly 0/1 so every sample carries both noise and signal.
    t_eps: float = 1e-4


def shift_sigma(s: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan / SD3 time shift of noise levels: more weight near pure noise for shift > 1."""
    if shift == 1.0:
        return s
    return shift * s / (1.0 + (shift - 1.0) * s)


def sample_sigma(n: int, cfg: FlowConfig, generator: Optional[torch.Generator] = None,
                 device=None) -> torch.Tensor:
    """``n`` noise levels in (t_eps, 1 - t_eps)."""
    if cfg.timestep_sampling == "logit_normal":
        z = torch.randn(n, generator=generator, device=device) * cfg.logit_std + cfg.logit_mean
        s = torch.sigmoid(z)
    elif cfg.timestep_sampling == "uniform":
        s = torch.rand(n, generator=generator, device=device)
    else:
        raise ValueError(f"unknown timestep_sampling {cfg.timestep_sampling!r}")
    return shift_sigma(s, cfg.shift).clamp(cfg.t_eps, 1.0 - cfg.t_eps)


def timestep_of(sigma: torch.Tensor) -> torch.Tensor:
    """The base's timestep input for noise level ``sigma``."""
    return sigma * NUM_TRAIN_TIMESTEPS


def interpolate(x_data: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_sigma, target velocity noise - data)."""
    s = sigma.view(-1, *([1] * (x_data.ndim - 1))).to(x_data.dtype)
    return (1 - s) * x_data + s * noise, noise - x_data


def flow_loss(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error; ``weight[B]`` masks samples (e.g. padding) when given."""
    per = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    if weight is None:
        return per.mean()
    w = weight.float()
    return (per * w).sum() / w.sum().clamp_min(1e-8)


SCHEDULERS = ("unipc", "euler")


def make_scheduler(name: str = "unipc", shift: float = 3.0):
    """A diffusers flow-matching scheduler with Wan's settings (built in code: nothing to fetch).

    ``unipc`` is what Wan 2.1's diffusers pipeline ships (UniPC multistep on flow sigmas);
    ``euler`` is flow-matching Euler, the plain ODE integrator.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "unipc":
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       num_train_timesteps=NUM_TRAIN_TIMESTEPS, flow_shift=shift)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    raise ValueError(f"unknown scheduler {name!r}; choose from {SCHEDULERS}")


def sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
           steps: int = 30, shift: float = 3.0, scheduler: str = "unipc") -> torch.Tensor:
    """Integrate from ``noise`` (level 1) to data (level 0).

    ``velocity(x, timestep[B])`` returns the predicted ``noise - data`` at base timesteps.
    """
    sched = make_scheduler(scheduler, shift)
    sched.set_timesteps(steps, device=noise.device)
    x = noise
    for t in sched.timesteps:
        ts = torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)
        x = sched.step(velocity(x, ts).to(x.dtype), t, x, return_dict=False)[0]
    return x
