"""Compact content fingerprints of a source, for finding the same video re-encoded, rescaled or
trimmed (``pipeline.source.dedup`` compares them).

- **Video**: a 64-bit perceptual hash (pHash: signs of the low 8x8 DCT coefficients of a 32x32
  grey image against their median) of every ``video_step_s`` of the first ``span_s`` seconds.
  Each step's image is the mean of the frames shown in it, shrunk with area averaging, so a copy
  at another resolution, bitrate, codec or frame rate gives nearly the same bits. Steps whose
  image is flat (a black or single-colour screen) say nothing about the content and are masked.
- **Audio**: the Philips (Haitsma-Kalker) sub-fingerprint of every ``audio_hop_s``: 16 bits, the
  signs of the time difference of the energy differences of 17 adjacent log-spaced bands
  (300-3000 Hz). It survives lossy re-encoding and level changes; quiet hops are masked.

Both are sampled by time from the container start, so a trimmed copy is the same sequence
shifted, which the comparison searches for.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Optional

import numpy as np
from pydantic import Field

from common.media import AUDIO_RATE, MediaError, audio_slices, iter_frames
from schemas.base import Strict


class FingerprintConfig(Strict):
    # Seconds fingerprinted from the start of each source. Two minutes tell films and shows
    # apart even when they share a title sequence (a shared 30-60 s intro is a minority of the
    # aligned steps), while bounding the extra decode to two minutes of video per source and a
    # few KB per source in the commit log.
    span_s: float = Field(120.0, gt=0)
    # A quarter second between video hashes: a trimmed copy's steps then fall at most 1/8 s from
    # the original's, close enough for the mean images of talking shots to hash alike.
    video_step_s: float = Field(0.25, gt=0)
    # 50 ms audio hops (Philips uses 11.6 ms for song identification in noise; copies of one
    # file need far less): 16 bits per hop, 2400 hops in two minutes.
    audio_hop_s: float = Field(0.05, gt=0)
    # A 32x32 step image whose grey levels vary less than this (std, 0-255) is "flat": its hash
    # bits would come from compression noise, so it is left out of comparisons.
    flat_std: float = Field(3.0, ge=0)
    # An audio hop more than this far (dB) below the loudest hop of the span is quiet and
    # masked: bits of near-silence come from noise and dither, not from the content.
    quiet_db: float = Field(45.0, gt=0)


@dataclass
class Fingerprint:
    video: np.ndarray  # uint64 hash per video step
    video_ok: np.ndarray  # bool: the step had a non-flat image
    audio: np.ndarray  # uint16 sub-fingerprint per audio hop
    audio_ok: np.ndarray  # bool: the hop was loud enough
    video_step_s: float
    audio_hop_s: float
    clean: bool  # the fingerprinted span decoded without an error

    def to_json(self) -> dict:
        return {"video_step_s": self.video_step_s, "audio_hop_s": self.audio_hop_s, "clean": self.clean,
                "video": _b64(self.video.astype("<u8")), "video_ok": _b64(np.packbits(self.video_ok)),
                "audio": _b64(self.audio.astype("<u2")), "audio_ok": _b64(np.packbits(self.audio_ok))}

    @classmethod
    def from_json(cls, d: dict) -> "Fingerprint":
        v = np.frombuffer(base64.b64decode(d["video"]), "<u8").astype(np.uint64)
        a = np.frombuffer(base64.b64decode(d["audio"]), "<u2").astype(np.uint16)
        vok = np.unpackbits(np.frombuffer(base64.b64decode(d["video_ok"]), np.uint8))[:len(v)].astype(bool)
        aok = np.unpackbits(np.frombuffer(base64.b64decode(d["audio_ok"]), np.uint8))[:len(a)].astype(bool)
        return cls(v, vok, a, aok, float(d["video_step_s"]), float(d["audio_hop_s"]), bool(d["clean"]))

    @property
    def usable_video(self) -> int:
        return int(self.video_ok.sum())

    @property
    def usable_audio(self) -> int:
        return int(self.audio_ok.sum())


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(a.tobytes()).decode("ascii")


def fingerprint(src, has_audio: bool, cfg: FingerprintConfig) -> Fingerprint:
    """The fingerprint of the first ``cfg.span_s`` seconds of ``src`` (a path, or a callable
    returning a fresh file object: the source is opened once per stream). Decode errors end a stream's part early
    and clear ``clean``; what decoded before them is kept."""
    try:
        video, video_ok, error = _video_hashes(src() if callable(src) else src, cfg)
        clean = error is None
    except MediaError:
        video, video_ok, clean = np.zeros(0, np.uint64), np.zeros(0, bool), False
    audio, audio_ok = np.zeros(0, np.uint16), np.zeros(0, bool)
    if has_audio:
        try:
            pcm = next(audio_slices(src() if callable(src) else src, [(0.0, cfg.span_s)]))
            nz = np.flatnonzero(pcm)  # the slice is zero-padded to the span past the stream's end
            audio, audio_ok = audio_bits(pcm[:nz[-1] + 1] if nz.size else pcm[:0], cfg)
        except (MediaError, StopIteration):
            clean = False
    return Fingerprint(video, video_ok, audio, audio_ok, cfg.video_step_s, cfg.audio_hop_s, clean)


def _video_hashes(src, cfg: FingerprintConfig) -> tuple[np.ndarray, np.ndarray, Optional[str]]:
    """(hashes, usable, decode error or None); raises MediaError when nothing decoded."""
    step = cfg.video_step_s
    n = int(np.ceil(cfg.span_s / step - 1e-9))
    acc = np.zeros((n, 32, 32), np.float64)
    cnt = np.zeros(n, np.int64)
    last: Optional[np.ndarray] = None
    last_k = -1
    error = None
    frames = iter_frames(src, fmt="gray", width=32, height=32, interpolation="AREA", skip_nonref=True)
    try:
        for t, img in frames:
            k = int(np.floor(t / step + 1e-9))
            if k < 0:
                continue
            # steps no frame fell in (a low or variable frame rate) show the previous frame
            if last is not None:
                for j in range(last_k + 1, min(k, n)):
                    acc[j] += last
                    cnt[j] += 1
            if k >= n:
                last_k = n - 1
                break
            acc[k] += img
            cnt[k] += 1
            last, last_k = img.astype(np.float64), k
    except MediaError as e:
        error = str(e)
    finally:
        frames.close()
    used = int(last_k + 1)
    if used <= 0:
        raise MediaError("no video frames in the fingerprint span")
    means = acc[:used] / np.maximum(cnt[:used], 1)[:, None, None]
    ok = (cnt[:used] > 0) & (means.reshape(used, -1).std(axis=1) >= cfg.flat_std)
    return phash(means), ok, error


def phash(images: np.ndarray) -> np.ndarray:
    """64-bit pHash of each (32, 32) grey image: the low 8x8 DCT-II coefficients above their
    median (the DC term excluded from the median, as it only tracks brightness)."""
    from scipy.fft import dctn

    d = dctn(images, type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(images), 64)
    med = np.median(d[:, 1:], axis=1, keepdims=True)
    bits = (d > med).astype(np.uint64)
    return (bits << np.arange(63, -1, -1, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


_N_BANDS = 17
_WINDOW = 2048  # 128 ms at 16 kHz: the long analysis frame that makes the bits robust


def audio_bits(pcm: np.ndarray, cfg: FingerprintConfig) -> tuple[np.ndarray, np.ndarray]:
    """16-bit Philips sub-fingerprints of 16 kHz mono ``pcm``, one per ``cfg.audio_hop_s``."""
    hop = int(round(cfg.audio_hop_s * AUDIO_RATE))
    pcm = np.asarray(pcm, np.float32)
    n = 1 + (len(pcm) - _WINDOW) // hop if len(pcm) >= _WINDOW else 0
    if n < 2:
        return np.zeros(0, np.uint16), np.zeros(0, bool)
    idx = np.arange(_WINDOW)[None, :] + hop * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(pcm[idx] * np.hanning(_WINDOW)[None, :].astype(np.float32), axis=1)) ** 2
    freqs = np.fft.rfftfreq(_WINDOW, 1.0 / AUDIO_RATE)
    edges = np.geomspace(300.0, 3000.0, _N_BANDS + 1)
    band = np.stack([spec[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    energy = np.log(band + 1e-10)
    diff = energy[:, :-1] - energy[:, 1:]
    bits = (diff[1:] - diff[:-1]) > 0  # (n-1, 16): hop k compares to hop k-1
    words = (bits.astype(np.uint16) << np.arange(15, -1, -1, dtype=np.uint16)).sum(axis=1, dtype=np.uint16)
    level = 10 * np.log10(band.sum(axis=1) + 1e-12)
    ok = level[1:] >= level.max() - cfg.quiet_db
    ok &= band.sum(axis=1)[1:] > 1e-6  # digital silence: no content at all
    return words, ok
