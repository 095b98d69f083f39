"""Wav2Vec2 speech features: hidden states interpolated to one vector per video frame.

The curation's embedding stage, the trainer's loader (st2v rows written without embeddings)
and generation all call these functions, so identical audio gives identical features.

Batched inference (:func:`embed_audio_batch`) gives the features of one-at-a-time inference.
Clips differ in length, so a batch is zero-padded, and padding must not leak into the valid
frames. Three places could let it:

- the convolutional feature encoder has no padding of its own, so an output frame sees only
  the input samples under its receptive field: valid frames are untouched by trailing zeros;
- but wav2vec2-base (``feat_extract_norm="group"``) normalises the first conv layer's output
  per channel over the WHOLE time axis (GroupNorm with one group per channel). Over a padded
  input those statistics change, which is why its feature extractor sets
  ``return_attention_mask=False`` and Hugging Face advises against batching it. Here that norm
  takes its statistics over each item's own valid frames only (:func:`_masked_group_norm`),
  which is the same arithmetic as running the item alone;
- the transformer sees an attention mask (padded keys get zero weight), and the encoder zeroes
  padded frames before its positional convolution, matching the convolution's own zero
  padding at the end of an unpadded item.

So padded batching equals one-at-a-time up to float summation order (tested with tiny random
models of both norm kinds). Items of equal length are batched without padding or mask at all;
sorting by length before batching makes such groups common and keeps the padding small.
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


def _masked_norm_hook(lengths):
    """A forward hook for the first conv layer's GroupNorm that recomputes it with each
    item's statistics taken over its first ``lengths[b]`` frames only."""
    import torch

    def hook(module, inputs, output):
        x = inputs[0]
        B, C, T = x.shape
        G = module.num_groups
        valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)  # (B, T)
        xg = x.reshape(B, G, C // G, T)
        m = valid[:, None, None, :]
        n = (lengths.to(x.dtype) * (C // G))[:, None, None, None]
        mean = (xg * m).sum(dim=(2, 3), keepdim=True) / n
        var = (((xg - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / n  # biased, as GroupNorm
        y = ((xg - mean) / torch.sqrt(var + module.eps)).reshape(B, C, T)
        if module.affine:
            y = y * module.weight[None, :, None] + module.bias[None, :, None]
        return y

    return hook


@contextlib.contextmanager
def _masked_group_norm(model, sample_lengths):
    """While active, the model's time-axis GroupNorm (wav2vec2-base style feature encoders)
    ignores padding. A no-op for ``feat_extract_norm="layer"`` models (per-frame LayerNorm)."""
    import torch

    if model.config.feat_extract_norm != "group":
        yield
        return
    layer0 = model.feature_extractor.conv_layers[0]
    k, s = model.config.conv_kernel[0], model.config.conv_stride[0]
    lengths = torch.div(sample_lengths - k, s, rounding_mode="floor") + 1
    handle = layer0.layer_norm.register_forward_hook(_masked_norm_hook(lengths))
    try:
        yield
    finally:
        handle.remove()


def hidden_states_batch(model, inputs: Sequence[np.ndarray], layer: int = -1) -> list[np.ndarray]:
    """Hidden states (N_i, D) float32 of one forward pass over ``inputs`` (already normalised
    by the feature extractor), zero-padded to the longest, each cropped to its own frames."""
    import torch

    device = next(model.parameters()).device
    lens = [len(x) for x in inputs]
    T = max(lens)
    batch = np.zeros((len(inputs), T), np.float32)
    for i, x in enumerate(inputs):
        batch[i, :len(x)] = x
    values = torch.from_numpy(batch).to(device)
    lengths = torch.tensor(lens, device=device)
    n_out = model._get_feat_extract_output_lengths(lengths, add_adapter=False).tolist()
    with torch.inference_mode():
        if min(lens) == T:  # equal lengths: no padding, the plain forward
            out = model(values, output_hidden_states=True)
        else:
            mask = (torch.arange(T, device=device)[None, :] < lengths[:, None]).long()
            with _masked_group_norm(model, lengths):
                out = model(values, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[layer].float().cpu().numpy()
    return [hidden[i, :int(n)] for i, n in enumerate(n_out)]


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
