"""Lip-sync scoring: offset, min distance and confidence over a +-vshift frame search.

The published SyncNet procedure (joonson/syncnet_python): embed every 5-frame video window and
its 0.2 s of audio, compare video window i with audio windows i-vshift..i+vshift, average the
distances over i per shift, then ``offset = vshift - argmin``, ``dist = min``, ``conf = median -
min``. Offset convention: video frame i matches audio frame i - offset, so a positive offset
means the audio runs ahead of the picture; re-aligning delays the audio by ``offset`` frames.

Two backends fill the same numbers:
- ``syncnet``: the SyncNet v2 network (model/syncnet.py) from a user-supplied checkpoint;
- ``av-correlation`` (embedded default, no weights): per-frame mouth-opening velocity of the
  face track (vertical optical flow of the jaw against the mid face, on a stabilised face crop)
  correlated with the speech onset signal (derivative of the log energy envelope); the distance
  per shift is ``1 - correlation``. Its confidence scale differs from SyncNet's (see
  SyncConfig). Measured limits on the real clips (benchmarks/bench_visual.py): it tracks a
  known audio delay on the close-up clip (with a constant -3 frame bias) and picks the speaking
  face of two, but it does not recover offsets on the medium/wide LatentSync clips and does not
  separate mismatched or music audio from matched speech. It is a labelled placeholder until a
  SyncNet checkpoint is configured, not a lip-sync filter.

:func:`score_sync` is the reusable entry point (also used by ``mocha eval`` on generated videos).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
from scipy.fft import dct
from scipy.ndimage import uniform_filter1d

from pipeline.config import SyncConfig

AUDIO_RATE = 16000
FPS = 25.0


@dataclass
class SyncResult:
    offset: int
    conf: float
    dist: float
    backend: str
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mean distance per shift (-vshift..vshift)

    @property
    def samples_per_frame(self) -> int:
        return int(AUDIO_RATE / FPS)


def scores_from_distances(mdist: np.ndarray, vshift: int) -> tuple[int, float, float]:
    """The published reduction of the per-shift mean distances (index k = shift k - vshift)."""
    k = int(np.argmin(mdist))
    minval = float(mdist[k])
    return vshift - k, float(np.median(mdist) - minval), minval


def shift_audio(pcm: np.ndarray, offset: int, fps: float = FPS, rate: int = AUDIO_RATE) -> np.ndarray:
    """Re-align: delay the audio by ``offset`` frames (advance when negative), same length."""
    n = int(round(offset * rate / fps))
    pcm = np.asarray(pcm, np.float32)
    if n == 0 or len(pcm) == 0:
        return pcm.copy()
    out = np.zeros_like(pcm)
    if n > 0:
        out[n:] = pcm[:len(pcm) - n] if n < len(pcm) else out[n:]
    else:
        out[:len(pcm) + n] = pcm[-n:] if -n < len(pcm) else out[:0]
    return out


# --- face crops ---------------------------------------------------------------------------------

def smooth_boxes(boxes: np.ndarray, k_center: int = 3, k_size: int = 9) -> np.ndarray:
    """Detector boxes jitter by several pixels; the face's size changes slowly, its position
    faster, so size is smoothed over a longer window than the centre."""
    b = np.asarray(boxes, np.float64)[:, :4]
    c = uniform_filter1d((b[:, :2] + b[:, 2:]) / 2, size=k_center, axis=0, mode="nearest")
    s = uniform_filter1d(b[:, 2:] - b[:, :2], size=k_size, axis=0, mode="nearest")
    return np.concatenate([c - s / 2, c + s / 2], 1)


def face_crops(frames: np.ndarray, boxes: np.ndarray, size: int, gray: bool = True,
               scale: float = 1.1, syncnet_layout: bool = False) -> np.ndarray:
    """Per-frame square crops around ``boxes`` (T, 4), resized to ``size``.

    ``syncnet_layout`` uses the published SyncNet crop: half-size ``bs`` = half the longer box
    side, from ``cy - bs`` to ``cy + 1.8 bs`` vertically and ``cx +- 1.4 bs`` horizontally.
    """
    out = []
    for f, b in zip(frames, boxes):
        x0, y0, x1, y1 = [float(v) for v in b[:4]]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        bs = max(x1 - x0, y1 - y0) / 2
        if syncnet_layout:
            sx0, sx1, sy0, sy1 = cx - 1.4 * bs, cx + 1.4 * bs, cy - bs, cy + 1.8 * bs
        else:
            half = bs * scale
            sx0, sx1, sy0, sy1 = cx - half, cx + half, cy - half, cy + half
        sx, sy = size / max(sx1 - sx0, 1e-3), size / max(sy1 - sy0, 1e-3)
        m = np.array([[sx, 0, -sx0 * sx], [0, sy, -sy0 * sy]], np.float32)
        src = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if gray else f
        out.append(cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out)


# --- weight-free backend ------------------------------------------------------------------------

_CROP = 64  # face crop side for the flow; rows below are fractions of it


def mouth_velocity(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T,) signed vertical velocity of the lower lip and jaw on the stabilised face crop
    (crop px/frame, positive = opening). Subtracting the mid-face flow was tried and made the
    offsets less stable on the real clips: the smoothed track already follows the head."""
    crops = face_crops(frames, smooth_boxes(boxes), _CROP)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    rows = slice(int(0.69 * _CROP), int(0.94 * _CROP))  # lower lip and chin
    cols = slice(int(0.28 * _CROP), int(0.72 * _CROP))
    v = np.zeros(len(crops))
    for i in range(1, len(crops)):
        v[i] = dis.calc(crops[i - 1], crops[i], None)[rows, cols, 1].mean()
    return v


