"""Frozen 3D video VAE: a thin wrapper over diffusers' ``AutoencoderKLWan`` (Wan 2.1).

The wrapper fixes the contract the rest of the project relies on:
``encode(video[B,3,T,H,W] in [-1,1]) -> latents[B,C,T',H',W']`` normalised per channel with the
model's published ``latents_mean``/``latents_std`` (so the DiT sees roughly unit-variance data),
and ``decode`` inverts both steps. Wan's encoder is causal in time: T video frames become
``1 + (T-1)//r`` latent frames, the first latent frame covering exactly one video frame.

Weights are loaded from a local directory or an already-cached hub id only
(``local_files_only=True``); nothing is downloaded here. ``tiny_vae_config()`` is a random,
untrained VAE for tests and smoke runs and is labelled as such wherever it is used.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from common.weights import ModelMissing, resolve_model

# Registry name of the production VAE (see common/weights.py and `mocha models fetch`).
DEFAULT_VAE = "wan2.1-vae"
TINY_LABEL = "tiny-random-wan-vae (untrained, smoke tests only)"


def missing_model_error(name: str, err: Exception | None = None) -> ModelMissing:
    """The one error for weights that are not on disk; it names the command that fetches them."""
    msg = (f"model '{name}' is not available locally; fetch it once with "
           f"`mocha models fetch {name}` (or pass a local directory)")
    if err is not None:
        msg += f" [{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}]"
    return ModelMissing(msg)


def tiny_vae_config(latent_channels: int = 4) -> dict:
    """A random Wan VAE small enough for CPU tests: 4x temporal and 4x spatial compression
    (the real one is 4x / 8x), so window-attention arithmetic is the same as in production."""
    return dict(
        base_dim=8,
        z_dim=latent_channels,
        dim_mult=[1, 1, 1],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[True, True],
        latents_mean=[0.0] * latent_channels,
        latents_std=[1.0] * latent_channels,
        scale_factor_temporal=4,
        scale_factor_spatial=4,
    )


def build_tiny_vae(path: str | Path, latent_channels: int = 4, seed: int = 0) -> str:
    """Save a tiny random AutoencoderKLWan to ``path`` (for tests / demo) and return the path."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**tiny_vae_config(latent_channels))
    vae.save_pretrained(str(path))
    return str(path)


class VideoVAE(nn.Module):
    """Frozen encoder/decoder with normalised latents."""

    def __init__(self, vae: nn.Module, label: str = ""):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self.label = label
        self.is_tiny = label == TINY_LABEL  # a random smoke-test VAE, never a real one
        self.latent_channels = int(cfg.z_dim)
        self.temporal_compression = int(2 ** sum(bool(x) for x in cfg.temperal_downsample))
        self.spatial_compression = int(2 ** (len(cfg.dim_mult) - 1))
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.register_buffer("lat_mean", mean, persistent=False)
        self.register_buffer("lat_std", std, persistent=False)

    def train(self, mode: bool = True):  # always frozen: keep eval mode under Lightning
        return super().train(False)

    def latent_frames(self, num_frames: int) -> int:
        return 1 + (int(num_frames) - 1) // self.temporal_compression

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        s = self.spatial_compression
        return (self.latent_channels, self.latent_frames(num_frames), height // s, width // s)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"VideoVAE.encode expects [B,3,T,H,W], got {tuple(video.shape)}")
        T, H, W = video.shape[2:]
        s = self.spatial_compression
        if (T - 1) % self.temporal_compression or H % s or W % s:
            raise ValueError(
                f"video of {T} frames {H}x{W} does not fit the VAE: frames must be 1 + "
                f"{self.temporal_compression}k and sides multiples of {s}")
        dtype = next(self.vae.parameters()).dtype
        dist = self.vae.encode(video.to(dtype)).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return ((z.float() - self.lat_mean) / self.lat_std)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        z = latents.float() * self.lat_std + self.lat_mean
        out = self.vae.decode(z.to(dtype)).sample
        return out.float().clamp(-1.0, 1.0)


@dataclass
class VAEConfig:
    """``name_or_path``: local dir, registry name or cached hub id; ``subfolder``: where the VAE
    sits inside a full pipeline repo (Wan's diffusers repos keep it under ``vae``)."""

    name_or_path: str = DEFAULT_VAE
    subfolder: Optional[str] = "vae"
    dtype: str = "float32"


def load_vae(cfg: VAEConfig | dict | str, models_dir: Optional[str] = None) -> VideoVAE:
    if isinstance(cfg, str):
        cfg = VAEConfig(name_or_path=cfg)
    elif isinstance(cfg, dict):
        cfg = VAEConfig(**cfg)
    from diffusers import AutoencoderKLWan

    path = resolve_model(cfg.name_or_path, models_dir)
    dtype = getattr(torch, cfg.dtype)
    tried = []
    subs = [cfg.subfolder, None] if cfg.subfolder else [None]
    for sub in subs:
        if sub and os.path.isdir(path) and not os.path.isdir(os.path.join(path, sub)):
            continue
        try:
            kw = {"subfolder": sub} if sub else {}
            vae = AutoencoderKLWan.from_pretrained(path, local_files_only=True, torch_dtype=dtype,
                                                   low_cpu_mem_usage=False, **kw)
            label = f"AutoencoderKLWan:{cfg.name_or_path}"
            if _is_tiny(vae):
                label = TINY_LABEL
            return VideoVAE(vae, label=label)
        except (OSError, EnvironmentError, ValueError) as e:
            tried.append(e)
    raise missing_model_error(cfg.name_or_path, tried[-1] if tried else None)


def _is_tiny(vae) -> bool:
    return int(vae.config.base_dim) <= 16
