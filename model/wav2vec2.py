"""Wav2Vec2 speech features: hidden states interpolated to one vector per video frame.

The curation's embedding stage, the trainer's loader (st2v rows written without embeddings)
and generation all call these functions, so identical audio gives identical features.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from common.media import AUDIO_RATE
from common.weights import resolve_model


def load_wav2vec2(model: str, device: str = "cpu", models_dir: Optional[str] = None):
    """Load a Wav2Vec2 model and its feature extractor from a local path, a registry name or a
    hub id already in the cache. Raises ModelMissing (naming `mocha models fetch`) otherwise."""
    from transformers import AutoFeatureExtractor, Wav2Vec2Model

    path = resolve_model(model, models_dir)
    net = Wav2Vec2Model.from_pretrained(path, local_files_only=True)
    net.eval().to(device)
    try:
        fe = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        # Some checkpoints ship without a preprocessor config: Wav2Vec2's defaults are the
        # published ones (16 kHz, zero-mean unit-variance normalisation).
        from transformers import Wav2Vec2FeatureExtractor

        fe = Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE, do_normalize=True, return_attention_mask=False)
    return net, fe


def frames_to_features(hidden: np.ndarray, num_frames: int) -> np.ndarray:
    """Linearly interpolate (N, D) hidden states (50 Hz for Wav2Vec2) onto ``num_frames``
    evenly spaced video frames covering the same span."""
    n = hidden.shape[0]
    if num_frames <= 0:
        return np.zeros((0, hidden.shape[1]), np.float16)
    if n == 1:
        return np.repeat(hidden, num_frames, axis=0).astype(np.float16)
    # centre of each video frame mapped onto the hidden-state grid
    pos = (np.arange(num_frames) + 0.5) * n / num_frames - 0.5
    pos = np.clip(pos, 0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo)[:, None]
    return ((1 - w) * hidden[lo] + w * hidden[hi]).astype(np.float16)


def embed_audio(model, feature_extractor, pcm16k: np.ndarray, fps: float, num_frames: int,
                layer: int = -1, max_seconds_per_pass: float = 30.0) -> np.ndarray:
    """Hidden states of ``pcm16k`` interpolated to ``num_frames`` video frames: (T, D) float16."""
    import torch

    pcm = np.asarray(pcm16k, dtype=np.float32)
    need = int(round(num_frames / fps * AUDIO_RATE))
    if len(pcm) < need:  # pad so the embedding covers every video frame
        pcm = np.pad(pcm, (0, need - len(pcm)))
    if len(pcm) < 400:  # shorter than one Wav2Vec2 receptive field
        pcm = np.pad(pcm, (0, 400 - len(pcm)))
    chunk = int(max_seconds_per_pass * AUDIO_RATE)
    parts = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(pcm), chunk):
            piece = pcm[i:i + chunk]
            if len(piece) < 400:
                piece = np.pad(piece, (0, 400 - len(piece)))
            inputs = feature_extractor(piece, sampling_rate=AUDIO_RATE, return_tensors="pt")
            out = model(inputs.input_values.to(device), output_hidden_states=True)
            parts.append(out.hidden_states[layer][0].float().cpu().numpy())
    hidden = np.concatenate(parts, axis=0)
    return frames_to_features(hidden, num_frames)
