"""Speech features -> model width.

MoCha feeds Wav2Vec2 hidden states (one vector per video frame) through a single-layer MLP into
the speech cross-attention of every Wan block. Text-only (t2v) samples carry all-zero features;
the projection has no bias so that zero features stay exactly zero tokens and a t2v sample
gets no speech signal at all, whatever the weights have learnt.
"""
from __future__ import annotations

import torch
from torch import nn


class AudioProjector(nn.Module):
    def __init__(self, audio_dim: int, width: int):
        super().__init__()
        self.audio_dim = audio_dim
        self.proj = nn.Linear(audio_dim, width, bias=False)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, audio_emb: torch.Tensor, has_audio: torch.Tensor | None = None) -> torch.Tensor:
        if audio_emb.shape[-1] != self.audio_dim:
            raise ValueError(f"audio features have dim {audio_emb.shape[-1]}, the model expects {self.audio_dim}")
        if has_audio is not None:
            audio_emb = audio_emb * has_audio.to(audio_emb.dtype).view(-1, 1, 1)
        return self.act(self.proj(audio_emb))
