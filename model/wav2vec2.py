"""Wav2Vec2 speech features: hidden states interpolated to one vector per video frame.

The curation's embedding stage, the trainer's loader (st2v rows written without embeddings)
and generation all call these functions, so identical audio gives identical features.

Batched inference (:func:`embed_audio_batch`) gives the features of one-at-a-time inference.
Clips differ in length, and wav2vec2-base (``feat_extract_norm="group"``) normalises its first
conv layer's output per channel over the WHOLE time axis, so zero padding changes every frame
of a padded item (why its feature extractor sets ``return_attention_mask=False`` and Hugging
Face advises against batching it). So a batch is split where padding would matter:

- the convolutional feature encoder runs on each item alone, at its own length: exactly the
  computation of one-at-a-time inference (and on a CPU faster than a padded batch: the first
  layer's long 512-channel convolution is memory-bound, and batching it only adds padding);
- its outputs are zero-padded to the longest and the transformer runs on the batch with an
  attention mask: padded keys get zero weight, and the encoder zeroes padded frames before its
  positional convolution, matching that convolution's own zero padding past an unpadded end.

The result equals one-at-a-time up to float summation order (tested with tiny random models of
both norm layouts; a padded batch without these steps is shown to differ). Passes are sorted
by length before batching, so padding stays small.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import numpy as np

from common.media import AUDIO_RATE
from common.weights import resolve_model

# One Wav2Vec2 receptive field (25 ms at 16 kHz): the shortest input that yields a frame.
MIN_SAMPLES = 400


def load_wav2vec2(model: str, device: str = "cpu", models_dir: Optional[str] = None):
    """Load a Wav2Vec2 model and its feature extractor from a local path, a registry name or a
    hub id already in the cache. Raises ModelMissing (naming `mocha models fetch`) otherwise."""
    path = resolve_model(model, models_dir)  # before importing transformers: a second, not needed when missing
    from transformers import AutoFeatureExtractor, Wav2Vec2Model

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


def _passes(pcm16k: np.ndarray, fps: float, num_frames: int, max_seconds_per_pass: float) -> list[np.ndarray]:
    """The raw audio pieces one clip is embedded in: padded to cover every video frame, cut
    into passes of at most ``max_seconds_per_pass``, none shorter than a receptive field."""
    pcm = np.asarray(pcm16k, dtype=np.float32)
    need = int(round(num_frames / fps * AUDIO_RATE))
    if len(pcm) < need:  # pad so the embedding covers every video frame
        pcm = np.pad(pcm, (0, need - len(pcm)))
    if len(pcm) < MIN_SAMPLES:
        pcm = np.pad(pcm, (0, MIN_SAMPLES - len(pcm)))
    chunk = int(max_seconds_per_pass * AUDIO_RATE)
    out = []
    for i in range(0, len(pcm), chunk):
        piece = pcm[i:i + chunk]
        if len(piece) < MIN_SAMPLES:
            piece = np.pad(piece, (0, MIN_SAMPLES - len(piece)))
        out.append(piece)
    return out


class _Precomputed:
    """Stands in for the model's feature encoder during one forward, returning features
    computed beforehand (item by item)."""

    def __init__(self, features):
        self.features = features

    def __call__(self, input_values):
        return self.features


@contextlib.contextmanager
def _features_given(model, features):
    """While active, ``model(...)`` starts from ``features`` instead of running its encoder."""
    encoder = model.feature_extractor
    object.__setattr__(model, "feature_extractor", _Precomputed(features))  # shadows the submodule
    try:
        yield
    finally:
        object.__delattr__(model, "feature_extractor")
        assert model.feature_extractor is encoder


def hidden_states_batch(model, inputs: Sequence[np.ndarray], layer: int = -1) -> list[np.ndarray]:
    """Hidden states (N_i, D) float32 of ``inputs`` (already normalised by the feature
    extractor): the conv encoder item by item, the transformer on the batch, masked."""
    import torch

    device = next(model.parameters()).device
    lens = [len(x) for x in inputs]
    with torch.inference_mode():
        if len(inputs) == 1:  # the plain forward
            out = model(torch.from_numpy(np.ascontiguousarray(inputs[0]))[None].to(device), output_hidden_states=True)
            return [out.hidden_states[layer][0].float().cpu().numpy()]
        feats = [model.feature_extractor(torch.from_numpy(np.ascontiguousarray(x))[None].to(device)) for x in inputs]
        n_out = [f.shape[-1] for f in feats]
        L = max(n_out)
        padded = torch.cat([torch.nn.functional.pad(f, (0, L - f.shape[-1])) for f in feats])
        # the model derives the frame mask from a sample mask via its conv output lengths
        values = torch.zeros(len(inputs), max(lens), device=device)
        mask = None
        if min(n_out) < L:
            lengths = torch.tensor(lens, device=device)
            mask = (torch.arange(max(lens), device=device)[None, :] < lengths[:, None]).long()
        with _features_given(model, padded):
            out = model(values, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[layer].float().cpu().numpy()
    return [hidden[i, :n] for i, n in enumerate(n_out)]


def embed_audio_batch(model, feature_extractor, clips: Sequence[tuple[np.ndarray, float, int]],
                      layer: int = -1, max_seconds_per_pass: float = 30.0,
                      batch_size: int = 8) -> list[np.ndarray]:
    """:func:`embed_audio` of each ``(pcm16k, fps, num_frames)`` clip, running up to
    ``batch_size`` passes per forward (see the module doc: equal to one at a time)."""
    pieces: list[tuple[int, int, np.ndarray]] = []  # (clip, pass index, normalised input)
    num_passes = []
    for ci, (pcm, fps, num_frames) in enumerate(clips):
        raws = _passes(pcm, fps, num_frames, max_seconds_per_pass)
        num_passes.append(len(raws))
        for pi, raw in enumerate(raws):
            # normalised per pass, exactly as a lone pass is
            x = feature_extractor(raw, sampling_rate=AUDIO_RATE, return_tensors="np").input_values[0]
            pieces.append((ci, pi, np.asarray(x, np.float32)))
    order = sorted(range(len(pieces)), key=lambda j: -len(pieces[j][2]))  # similar lengths together
    hidden: dict[tuple[int, int], np.ndarray] = {}
    for b in range(0, len(order), max(1, batch_size)):
        group = [pieces[j] for j in order[b:b + max(1, batch_size)]]
        for (ci, pi, _), h in zip(group, hidden_states_batch(model, [g[2] for g in group], layer)):
            hidden[ci, pi] = h
    out = []
    for ci, (_, _, num_frames) in enumerate(clips):
        parts = [hidden[ci, pi] for pi in range(num_passes[ci])]
        out.append(frames_to_features(np.concatenate(parts, axis=0), int(num_frames)))
    return out


def embed_audio(model, feature_extractor, pcm16k: np.ndarray, fps: float, num_frames: int,
                layer: int = -1, max_seconds_per_pass: float = 30.0) -> np.ndarray:
    """Hidden states of ``pcm16k`` interpolated to ``num_frames`` video frames: (T, D) float16."""
    return embed_audio_batch(model, feature_extractor, [(pcm16k, fps, num_frames)], layer,
                             max_seconds_per_pass, batch_size=1)[0]
