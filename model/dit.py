"""Diffusion transformer over 3D VAE latents (MoCha-style).

Per block, in this order: self-attention over all video tokens (3D RoPE, adaLN timestep
modulation, gated residual) -> cross-attention to text tokens -> cross-attention to audio tokens
(speech-video window mask) -> MLP (adaLN, gated residual). Timestep modulation follows Wan 2.1:
one shared projection of the timestep embedding plus a learned per-block offset, which keeps the
adaLN parameters at 6*width per block instead of 6*width^2.

Tokens are ordered (t, h, w) after a 3D patch embedding; the output is the predicted velocity
with the latent's shape.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .audio_proj import AudioProjector
from .rope import apply_rope, rope_3d
from .window_attention import window_mask


@dataclass
class DiTConfig:
    in_channels: int = 16  # VAE latent channels (Wan 2.1: 16)
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) in latent units
    width: int = 1536
    depth: int = 22
    num_heads: int = 12
    mlp_ratio: float = 4.0
    text_dim: int = 4096  # hidden size of the text encoder (umT5-xxl: 4096)
    audio_dim: int = 768  # Wav2Vec2-base hidden size
    vae_temporal_compression: int = 4
    window_attention: bool = True  # False: plain audio cross-attention (ablation)
    window_margin: int = 1  # audio tokens on each side of a latent frame's own frames
    qk_norm: bool = True
    rope_theta: float = 10000.0
    grad_checkpointing: bool = False

    def __post_init__(self):
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} not divisible by num_heads {self.num_heads}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to [0, 1000] like diffusion step indices)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class Attention(nn.Module):
    """Multi-head attention through SDPA; self- or cross-attention depending on ``context``."""

    def __init__(self, width: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        self.h = num_heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)
        hd = width // num_heads
        self.nq = nn.RMSNorm(hd, eps=1e-6) if qk_norm else nn.Identity()
        self.nk = nn.RMSNorm(hd, eps=1e-6) if qk_norm else nn.Identity()

    def forward(self, x, context=None, mask=None, rope=None):
        B, N, D = x.shape
        ctx = x if context is None else context
        q = self.nq(self.q(x).view(B, N, self.h, -1).transpose(1, 2))
        k = self.nk(self.k(ctx).view(B, ctx.shape[1], self.h, -1).transpose(1, 2))
        v = self.v(ctx).view(B, ctx.shape[1], self.h, -1).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        empty = None
        if mask is not None:
            # a query row with no allowed key would make SDPA return NaN; let it see everything
            # and zero its output afterwards (e.g. video beyond the end of a shorter speech track)
            empty = ~mask.any(dim=-1, keepdim=True)
            if bool(empty.any()):
                mask = mask | empty
            else:
                empty = None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if empty is not None:
            out = out.masked_fill(empty, 0.0)
        return self.o(out.transpose(1, 2).reshape(B, N, D))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        w = cfg.width
        self.norm1 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(w, cfg.num_heads, cfg.qk_norm)
        self.norm_text = nn.LayerNorm(w, eps=1e-6)
        self.text_attn = Attention(w, cfg.num_heads, cfg.qk_norm)
        self.norm_audio = nn.LayerNorm(w, eps=1e-6)
        self.audio_attn = Attention(w, cfg.num_heads, cfg.qk_norm)
        self.norm2 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        hidden = int(w * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(w, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, w))
        # per-block offset added to the shared timestep modulation (shift, scale, gate) x 2
        self.modulation = nn.Parameter(torch.randn(1, 6, w) / w ** 0.5)

    def forward(self, x, mod, text, text_mask, audio, audio_mask, rope):
        sh1, sc1, g1, sh2, sc2, g2 = (mod + self.modulation).unbind(1)
        h = self.norm1(x) * (1 + sc1[:, None]) + sh1[:, None]
        x = x + g1[:, None] * self.self_attn(h, rope=rope)
        x = x + self.text_attn(self.norm_text(x), text, text_mask)
        x = x + self.audio_attn(self.norm_audio(x), audio, audio_mask)
        h = self.norm2(x) * (1 + sc2[:, None]) + sh2[:, None]
        return x + g2[:, None] * self.mlp(h)


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.patch_embed = nn.Conv3d(cfg.in_channels, w, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, w), nn.GELU(approximate="tanh"), nn.Linear(w, w))
        self.audio_proj = AudioProjector(cfg.audio_dim, w)
        self.time_embed = nn.Sequential(nn.Linear(256, w), nn.SiLU(), nn.Linear(w, w))
        self.time_mod = nn.Sequential(nn.SiLU(), nn.Linear(w, 6 * w))
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.out_mod = nn.Parameter(torch.randn(1, 2, w) / w ** 0.5)
        self.out_time = nn.Linear(w, 2 * w)
        self.head = nn.Linear(w, math.prod(cfg.patch_size) * cfg.in_channels)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embed.weight.flatten(1))
        # zero-init the output head: the untrained model predicts v=0 and starts from a stable loss
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        T, H, W = latent_shape[-3:]
        pt, ph, pw = self.cfg.patch_size
        if T % pt or H % ph or W % pw:
            raise ValueError(f"latent grid {T}x{H}x{W} is not divisible by patch {self.cfg.patch_size}")
        return T // pt, H // ph, W // pw

    def audio_attention_mask(self, latent_shape, num_audio: int, segments=None, audio_segments=None,
                             device=None) -> Optional[torch.Tensor]:
        """``[N_video, N_audio]`` window mask, or None when window attention is off."""
        if not self.cfg.window_attention:
            return None
        gt, gh, gw = self.grid(latent_shape)
        return window_mask(gt * self.cfg.patch_size[0], gh * gw, self.cfg.vae_temporal_compression,
                           num_audio=num_audio, margin=self.cfg.window_margin,
                           temporal_patch=self.cfg.patch_size[0], segments=segments,
                           audio_segments=audio_segments, device=device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                audio_emb: torch.Tensor, text_mask: Optional[torch.Tensor] = None,
                has_audio: Optional[torch.Tensor] = None, audio_valid: Optional[torch.Tensor] = None,
                segments: Optional[Sequence[int]] = None,
                audio_segments: Optional[Sequence[int]] = None) -> torch.Tensor:
        """x: [B,C,T,H,W] noisy latent; t: [B] in [0,1]; text: [B,Nt,text_dim];
        audio_emb: [B,Ta,audio_dim] (zeros for t2v); text_mask: [B,Nt] bool (True = real token);
        has_audio: [B] bool, zeroes the speech of t2v samples; audio_valid: [B,Ta] bool padding."""
        B, C, T, H, W = x.shape
        gt, gh, gw = self.grid(x.shape)
        tok = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, w]
        temb = self.time_embed(timestep_embedding(t, 256).to(tok.dtype))
        mod = self.time_mod(temb).view(B, 6, -1)
        ctx_t = self.text_proj(text.to(tok.dtype))
        ctx_a = self.audio_proj(audio_emb.to(tok.dtype), has_audio)
        tmask = None if text_mask is None else text_mask[:, None, None, :].bool()
        amask = self.audio_attention_mask(x.shape, audio_emb.shape[1], segments, audio_segments, x.device)
        if amask is not None:
            amask = amask[None, None]
        if audio_valid is not None:
            pad = audio_valid[:, None, None, :].bool()
            amask = pad if amask is None else amask & pad
        cos, sin = rope_3d((gt, gh, gw), self.cfg.width // self.cfg.num_heads, self.cfg.rope_theta, x.device)
        rope = (cos.to(tok.device), sin.to(tok.device))
        for blk in self.blocks:
            if self.cfg.grad_checkpointing and self.training and torch.is_grad_enabled():
                tok = checkpoint(blk, tok, mod, ctx_t, tmask, ctx_a, amask, rope, use_reentrant=False)
            else:
                tok = blk(tok, mod, ctx_t, tmask, ctx_a, amask, rope)
        sh, sc = (self.out_time(temb)[:, None].view(B, 2, -1) + self.out_mod).unbind(1)
        out = self.head(self.norm_out(tok) * (1 + sc[:, None]) + sh[:, None])
        pt, ph, pw = self.cfg.patch_size
        out = out.view(B, gt, gh, gw, pt, ph, pw, C).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(B, C, T, H, W)


# Named sizes. "tiny" is for tests and the CPU demo; "100m" for the CPU benchmark; "1b" is the
# production-scale reference (param count / memory figures in benchmarks/bench_train.py).
PRESETS: dict[str, dict] = {
    "tiny": dict(width=64, depth=2, num_heads=4, mlp_ratio=2.0, patch_size=(1, 2, 2)),
    "100m": dict(width=768, depth=8, num_heads=12, mlp_ratio=4.0, patch_size=(1, 2, 2)),
    "1b": dict(width=1536, depth=22, num_heads=12, mlp_ratio=4.0, patch_size=(1, 2, 2)),
}


def dit_config(preset: str = "tiny", **overrides) -> DiTConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown DiT preset {preset!r}; choose from {sorted(PRESETS)}")
    return DiTConfig(**{**PRESETS[preset], **overrides})
