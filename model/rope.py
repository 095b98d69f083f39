"""3D rotary position embedding over (time, height, width) of the patch grid.

The head dimension is split into three even parts, one per axis; each part rotates pairs of
channels by the token's coordinate on that axis times a geometric frequency ladder. Relative
offsets in t, h and w then show up directly in the q.k products of self-attention.
"""
from __future__ import annotations

import torch


def split_head_dim(head_dim: int) -> tuple[int, int, int]:
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
    hw = 2 * (head_dim // 6)
    t = head_dim - 2 * hw
    return t, hw, hw


def _axis_angles(n: int, dim: int, theta: float, device) -> torch.Tensor:
    if dim == 0:
        return torch.zeros(n, 0, device=device)
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim))
    pos = torch.arange(n, device=device, dtype=torch.float64)
    return torch.outer(pos, freqs)  # [n, dim/2]


def rope_3d(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0, device=None):
    """(cos, sin), each ``[t*h*w, head_dim/2]`` for tokens ordered (t, h, w)."""
    T, H, W = grid
    dt, dh, dw = split_head_dim(head_dim)
    at = _axis_angles(T, dt, theta, device)[:, None, None, :].expand(T, H, W, -1)
    ah = _axis_angles(H, dh, theta, device)[None, :, None, :].expand(T, H, W, -1)
    aw = _axis_angles(W, dw, theta, device)[None, None, :, :].expand(T, H, W, -1)
    ang = torch.cat([at, ah, aw], dim=-1).reshape(T * H * W, head_dim // 2)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x[..., N, head_dim]`` channel pairs (2k, 2k+1)."""
    x2 = x.float().unflatten(-1, (-1, 2))
    a, b = x2[..., 0], x2[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    return out.to(x.dtype)
