"""Lip-sync scoring: offset, min distance and confidence over a +-vshift frame search.

The published SyncNet procedure (joonson/syncnet_python): embed every 5-frame video window and
its 0.2 s of audio, compare video window i with audio windows i-vshift..i+vshift, average the
distances over i per shift, then ``offset = vshift - argmin``, ``dist = min``, ``conf = median -
min``. Offset convention: video frame i matches audio frame i - offset, so a positive offset
means the audio runs ahead of the picture; re-aligning delays the audio by ``offset`` frames.

Two backends fill the same numbers:
- ``syncnet``: the SyncNet v2 network (model/syncnet.py) from a user-supplied checkpoint;
- ``av-correlation`` (embedded default, no weights): mouth opening velocity of the face track
  (vertical optical flow of chin and lower lip against the nose, on a stabilised lower-face
  crop) correlated with the change of the 1-3 kHz speech energy, averaged over 3 s windows; the
  distance per shift is ``1 - correlation`` and the confidence a z-score of the peak against far
  shifts (a different scale from SyncNet's, see SyncConfig). Measured on the real clips
  (benchmarks/bench_visual.py, 8-10 s, YuNet boxes): the two LatentSync clips are found in sync
  (+1) and known audio delays of 5 and 10 frames are reported within 1 frame; the close-up
  measures a constant -2 (so -7 and -12 for the delays) although its lip releases coincide
  with the acoustic bursts: a speaker-dependent bias, so offsets within
  ``SyncConfig.avcorr_realign_deadband`` are recorded but not applied. Matched speech scores
  2.6-3.2 on 8-10 s clips against 2.0-2.4 for mismatched speech or music: a thin margin
  (threshold 2.5), and the same speaker 4 s out of step, as the second face of a side-by-side
  clip, measured 2.65. A coarse filter until a SyncNet checkpoint is set.

:func:`score_sync` is the reusable entry point (also used by ``mocha eval`` on generated videos).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import cv2
import numpy as np
from pydantic import Field
from scipy.fft import dct
from scipy.ndimage import median_filter, uniform_filter1d

from common.media import AUDIO_RATE, VIDEO_FPS
from schemas.base import Strict


class SyncConfig(Strict):
    # auto: SyncNet when syncnet_checkpoint is set, else the weight-free av-correlation backend.
    backend: Literal["auto", "syncnet", "av-correlation"] = "auto"
    syncnet_checkpoint: Optional[str] = None  # syncnet_v2.model (joonson/syncnet_python layout)
    vshift: int = Field(15, ge=1, le=50)  # published search range: +-15 frames = +-0.6 s at 25 fps
    # SyncNet confidence: curation pipelines (e.g. LatentSync's) keep clips with conf >= 3.
    syncnet_min_conf: float = Field(3.0, ge=0)
    # av-correlation confidence = z-score of the peak correlation within +-vshift against the same
    # statistic where sound and picture are unrelated (far shifts, time-reversed signals).
    # Measured on the real clips with YuNet boxes (benchmarks/bench_visual.py; the same clips
    # trimmed by 0-10 frames to see the spread): synced talking clips, aligned or delayed,
    # 2.64-3.8 at 8-10 s and 6.8 for 20 s; mismatched speech 2.1-2.4, music under a talking face
    # 2.0-2.2, a face moving to music 1.7-2.1. The margin is thin, ~0.14 on each side of 2.5 for
    # 8-10 s clips (scores grow roughly with sqrt(duration); 5-6 s of speech is near chance, ~2),
    # so this is a coarse filter; SyncNet (syncnet_min_conf) is the real one.
    avcorr_min_conf: float = Field(2.5, ge=0)
    # Offsets beyond this are not trusted enough to re-align (a real A/V lag rarely exceeds
    # 0.4 s); such clips keep their audio and are blocked from st2v.
    max_realign_offset: int = Field(10, ge=0)
    # The weight-free offset is biased per speaker. The close-up (katiehill) is in sync by its
    # lips: at three bilabial releases (shut in frames 34, 62, 148, open in the next) the
    # acoustic burst starts at frame 33.5, 62.3, 148.0, audio if anything early; yet its mouth
    # motion leads the 1-3 kHz energy by 2.4 frames, so it measures -2. The LatentSync clips
    # measure +1 (+0.5, +0.9). An estimate this close to zero is inside that error: recorded
    # in sync_offset, not applied to the audio (sync_shift_frames says what was applied).
    # SyncNet offsets are applied as measured. docs/DESIGN-NOTES.md has the details.
    avcorr_realign_deadband: int = Field(3, ge=0)
    syncnet_batch: int = Field(20, ge=1)  # published batch size




@dataclass
class SyncResult:
    offset: int
    conf: float
    dist: float
    backend: str
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mean distance per shift (-vshift..vshift)


def scores_from_distances(mdist: np.ndarray, vshift: int) -> tuple[int, float, float]:
    """The published reduction of the per-shift mean distances (index k = shift k - vshift)."""
    k = int(np.argmin(mdist))
    minval = float(mdist[k])
    return vshift - k, float(np.median(mdist) - minval), minval


def shift_audio(pcm: np.ndarray, offset: int, fps: float = VIDEO_FPS, rate: int = AUDIO_RATE) -> np.ndarray:
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
#
# Mouth opening velocity against the speech envelope's rate of change. Both are "how fast is the
# articulation changing now" signals, so at the right shift they rise and fall together. What
# was measured on the real clips (benchmarks/bench_visual.py) decided each choice below:
# - visual: vertical optical flow of the chin and of the lower lip, each minus the flow of the
#   nose (the nose does not move with the jaw, so head translation cancels). Medians over small
#   regions, so a few misread pixels (teeth appearing as the mouth opens) do not dominate;
# - audio: change of the 1-3 kHz log energy (consonant releases and vowel onsets). With 0.3-3
#   kHz the LatentSync clips peaked 12-14 frames off; 1-3, 1-4 and 1.5-5 kHz all agree;
# - both signals are high-passed (1 s), z-normalised and clipped at 2.5 sd, so one head turn or
#   one loud burst does not outweigh seconds of speech;
# - correlation is averaged over 3 s windows (1 s hop), like SyncNet averages per-frame
#   distances, then compared to the same curve where audio and picture are unrelated (far
#   shifts, time-reversed audio or picture): confidence is the z-score of the peak against that.

_LOWFACE = 96  # px side of the lower-face crop the flow runs on
_CROP_Y = (0.40, 1.10)  # crop rows as fractions of the face box height from its top
_CROP_X = 0.40  # crop half-width as a fraction of the box width
# Regions as (top, bottom, half-width) in face-box fractions. YuNet puts the mouth corners at
# 0.72-0.76 of the box height on all the real clips, the nose tip at 0.55-0.62.
_NOSE, _LOWER_LIP, _CHIN = (0.50, 0.62, 0.12), (0.78, 0.86, 0.15), (0.88, 1.00, 0.15)
_BAND_HZ = (1000.0, 3000.0)
_HP_FRAMES = 25  # 1 s high-pass: removes breathing-rate drifts and slow head nods
_CLIP_SD = 2.5
_WIN, _HOP = 75, 25  # 3 s windows, 1 s hop
_NULL_LAGS = (40, 120)  # |shift| range assumed unrelated (1.6-4.8 s, beyond any syllable rhythm)
_NULL_MAX = 250  # shifts per time-reversed surrogate (every shift of a clip up to 10 s)


def stable_boxes(boxes: np.ndarray) -> np.ndarray:
    """A median filter first (detector outliers and the box following the chin on open vowels
    must not become mouth motion), then a short mean for the centre and a long one for size."""
    b = np.asarray(boxes, np.float64)[:, :4]
    k = max(1, min(9, len(b)))
    c = median_filter((b[:, :2] + b[:, 2:]) / 2, size=(k, 1), mode="nearest")
    s = median_filter(b[:, 2:] - b[:, :2], size=(k, 1), mode="nearest")
    c = uniform_filter1d(c, 3, axis=0, mode="nearest")
    s = uniform_filter1d(s, 9, axis=0, mode="nearest")
    return np.concatenate([c - s / 2, c + s / 2], 1)


def lower_face_crops(frames: np.ndarray, boxes: np.ndarray, size: int = _LOWFACE) -> np.ndarray:
    """(T, size, size) gray crops from nose to below the chin on the stabilised track, scaled
    per axis so a region is the same rows of the crop at any face size."""
    out = np.empty((len(frames), size, size), np.uint8)
    for i, (f, (x0, y0, x1, y1)) in enumerate(zip(frames, stable_boxes(boxes))):
        w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
        cx = (x0 + x1) / 2
        sx0, sy0 = cx - _CROP_X * w, y0 + _CROP_Y[0] * h
        sx, sy = size / (2 * _CROP_X * w), size / ((_CROP_Y[1] - _CROP_Y[0]) * h)
        m = np.array([[sx, 0, -sx0 * sx], [0, sy, -sy0 * sy]], np.float32)
        gray = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        out[i] = cv2.warpAffine(gray, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return out


def _region(top: float, bottom: float, half: float, size: int = _LOWFACE) -> tuple[slice, slice]:
    span = _CROP_Y[1] - _CROP_Y[0]
    r0, r1 = int((top - _CROP_Y[0]) / span * size), int((bottom - _CROP_Y[0]) / span * size)
    c0, c1 = int((0.5 - half / (2 * _CROP_X)) * size), int((0.5 + half / (2 * _CROP_X)) * size)
    return slice(r0, r1), slice(c0, c1)


def mouth_signals(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T, 2) opening velocity (crop px/frame, positive = opening): chin and lower lip, each
    relative to the nose."""
    crops = lower_face_crops(frames, boxes)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    nose, lip, chin = (_region(*r) for r in (_NOSE, _LOWER_LIP, _CHIN))
    out = np.zeros((len(crops), 2))
    for i in range(1, len(crops)):
        vy = dis.calc(crops[i - 1], crops[i], None)[..., 1]
        n = np.median(vy[nose])
        out[i] = np.median(vy[chin]) - n, np.median(vy[lip]) - n
    return out


