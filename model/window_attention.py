"""Speech-video window attention (MoCha): which audio tokens each video token may attend to.

Audio features come one per video frame (Wav2Vec2 states resampled to the clip's fps). A causal
3D VAE with temporal compression ``r`` maps ``T = 1 + r*(L-1)`` video frames to ``L`` latent
frames: latent frame 0 covers video frame 0 alone, latent frame ``i >= 1`` covers video frames
``r*(i-1)+1 .. r*i``. Latent frame ``i`` may attend to the audio of the frames it covers plus one
audio token on each side (clipped to the sequence), so lip motion is tied to the speech it shows
while co-articulation at the borders is still visible.

A conversation generated in one pass is a concatenation of clips along time (``segments``: the
latent frame count of each clip); each clip is causal on its own and sees only its own speech.

The result is a boolean mask (True = may attend) of shape ``[num_video_tokens, num_audio_tokens]``
that broadcasts in ``torch.nn.functional.scaled_dot_product_attention``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def latent_frame_span(i: int, r: int) -> tuple[int, int]:
    """Video frames covered by latent frame ``i`` of one clip, as ``[start, end)``."""
    if i == 0:
        return 0, 1
    return r * (i - 1) + 1, r * i + 1


def audio_window(i: int, r: int, num_audio: int, margin: int = 1) -> tuple[int, int]:
    """Allowed audio indices ``[lo, hi)`` for latent frame ``i`` of a clip with ``num_audio`` tokens."""
    s, e = latent_frame_span(i, r)
    return max(0, s - margin), min(num_audio, e + margin)


def frame_audio_mask(num_latent: int, r: int, num_audio: Optional[int] = None, margin: int = 1,
                     segments: Optional[Sequence[int]] = None,
                     audio_segments: Optional[Sequence[int]] = None,
                     device=None) -> torch.Tensor:
    """``[num_latent, num_audio]`` bool mask at latent-frame resolution.

    ``segments`` (latent frames per clip) and ``audio_segments`` (audio tokens per clip) describe
    a multi-clip sequence; by default the whole sequence is one clip with ``1 + r*(L-1)`` audio
    tokens.
    """
    if segments is None:
        segments = [num_latent]
    if sum(segments) != num_latent:
        raise ValueError(f"segments {list(segments)} do not add up to {num_latent} latent frames")
    if audio_segments is None:
        audio_segments = [1 + r * (n - 1) for n in segments]
        if num_audio is not None and len(segments) == 1:
            audio_segments = [num_audio]
    if len(audio_segments) != len(segments):
        raise ValueError("audio_segments and segments must have the same length")
    total_audio = int(sum(audio_segments))
    if num_audio is not None and num_audio != total_audio:
        raise ValueError(f"num_audio={num_audio} but audio_segments add up to {total_audio}")
    mask = torch.zeros(num_latent, total_audio, dtype=torch.bool, device=device)
    f0 = a0 = 0
    for n_lat, n_aud in zip(segments, audio_segments):
        for i in range(n_lat):
            lo, hi = audio_window(i, r, n_aud, margin)
            if hi > lo:
                mask[f0 + i, a0 + lo:a0 + hi] = True
        f0 += n_lat
        a0 += n_aud
    return mask


def token_audio_mask(frame_mask: torch.Tensor, tokens_per_frame: int, temporal_patch: int = 1) -> torch.Tensor:
    """Expand a latent-frame mask to video tokens ordered (t, h, w).

    With a temporal patch of ``p`` latent frames, one token row covers ``p`` latent frames and
    may see the union of their windows.
    """
    L, A = frame_mask.shape
    if temporal_patch > 1:
        if L % temporal_patch:
            raise ValueError(f"{L} latent frames not divisible by temporal patch {temporal_patch}")
        frame_mask = frame_mask.view(L // temporal_patch, temporal_patch, A).any(dim=1)
    return frame_mask.repeat_interleave(tokens_per_frame, dim=0)


def window_mask(num_latent: int, tokens_per_frame: int, r: int, num_audio: Optional[int] = None,
                margin: int = 1, temporal_patch: int = 1,
                segments: Optional[Sequence[int]] = None,
                audio_segments: Optional[Sequence[int]] = None, device=None) -> torch.Tensor:
    """Token-level mask ``[num_latent//temporal_patch * tokens_per_frame, num_audio]``."""
    fm = frame_audio_mask(num_latent, r, num_audio, margin, segments, audio_segments, device)
    return token_audio_mask(fm, tokens_per_frame, temporal_patch)
