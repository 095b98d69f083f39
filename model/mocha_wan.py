"""The MoCha model: a pretrained Wan 2.1 transformer with speech cross-attention in every block.

Each Wan block is self-attention -> text cross-attention -> FFN; MoCha's order inserts a speech
cross-attention between the text cross-attention and the FFN:

    x = x + gate * SelfAttn(adaLN(x))          (Wan, 3D RoPE)
    x = x + TextAttn(norm(x), text)            (Wan)
    x = x + SpeechAttn(norm_a(x), speech)      (new: speech-video window mask)
    x = x + gate * FFN(adaLN(x))               (Wan)

The speech tokens are the audio projector's output of per-frame Wav2Vec2 features. The speech
attention is diffusers' own ``WanAttention`` (the same code as the text cross-attention), with
its output projection zero-initialised: at step 0 every block adds exactly zero and the model
computes what the pretrained base computes, so fine-tuning starts from a working text-to-video
model. ``MochaBlock`` takes over the Wan block's submodules under their own names, so the
base's parameter names (``blocks.3.attn1.to_q.weight`` ...) are diffusers' names and LoRA
targets and checkpoints read the same in both.

Inputs follow the base: latents ``[B, C, T, H, W]``, timesteps in 0..1000 (``model/flow.py``),
text states zero-padded to a fixed length with no mask (how Wan was trained). Only the text to
video layout of Wan 2.1 is supported (no image embedding, one timestep per sample).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .audio_proj import AudioProjector
from .window_attention import window_mask

# parameters this model adds to the base (the rest are the base's, under diffusers' names)
ADDED_PREFIXES = ("audio_proj.",)
ADDED_BLOCK_PARTS = ("norm_audio.", "audio_attn.")


@dataclass
class MochaConfig:
    # Wav2Vec2 hidden size of the speech features (wav2vec2-base: 768); = data.audio_emb_dim
    audio_dim: int = 768
    # the VAE's temporal compression: latent frame i covers video frames 4(i-1)+1 .. 4i
    vae_temporal_compression: int = 4
    # False: plain speech cross-attention over the whole track (ablation of MoCha's window)
    window_attention: bool = True
    # audio tokens on each side of a latent frame's own frames (co-articulation at the borders)
    window_margin: int = 1
    # recompute each block in the backward pass (single-device runs; FSDP has its own policy)
    grad_checkpointing: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def is_added(name: str) -> bool:
    """True for a parameter this model adds to the base (trained in every mode)."""
    if name.startswith(ADDED_PREFIXES):
        return True
    parts = name.split(".")
    return len(parts) > 2 and parts[0] == "blocks" and (".".join(parts[2:]) + ".").startswith(ADDED_BLOCK_PARTS)


class MochaBlock(nn.Module):
    """One Wan block (its own submodules, under their names) + the speech cross-attention."""

    def __init__(self, wan_block: nn.Module, eps: float = 1e-6):
        super().__init__()
        from diffusers.models.normalization import FP32LayerNorm
        from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

        for name, child in wan_block.named_children():
            self.add_module(name, child)
        self.scale_shift_table = wan_block.scale_shift_table
        dim, heads = self.attn2.inner_dim, self.attn2.heads
        self.norm_audio = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.audio_attn = WanAttention(dim=dim, heads=heads, dim_head=dim // heads, eps=eps,
                                       cross_attention_dim_head=dim // heads, processor=WanAttnProcessor())
        nn.init.zeros_(self.audio_attn.to_out[0].weight)
        nn.init.zeros_(self.audio_attn.to_out[0].bias)

    def speech(self, x: torch.Tensor, audio: torch.Tensor, mask: Optional[torch.Tensor],
               empty: Optional[torch.Tensor]) -> torch.Tensor:
        # computed in the speech layer's own dtype (fp32 trainable layers beside a bf16 frozen base)
        dt = self.audio_attn.to_q.weight.dtype
        out = self.audio_attn(self.norm_audio(x.float()).to(dt), audio.to(dt), mask, None)
        if empty is not None:
            # a video token with no speech in its window gets no speech signal at all
            out = out.masked_fill(empty, 0.0)
        return out.type_as(x)

    def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb, audio,
                audio_mask=None, audio_empty=None):
        # Wan 2.1's block, step for step (diffusers' WanTransformerBlock.forward), speech inserted
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
            self.scale_shift_table + temb.float()).chunk(6, dim=1)
        norm = (self.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa).type_as(hidden_states)
        attn_output = self.attn1(norm, None, None, rotary_emb)
        hidden_states = (hidden_states.float() + attn_output * gate_msa).type_as(hidden_states)
        norm = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(norm, encoder_hidden_states, None, None)
        hidden_states = hidden_states + self.speech(hidden_states, audio, audio_mask, audio_empty)
        norm = (self.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(hidden_states)
        ff_output = self.ffn(norm)
        return (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)


class MochaWan(nn.Module):
    """Built from a loaded base (``model.wan_base.load_base``); takes over its modules."""

    def __init__(self, base: nn.Module, cfg: MochaConfig):
        super().__init__()
        c = base.config
        if c.get("image_dim") is not None or c.get("added_kv_proj_dim") is not None:
            raise ValueError("the base is an image-to-video Wan; MoCha builds on the text-to-video transformer")
        self.cfg = cfg
        self.base_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items() if not k.startswith("_")}
        self.patch_size = tuple(int(p) for p in c.patch_size)
        self.in_channels = int(c.in_channels)
        self.text_dim = int(c.text_dim)
        self.width = int(c.num_attention_heads) * int(c.attention_head_dim)
        self.rope = base.rope
        self.patch_embedding = base.patch_embedding
        self.condition_embedder = base.condition_embedder
        self.blocks = nn.ModuleList(MochaBlock(b, float(c.eps)) for b in base.blocks)
        self.norm_out = base.norm_out
        self.proj_out = base.proj_out
        self.scale_shift_table = base.scale_shift_table
        self.audio_proj = AudioProjector(cfg.audio_dim, self.width)
        # from_pretrained hands the base over in eval mode; one mode for the whole model
        self.train()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        T, H, W = latent_shape[-3:]
        pt, ph, pw = self.patch_size
        if T % pt or H % ph or W % pw:
            raise ValueError(f"latent grid {T}x{H}x{W} is not divisible by patch {self.patch_size}")
        return T // pt, H // ph, W // pw

    def audio_attention_mask(self, latent_shape, num_audio: int, audio_valid: Optional[torch.Tensor] = None,
                             segments=None, audio_segments=None, device=None):
        """(bool mask ``[B|1, 1, N_video, N_audio]`` or None, rows without any key or None)."""
        mask = None
        if self.cfg.window_attention:
            gt, gh, gw = self.grid(latent_shape)
            mask = window_mask(gt * self.patch_size[0], gh * gw, self.cfg.vae_temporal_compression,
                               num_audio=num_audio, margin=self.cfg.window_margin,
                               temporal_patch=self.patch_size[0], segments=segments,
                               audio_segments=audio_segments, device=device)[None, None]
        if audio_valid is not None:
            pad = audio_valid.to(device).bool()[:, None, None, :]
            mask = pad if mask is None else mask & pad
        if mask is None:
            return None, None
        empty = ~mask.any(dim=-1, keepdim=True)
        if not bool(empty.any()):
            return mask, None
        # SDPA gives NaN for a query with no allowed key: let it see everything, zero it after
        return mask | empty, empty[:, 0]

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor, audio_emb: torch.Tensor,
                has_audio: Optional[torch.Tensor] = None, audio_valid: Optional[torch.Tensor] = None,
                segments: Optional[Sequence[int]] = None,
                audio_segments: Optional[Sequence[int]] = None) -> torch.Tensor:
        """x: [B,C,T,H,W] noisy latent; timestep: [B] in 0..1000; text: [B,L,text_dim] (zero
        padded, no mask); audio_emb: [B,Ta,audio_dim] (zeros for t2v); has_audio: [B] bool, zeroes
        the speech of t2v samples; audio_valid: [B,Ta] bool padding. Returns the velocity."""
        B, C, T, H, W = x.shape
        gt, gh, gw = self.grid(x.shape)
        if timestep.ndim != 1:
            raise ValueError("one timestep per sample (Wan 2.1); per-token timesteps are Wan 2.2's")
        x = x.to(self.patch_embedding.weight.dtype)
        rotary_emb = self.rope(x)
        h = self.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        text = text.to(next(self.condition_embedder.text_embedder.parameters()).dtype)
        temb, tproj, enc, _ = self.condition_embedder(timestep, text, None)
        tproj = tproj.unflatten(1, (6, -1))
        audio = self.audio_proj(audio_emb.float(), has_audio)
        mask, empty = self.audio_attention_mask(x.shape, audio_emb.shape[1], audio_valid, segments,
                                                audio_segments, x.device)
        for blk in self.blocks:
            if self.cfg.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(blk, h, enc, tproj, rotary_emb, audio, mask, empty, use_reentrant=False)
            else:
                h = blk(h, enc, tproj, rotary_emb, audio, mask, empty)
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        h = (self.norm_out(h.float()) * (1 + scale) + shift).type_as(h)
        h = self.proj_out(h)
        pt, ph, pw = self.patch_size
        h = h.reshape(B, gt, gh, gw, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return h.flatten(6, 7).flatten(4, 5).flatten(2, 3).float()

    def video_tokens(self, latent_shape: Sequence[int]) -> int:
        return math.prod(self.grid(latent_shape))
