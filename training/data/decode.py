"""One sample from its shard row(s): frames at the training fps in a resolution bucket, audio
features aligned per frame and cut to the same window, the prompt.

Per-sample data problems raise :class:`SampleError` (the loader skips the sample and counts
it); configuration problems raise other errors and stop the run with their message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from common.framing import decode_window, latents_from_bytes, source_indices
from common.media import MediaError
from training.data.config import DataConfig


class SampleError(RuntimeError):
    """This sample cannot be decoded (corrupt bytes, missing columns); skip it. ``reason`` is a
    short fixed label (the loader counts skips per reason), ``detail`` the specifics."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class MissingAudioFeatures(RuntimeError):
    """An st2v row has no audio_emb and no audio model is configured (a config error)."""


@dataclass
class Sample:
    key: str
    track: str
    shot_size: str
    prompt: str
    frames: np.ndarray  # uint8 [T, H, W, 3], zero-padded after num_frames
    audio_emb: np.ndarray  # float32 [T, D], zero-padded; zeros for text-only samples
    has_audio: bool
    num_frames: int  # valid frames before padding
    latents: Optional[np.ndarray] = None  # float32 [C, T', H', W'] (then frames is None)
    item: int = -1  # index in the ShardIndex (to decode pixels after all, for a mixed batch)


def frame_counts(totals: list[int], length: int) -> list[int]:
    """Frames taken from each member of a sample of ``length`` frames: an equal share each
    (so every clip of a group appears), then spare length to members that have more."""
    n = len(totals)
    counts = [min(t, length // n + (1 if i < length % n else 0)) for i, t in enumerate(totals)]
    spare = length - sum(counts)
    for i, t in enumerate(totals):
        if spare <= 0:
            break
        extra = min(spare, t - counts[i])
        counts[i] += extra
        spare -= extra
    return counts


def emb_array(value, dim: int) -> Optional[np.ndarray]:
    """``audio_emb`` cell (Arrow scalar or nested list) -> float32 [n, dim], None when null."""
    if value is None:
        return None
    if hasattr(value, "is_valid"):
        if not value.is_valid:
            return None
        flat = value.values.flatten().to_numpy(zero_copy_only=False)
        return flat.astype(np.float32).reshape(-1, dim)
    return np.asarray(value, dtype=np.float32).reshape(-1, dim)


class SampleDecoder:
    def __init__(self, cfg: DataConfig, dim: int, featurizer=None):
        self.cfg, self.dim, self.featurizer = cfg, dim, featurizer
        self.computed = 0  # samples whose features the loader computed (reported in the state)
        self.latent_mismatch = 0  # stored latents of another bucket/length: pixels used instead

    def _features(self, row: dict, n_src: int) -> np.ndarray:
        emb = emb_array(row.get("audio_emb"), self.dim)
        if emb is not None:
            return emb
        if row.get("audio") is None:
            raise SampleError("st2v row without audio_emb and audio", str(row.get("clip_id")))
        if self.featurizer is None:
            raise MissingAudioFeatures(
                f"st2v clip {row.get('clip_id')} has no audio_emb; set data.audio_model to a Wav2Vec2 "
                "model so the loader computes it from the clip's audio")
        out = self.featurizer.features(row["audio"], float(row["fps"]), n_src)
        if out.shape[1] != self.dim:
            raise MissingAudioFeatures(f"audio model {self.featurizer.model_name} gives {out.shape[1]}-d features; "
                                       f"the shards and data.audio_emb_dim say {self.dim}")
        self.computed += 1
        return out

    def _latents(self, row: dict, bucket: tuple[int, int]) -> Optional[np.ndarray]:
        """Stored latents if they are this sample's (same length and bucket), else None."""
        if not (self.cfg.use_latents and row.get("latents")):
            return None
        try:
            z = latents_from_bytes(row["latents"])
        except ValueError as e:
            raise SampleError("unreadable latents", str(e)) from e
        cfg = self.cfg
        want = (1 + (cfg.num_frames - 1) // cfg.vae_temporal_compression,
                bucket[0] // cfg.vae_spatial_compression, bucket[1] // cfg.vae_spatial_compression)
        if z.ndim != 4 or tuple(z.shape[1:]) != want:
            self.latent_mismatch += 1
            return None
        return z.astype(np.float32)

    def decode(self, item, rows: list[dict], bucket: tuple[int, int], rng: np.random.Generator,
               allow_latents: bool = True) -> Sample:
        """``allow_latents=False`` decodes pixels of the same window the latents cover."""
        cfg, T = self.cfg, self.cfg.num_frames
        first = rows[0]
        prompt = first.get("group_prompt") if len(rows) > 1 else first.get("prompt")
        if len(rows) > 1 and not prompt:
            prompt = " ".join(r.get("prompt") or "" for r in rows).strip()
        if not prompt:
            if self.cfg.missing_prompt == "skip":
                raise SampleError("no prompt text", item.key)
            prompt = ""
        totals = []
        for r in rows:
            if not r.get("video"):
                raise SampleError("empty video bytes", str(r.get("clip_id")))
            n_src = int(r.get("num_frames") or 0)
            if n_src <= 0:
                raise SampleError("num_frames missing", str(r.get("clip_id")))
            totals.append(int(math.floor(n_src / float(r["fps"]) * cfg.fps + 1e-6)))
        counts = frame_counts(totals, T)
        speech = item.track == "st2v"
        first_window = not allow_latents  # latents cover frames 0..T-1
        if len(rows) == 1 and totals[0] >= T and allow_latents:
            z = self._latents(rows[0], bucket)
            if z is not None:
                r = rows[0]
                audio = np.zeros((T, self.dim), np.float32)
                if speech:
                    idx = source_indices(int(r["num_frames"]), float(r["fps"]), cfg.fps, T)
                    emb = self._features(r, int(r["num_frames"]))
                    audio[:] = emb[np.clip(idx, 0, len(emb) - 1)]
                return Sample(key=item.key, track=item.track, shot_size=item.shot_size, prompt=prompt,
                              frames=None, audio_emb=audio, has_audio=speech, num_frames=T, latents=z)
        frames, embs = [], []
        for r, total, count in zip(rows, totals, counts):
            if count <= 0:
                continue
            crop = cfg.random_crop and total > count and not first_window
            start = int(rng.integers(0, total - count + 1)) if crop else 0
            try:
                f, src_idx = decode_window(r["video"], cfg.fps, start, count, bucket,
                                           (int(r["width"]), int(r["height"])))
            except MediaError as e:
                raise SampleError("undecodable video", str(e)) from e
            frames.append(f)
            if speech:
                emb = self._features(r, int(r["num_frames"]))
                embs.append(emb[np.clip(src_idx, 0, len(emb) - 1)])
        valid = sum(len(f) for f in frames)
        bh, bw = bucket
        video = np.zeros((T, bh, bw, 3), np.uint8)
        video[:valid] = np.concatenate(frames)
        audio = np.zeros((T, self.dim), np.float32)
        if speech:
            audio[:valid] = np.concatenate(embs)
        return Sample(key=item.key, track=item.track, shot_size=item.shot_size, prompt=prompt, frames=video,
                      audio_emb=audio, has_audio=speech, num_frames=valid)
