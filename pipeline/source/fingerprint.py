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


def fingerprint(src, has_audio: bool, cfg: FingerprintConfig, video: Optional["StepImages"] = None) -> Fingerprint:
    """The fingerprint of the first ``cfg.span_s`` seconds of ``src`` (a path, or a callable
    returning a fresh file object: the source is opened once per stream). Decode errors end a
    stream's part early and clear ``clean``; what decoded before them is kept. ``video``: step
    images already filled by another decode of the span (the scene scan of a short source),
    which then only the sound is decoded for."""
    try:
        if video is None:
            video = _video_steps(src() if callable(src) else src, cfg)
        hashes, video_ok = video.hashes()
        clean = video.error is None
    except MediaError:
        hashes, video_ok, clean = np.zeros(0, np.uint64), np.zeros(0, bool), False
    audio, audio_ok = np.zeros(0, np.uint16), np.zeros(0, bool)
    if has_audio:
        try:
            pcm = next(audio_slices(src() if callable(src) else src, [(0.0, cfg.span_s)]))
            nz = np.flatnonzero(pcm)  # the slice is zero-padded to the span past the stream's end
            audio, audio_ok = audio_bits(pcm[:nz[-1] + 1] if nz.size else pcm[:0], cfg)
        except (MediaError, StopIteration):
            clean = False
    return Fingerprint(hashes, video_ok, audio, audio_ok, cfg.video_step_s, cfg.audio_hop_s, clean)


class StepImages:
    """The mean 32x32 grey image of each ``video_step_s`` of the span, filled frame by frame
    from any decode of the source (its own, or the scene scan's)."""

    def __init__(self, cfg: FingerprintConfig):
        self.cfg = cfg
        self.n = int(np.ceil(cfg.span_s / cfg.video_step_s - 1e-9))
        self.acc = np.zeros((self.n, 32, 32), np.float64)
        self.cnt = np.zeros(self.n, np.int64)
        self.last: Optional[np.ndarray] = None
        self.last_k = -1
        self.error: Optional[str] = None  # a decode error that ended the span early
        self.full = False  # a frame past the span came: later frames change nothing

    def add_frame(self, t: float, frame) -> bool:
        """A decoded ``av.VideoFrame`` shown at ``t`` (seconds from the container start);
        False once the span is complete."""
        if not self.full:
            self.add(t, frame.to_ndarray(format="gray", width=32, height=32, interpolation="AREA"))
        return not self.full

    def add(self, t: float, img: np.ndarray) -> None:
        k = int(np.floor(t / self.cfg.video_step_s + 1e-9))
        if k < 0 or self.full:
            return
        # steps no frame fell in (a low or variable frame rate) show the previous frame
        if self.last is not None:
            for j in range(self.last_k + 1, min(k, self.n)):
                self.acc[j] += self.last
                self.cnt[j] += 1
        if k >= self.n:
            self.last_k, self.full = self.n - 1, True
            return
        self.acc[k] += img
        self.cnt[k] += 1
        self.last, self.last_k = img.astype(np.float64), k

    def hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """(pHash per step, step usable); raises MediaError when no frame came."""
        used = int(self.last_k + 1)
        if used <= 0:
            raise MediaError("no video frames in the fingerprint span")
        means = self.acc[:used] / np.maximum(self.cnt[:used], 1)[:, None, None]
        ok = (self.cnt[:used] > 0) & (means.reshape(used, -1).std(axis=1) >= self.cfg.flat_std)
        return phash(means), ok


def _video_steps(src, cfg: FingerprintConfig) -> StepImages:
    """The span's step images from a decode of its own. Frames no other frame refers to are
    skipped (most B-frames: half the frames at well under half the cost); a step's mean image
    barely changes with the frames left out, as with a copy at another frame rate."""
    steps = StepImages(cfg)
    frames = iter_frames(src, fmt="gray", width=32, height=32, interpolation="AREA", skip_nonref=True)
    try:
        for t, img in frames:
            steps.add(t, img)
            if steps.full:
                break
    except MediaError as e:
        steps.error = str(e)
    finally:
        frames.close()
    return steps


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
