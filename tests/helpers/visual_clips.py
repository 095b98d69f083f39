"""Test inputs for the visual-stage tests, derived from the real clips (never stored in the repo):
decoded at the stage's analysis size, cut to a few seconds, re-encoded at 25 fps, with audio
shifted, replaced or mixed as a test needs."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from common import media

SPF = 640  # 16 kHz samples per 25 fps frame


@lru_cache(maxsize=16)
def frames_25(path: str, seconds: float, max_side: int = 640) -> np.ndarray:
    """RGB frames at 25 fps (timestamps resampled), longest side <= max_side."""
    info = media.probe(path)
    w, h = media.fit_size(info.width, info.height, max_side)
    frames, times = media.decode_video(path, width=w, height=h, max_frames=int(seconds * info.fps) + 2)
    idx = media.resample_times(times, 0.0, seconds, 25.0)
    frames = frames[idx]
    frames.setflags(write=False)
    return frames


@lru_cache(maxsize=16)
def pcm_for(path: str, num_frames: int, delay_frames: int = 0) -> np.ndarray:
    """16 kHz mono audio cut to ``num_frames`` video frames, optionally delayed (zeros in front)."""
    pcm = media.decode_audio(path)
    pcm = np.pad(pcm, (0, max(0, num_frames * SPF - len(pcm))))[: num_frames * SPF]
    if delay_frames:
        pcm = np.concatenate([np.zeros(delay_frames * SPF, np.float32), pcm[: len(pcm) - delay_frames * SPF]])
    pcm.setflags(write=False)
    return pcm


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two clips next to each other (right resized to the left's height)."""
    n = min(len(left), len(right))
    h = left.shape[1]
    rw = int(round(right.shape[2] * h / right.shape[1])) // 2 * 2
    r = np.stack([cv2.resize(f, (rw, h), interpolation=cv2.INTER_AREA) for f in right[:n]])
    return np.concatenate([left[:n], r], axis=2)


def make_row(frames: np.ndarray, pcm, **extra) -> dict:
    video = media.encode_mp4(frames, 25)
    row = {"clip_id": extra.pop("clip_id", "test"), "video": video, "fps": 25.0,
           "width": int(frames.shape[2]) // 2 * 2, "height": int(frames.shape[1]) // 2 * 2,
           "num_frames": len(frames),
           "audio_pcm": np.asarray(pcm if pcm is not None else np.zeros(0), np.float32),
           "has_audio": pcm is not None, "speech_ratio": 0.9 if pcm is not None else None,
           "speech_segments": "[]", "st2v_block": None if pcm is not None else "no_audio_stream",
           "reject_stage": None, "reject_reason": None, "backends": "{}"}
    row.update(extra)
    return row


def real(real_dir: Path, name: str) -> str:
    return str(real_dir / name)