def speech_onsets(pcm: np.ndarray, num_frames: int, fps: float = FPS, rate: int = AUDIO_RATE) -> np.ndarray:
    """(T,) derivative of the log RMS envelope per video frame: positive where sound starts."""
    hop = int(round(rate / fps))
    x = np.zeros(num_frames * hop, np.float32)
    n = min(len(pcm), len(x))
    x[:n] = pcm[:n]
    # Floor at -60 dBFS: digital silence (padding, re-alignment) must not look like a loud onset.
    env = np.log(np.sqrt((x.reshape(num_frames, hop) ** 2).mean(1)) + 1e-4)
    return np.diff(env, prepend=env[:1])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def shift_correlations(video: np.ndarray, audio: np.ndarray, vshift: int) -> np.ndarray:
    """Correlation of video[i] with audio[i - s] for s = -vshift..vshift (overlap only)."""
    T = min(len(video), len(audio))
    out = np.zeros(2 * vshift + 1)
    for k, s in enumerate(range(-vshift, vshift + 1)):
        if T - abs(s) < 10:
            continue
        if s >= 0:
            out[k] = _corr(video[s:T], audio[:T - s])
        else:
            out[k] = _corr(video[:T + s], audio[-s:T])
    return out


def av_correlation(frames: np.ndarray, boxes: np.ndarray, pcm: np.ndarray, vshift: int) -> SyncResult:
    # 5-frame (200 ms, about a syllable) smoothing of both signals keeps the syllabic rhythm.
    v = uniform_filter1d(mouth_velocity(frames, boxes), 5)
    a = uniform_filter1d(speech_onsets(pcm, len(frames)), 5)
    r = shift_correlations(v, a, vshift)
    # Distances as in the published search (smaller = better) so both backends reduce alike;
    # the shift index is reversed: r[k] pairs video i with audio i - (k - vshift).
    mdist = (1.0 - r)[::-1]
    offset, conf, dist = scores_from_distances(mdist, vshift)
    return SyncResult(offset, conf, dist, "av-correlation", mdist)


# --- SyncNet backend ----------------------------------------------------------------------------

def mfcc(pcm: np.ndarray, rate: int = AUDIO_RATE) -> np.ndarray:
    """(N, 13) MFCC with the settings SyncNet was trained on (python_speech_features defaults:
    25 ms rectangular window, 10 ms step, 512-point FFT, 26 mel filters, pre-emphasis 0.97,
    lifter 22, c0 replaced by log frame energy) on int16-scaled samples."""
    sig = np.asarray(pcm, np.float64) * 32768.0
    sig = np.append(sig[:1], sig[1:] - 0.97 * sig[:-1])
    flen, fstep, nfft, nfilt = int(0.025 * rate), int(0.01 * rate), 512, 26
    n = 1 if len(sig) <= flen else 1 + int(np.ceil((len(sig) - flen) / fstep))
    pad = np.zeros((n - 1) * fstep + flen)
    pad[:len(sig)] = sig
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]
    pspec = np.abs(np.fft.rfft(pad[idx], nfft)) ** 2 / nfft
    energy = pspec.sum(1)
    energy[energy == 0] = np.finfo(float).eps
    mel = np.linspace(0, 2595 * np.log10(1 + (rate / 2) / 700.0), nfilt + 2)
    bins = np.floor((nfft + 1) * (700 * (10 ** (mel / 2595.0) - 1)) / rate).astype(int)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        a, b, c = bins[j], bins[j + 1], bins[j + 2]
        fb[j, a:b] = (np.arange(a, b) - a) / max(b - a, 1)
        fb[j, b:c] = (c - np.arange(b, c)) / max(c - b, 1)
    feat = pspec @ fb.T
    feat[feat == 0] = np.finfo(float).eps
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    cep *= 1 + (22 / 2.0) * np.sin(np.pi * np.arange(13) / 22)
    cep[:, 0] = np.log(energy)
    return cep.astype(np.float32)