def speech_signal(pcm: np.ndarray, num_frames: int, fps: float = VIDEO_FPS, rate: int = AUDIO_RATE) -> np.ndarray:
    """(T,) change per video frame of the 1-3 kHz log energy (25 ms windows every 10 ms,
    averaged over the 4 analysis steps inside each 40 ms frame)."""
    hop, win = rate // 100, int(0.025 * rate)
    n_steps = int(round(num_frames * 100 / fps))
    x = np.zeros(n_steps * hop + win, np.float32)
    n = min(len(pcm), len(x))
    x[:n] = np.asarray(pcm[:n], np.float32)
    idx = np.arange(win)[None, :] + hop * np.arange(n_steps)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(win), 512)) ** 2
    freqs = np.fft.rfftfreq(512, 1.0 / rate)
    band = spec[:, (freqs >= _BAND_HZ[0]) & (freqs <= _BAND_HZ[1])].sum(1)
    per = n_steps // num_frames
    e = band[: num_frames * per].reshape(num_frames, per).mean(1)
    # Floor 60 dB under the clip's peak: digital silence (padding, re-alignment) is not -inf.
    loge = np.log(e + 1e-6 * max(float(e.max()), 1e-12) + 1e-12)
    return np.diff(loge, prepend=loge[:1])


def _prepare(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x - uniform_filter1d(x, _HP_FRAMES, mode="nearest")
    sd = x.std()
    x = (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)
    return np.clip(x, -_CLIP_SD, _CLIP_SD)


def windowed_correlation(video: np.ndarray, audio: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Correlation of video[i] with audio[i - s] (circular) per lag s, averaged over windows."""
    T = min(len(video), len(audio))
    if len(lags) == 0:
        return np.zeros(0)
    win = min(_WIN, T)
    # Windows spread evenly so the last one ends on the last frame: every frame counts, whatever
    # the clip length (a fixed hop from 0 would drop up to hop-1 final frames).
    starts = np.linspace(0, T - win, int(np.ceil((T - win) / _HOP)) + 1).round().astype(int)
    # (L, T) audio rolled by each lag; each window is centred and normalised per lag.
    rolled = np.stack([np.roll(audio[:T], int(s)) for s in lags])
    out = np.zeros(len(lags))
    for s0 in starts:
        v = video[s0:s0 + win] - video[s0:s0 + win].mean()
        a = rolled[:, s0:s0 + win] - rolled[:, s0:s0 + win].mean(1, keepdims=True)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(v)
        out += np.where(den > 1e-9, a @ v / np.maximum(den, 1e-9), 0.0)
    return out / max(1, len(starts))


def null_lags(num_frames: int, vshift: int) -> np.ndarray:
    """Far shifts for the null curve; a short clip falls back to whatever lies beyond the search."""
    lo, hi = _NULL_LAGS
    hi = min(hi, num_frames - lo)
    if hi - lo < 10:
        lo, hi = vshift + 5, num_frames // 2
    pos = np.arange(lo, hi + 1) if hi >= lo else np.zeros(0, int)
    return np.concatenate([pos, -pos])


def av_correlation(frames: np.ndarray, boxes: np.ndarray, pcm: np.ndarray, vshift: int) -> SyncResult:
    T = len(frames)
    mouth = mouth_signals(frames, boxes)
    audio = _prepare(speech_signal(pcm, T))
    lags = np.arange(-vshift, vshift + 1)
    # At most _NULL_MAX circular shifts of the reversed signals: memory and time stay linear in
    # the clip length (all T shifts of a 5-minute clip would be a T x T matrix).
    far, every = null_lags(T, vshift), np.unique(np.linspace(0, T - 1, min(T, _NULL_MAX)).astype(int))
    r = np.zeros(len(lags))
    nulls = []
    for j in range(mouth.shape[1]):
        v = _prepare(mouth[:, j])
        r += windowed_correlation(v, audio, lags) / mouth.shape[1]
        # Null: the same statistic where picture and sound are unrelated: far shifts, and every
        # shift of either signal played backwards (same spectra and rhythm, no alignment). The
        # reversed surrogates triple the null sample, which steadies the z-score on short clips.
        nulls.append(np.concatenate([windowed_correlation(v, audio, far),
                                     windowed_correlation(v, audio[::-1].copy(), every),
                                     windowed_correlation(v[::-1].copy(), audio, every)]))
    null = np.mean(nulls, 0)
    k = int(np.argmax(r))
    sd = float(null.std())
    conf = float((r[k] - null.mean()) / sd) if sd > 1e-9 else 0.0
    if T < _WIN:
        # Under one 3 s window the null has too few independent shifts for the z-score to mean
        # anything (random frames and noise reach 2.7 at 12 frames): claim no sync evidence.
        conf = 0.0
    # Distances as in the published search (smaller = better): index k <-> offset vshift - k.
    mdist = (1.0 - r)[::-1]
    return SyncResult(int(lags[k]), conf, float(1.0 - r[k]), "av-correlation", mdist)


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
    n = min(len(crops), len(pcm) // int(AUDIO_RATE / VIDEO_FPS)) - 5
    if n < 1:
        raise ValueError(f"clip too short for SyncNet ({len(crops)} frames)")
    device = next(net.parameters()).device
    vid = torch.from_numpy(np.ascontiguousarray(crops.transpose(3, 0, 1, 2))).float().to(device)  # (3, T, H, W)
    aud = torch.from_numpy(cc).float().to(device)
    vf, af = [], []
    with torch.no_grad():
        for i in range(0, n, batch):
            js = range(i, min(n, i + batch))
            vf.append(net.forward_lip(torch.stack([vid[:, j:j + 5] for j in js])))
            af.append(net.forward_aud(torch.stack([aud[None, :, 4 * j:4 * j + 20] for j in js])))
    mdist = distance_curve(torch.cat(vf).cpu(), torch.cat(af).cpu(), vshift)
    offset, conf, dist = scores_from_distances(mdist, vshift)
    return SyncResult(offset, conf, dist, "syncnet-v2", mdist)


# --- entry points -------------------------------------------------------------------------------

class SyncScorer:
    """Holds the loaded backend (once per worker) and scores one face track."""

    def __init__(self, cfg: SyncConfig, device: str = "cpu"):
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
            self.net = load_syncnet(cfg.syncnet_checkpoint, device)

    @property
    def min_conf(self) -> float:
        return self.cfg.syncnet_min_conf if self.net is not None else self.cfg.avcorr_min_conf

    @property
    def realign_deadband(self) -> int:
        """Offsets with ``|offset|`` up to this are within the backend's error: not applied."""
        return 0 if self.net is not None else self.cfg.avcorr_realign_deadband

    def info(self) -> dict:
        if self.net is not None:
            return {"backend": "syncnet-v2", "fallback": False, "checkpoint": str(self.cfg.syncnet_checkpoint)}
        return {"backend": "av-correlation", "fallback": True, "model": None}

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
    from pipeline.stages.visual.faces import FacesConfig

    cfg = cfg or SyncConfig()
    if boxes is None:
        from pipeline.stages.visual.faces import detect_frames, make_detector
        from pipeline.stages.visual.tracking import character_tracks, track_faces

        fcfg = faces_cfg or FacesConfig()
        dets = detect_frames(make_detector(fcfg), frames_rgb, fcfg.detect_every, fcfg.min_face_px)
        tracks = track_faces(dets, fcfg.iou_threshold, fcfg.max_gap)
        h, w = frames_rgb.shape[1:3]
        chars = character_tracks(tracks, len(dets), w, h, 1, 0.0)
        if not chars:
            raise ValueError("no face found for lip-sync scoring")
        boxes = chars[0][0].boxes_per_frame(len(frames_rgb))
    return SyncScorer(cfg).score(frames_rgb, boxes, np.asarray(pcm16k, np.float32))