def distance_curve(vfeat, afeat, vshift: int) -> np.ndarray:
    """Published search: video window i against audio windows i-vshift..i+vshift (zero
    features beyond the ends), Euclidean distance averaged over i -> (2 vshift + 1,)."""
    import torch
    import torch.nn.functional as F

    vfeat, afeat = torch.as_tensor(vfeat).float(), torch.as_tensor(afeat).float()
    n, win = min(len(vfeat), len(afeat)), 2 * vshift + 1
    apad = F.pad(afeat[:n], (0, 0, vshift, vshift))
    dists = torch.stack([F.pairwise_distance(vfeat[[i]].repeat(win, 1), apad[i:i + win]) for i in range(n)], 1)
    return dists.mean(1).numpy()


def syncnet_scores(net, frames: np.ndarray, boxes: np.ndarray, pcm: np.ndarray, vshift: int,
                   batch: int = 20) -> SyncResult:
    """Published evaluation: 224 px face crops (BGR, 0-255), 5-frame windows vs 20 MFCC steps."""
    import torch

    crops = face_crops(frames, smooth_boxes(boxes), 224, gray=False, syncnet_layout=True)[..., ::-1]
    cc = mfcc(pcm).T  # (13, N)
    n = min(len(crops), len(pcm) // int(AUDIO_RATE / FPS)) - 5
    if n < 1:
        raise ValueError(f"clip too short for SyncNet ({len(crops)} frames)")
    vid = torch.from_numpy(np.ascontiguousarray(crops.transpose(3, 0, 1, 2))).float()  # (3, T, H, W)
    aud = torch.from_numpy(cc).float()
    vf, af = [], []
    with torch.no_grad():
        for i in range(0, n, batch):
            js = range(i, min(n, i + batch))
            vf.append(net.forward_lip(torch.stack([vid[:, j:j + 5] for j in js])))
            af.append(net.forward_aud(torch.stack([aud[None, :, 4 * j:4 * j + 20] for j in js])))
    mdist = distance_curve(torch.cat(vf), torch.cat(af), vshift)
    offset, conf, dist = scores_from_distances(mdist, vshift)
    return SyncResult(offset, conf, dist, "syncnet-v2", mdist)


# --- entry points -------------------------------------------------------------------------------

class SyncScorer:
    """Holds the loaded backend (once per worker) and scores one face track."""

    def __init__(self, cfg: SyncConfig):
        self.cfg = cfg
        backend = cfg.backend
        if backend == "auto":
            backend = "syncnet" if cfg.syncnet_checkpoint else "av-correlation"
        self.backend = backend
        self.net = None
        if backend == "syncnet":
            from model.syncnet import load_syncnet

            if not cfg.syncnet_checkpoint:
                raise ValueError("visual.sync.backend=syncnet needs visual.sync.syncnet_checkpoint")
            self.net = load_syncnet(cfg.syncnet_checkpoint)

    @property
    def min_conf(self) -> float:
        return self.cfg.syncnet_min_conf if self.net is not None else self.cfg.avcorr_min_conf

    def info(self) -> dict:
        if self.net is not None:
            return {"backend": "syncnet-v2", "checkpoint": str(self.cfg.syncnet_checkpoint)}
        return {"backend": "av-correlation", "model": None}

    def score(self, frames: np.ndarray, boxes: np.ndarray, pcm: np.ndarray) -> SyncResult:
        if len(frames) < 10:
            raise ValueError(f"clip too short for lip-sync ({len(frames)} frames)")
        if self.net is not None:
            return syncnet_scores(self.net, frames, boxes, pcm, self.cfg.vshift, self.cfg.syncnet_batch)
        return av_correlation(frames, boxes, pcm, self.cfg.vshift)


def score_sync(frames_rgb: np.ndarray, pcm16k: np.ndarray, cfg: Optional[SyncConfig] = None,
               boxes: Optional[np.ndarray] = None, faces_cfg=None) -> SyncResult:
    """Score a video (T, H, W, 3) RGB at 25 fps against 16 kHz mono audio.

    Without ``boxes`` the face is found with the configured face detector and the dominant
    track is used; a video with no face raises ``ValueError``.
    """
    from pipeline.config import FacesConfig

    cfg = cfg or SyncConfig()
    if boxes is None:
        from pipeline.faces import detect_frames, make_detector
        from pipeline.tracking import character_tracks, track_faces

        fcfg = faces_cfg or FacesConfig()
        dets = detect_frames(make_detector(fcfg), frames_rgb, fcfg.detect_every, fcfg.min_face_px)
        tracks = track_faces(dets, fcfg.iou_threshold, fcfg.max_gap)
        h, w = frames_rgb.shape[1:3]
        chars = character_tracks(tracks, len(dets), w, h, 1, 0.0)
        if not chars:
            raise ValueError("no face found for lip-sync scoring")
        boxes = chars[0][0].boxes_per_frame(len(frames_rgb))
    return SyncScorer(cfg).score(frames_rgb, boxes, np.asarray(pcm16k, np.float32))
