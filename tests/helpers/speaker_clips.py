"""Multi-speaker test inputs built from the real clips (never stored in the repo): two faces side
by side, each speaking its own audio in its turns and listening in the other's, written as
H.264 + PCM in Matroska so no AAC priming shifts the audio.

Each face plays its own source continuously through its turns, from a start time, and the audio
of a turn is that source's own audio over the same span: in every turn the audio is the
speaking face's speech, in sync. While a face listens it holds its current frame (a still face);
before its first turn, if its source has a silent pause right before its start, it plays that
pause back and forth instead (a real listening face). Nothing jumps, so the scene detector sees
one shot.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Optional

import av
import cv2
import numpy as np

from common import media

FPS = 25
SPF = 640  # audio samples per frame at 16 kHz
SIDE = 512  # each face's square, px

KATIE = "closeup_talk_hdtf_katiehill.mp4"
DEMO2 = "medium_talk_latentsync_demo2.mp4"
# demo2 is a 1080x1920 medium shot; this square (x, y, side) around the man's head makes a
# close-up the size of katie's, so both faces are large enough to read.
CROPS = {DEMO2: (180, 200, 720)}
# Silent pauses (frames, end exclusive) right before a speech run of the source: demo2 is
# silent 9.89-10.43 s (VAD) and then speaks 10.43-14.43 s without a break.
PAUSES = {DEMO2: [(248, 261)]}


@lru_cache(maxsize=8)
def square_frames(path: str, seconds: float) -> np.ndarray:
    """RGB frames at 25 fps of the first ``seconds``, cropped as in CROPS, resized to SIDE."""
    info = media.probe(path)
    frames, times = media.decode_video(path, max_frames=int(seconds * info.fps) + 2)
    frames = frames[media.resample_times(times, 0.0, seconds, float(FPS))]
    crop = CROPS.get(Path(path).name)
    if crop:
        x, y, s = crop
        frames = frames[:, y:y + s, x:x + s]
    out = np.stack([cv2.resize(f, (SIDE, SIDE), interpolation=cv2.INTER_AREA) for f in frames])
    out.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def source_audio(path: str) -> np.ndarray:
    pcm = media.decode_audio(path)
    pcm.setflags(write=False)
    return pcm


@dataclass
class Conversation:
    frames: np.ndarray  # (T, SIDE, 2 SIDE, 3)
    pcm: np.ndarray  # (T * SPF,)
    turns: list  # [(side, start_s, end_s)] the truth, in time order


def _listening(name: str, cursor: int, n: int, first: bool) -> list[int]:
    """Source frames of a face listening for ``n`` frames before showing frame ``cursor``."""
    for a0, a1 in PAUSES.get(name, []) if first else []:
        if a1 == cursor and a1 - a0 > 2:  # back and forth over the pause, ending on its last frame
            cycle = list(range(a1 - 1, a0, -1)) + list(range(a0, a1 - 1))
            return [cycle[(n - 1 - i) % len(cycle)] for i in range(n)]
    return [max(0, cursor - (0 if first else 1))] * n  # hold the frame shown last


def conversation(real_dir: Path, left: str, right: str, turns: list, start_s: dict,
                 seconds: float = 8.0) -> Conversation:
    """Left and right faces side by side; ``turns`` [(side, start_s, end_s)] ("left" or
    "right") in order; ``start_s[side]``: where in its source that face starts speaking."""
    n = int(round(seconds * FPS))
    names = {"left": left, "right": right}
    src = {k: square_frames(str(real_dir / v), 20.0) for k, v in names.items()}
    aud = {k: source_audio(str(real_dir / v)) for k, v in names.items()}
    cursor = {k: int(round(start_s[k] * FPS)) for k in names}
    spoke = {k: False for k in names}
    idx = {k: np.zeros(n, int) for k in names}
    pcm = np.zeros(n * SPF, np.float32)
    for side, t0, t1 in turns:
        f0, f1 = int(round(t0 * FPS)), min(n, int(round(t1 * FPS)))
        g0 = cursor[side]
        idx[side][f0:f1] = g0 + np.arange(f1 - f0)
        a = aud[side][g0 * SPF:(g0 + f1 - f0) * SPF]
        pcm[f0 * SPF:f0 * SPF + len(a)] = a
        other = "right" if side == "left" else "left"
        idx[other][f0:f1] = _listening(names[other], cursor[other], f1 - f0, not spoke[other])
        cursor[side] += f1 - f0
        spoke[side] = True
    frames = np.concatenate([src["left"][idx["left"]], src["right"][idx["right"]]], axis=2)
    return Conversation(frames, pcm, list(turns))


def write_mkv(path: Path, frames: np.ndarray, pcm: Optional[np.ndarray], rate: int = 16000) -> Path:
    """H.264 video and 16-bit PCM audio in Matroska (PCM has no encoder delay to trim)."""
    with av.open(str(path), mode="w", format="matroska") as c:
        v = c.add_stream("libx264", rate=Fraction(FPS))
        v.height, v.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
        v.pix_fmt = "yuv420p"
        v.options = {"crf": "18", "preset": "veryfast", "x264-params": "log-level=error"}
        a = None
        if pcm is not None:
            a = c.add_stream("pcm_s16le", rate=rate)
            a.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:v.height, :v.width]), format="rgb24")
            vf.pts = i
            for p in v.encode(vf):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            s16 = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
            for i in range(0, len(s16), 1024):
                af = av.AudioFrame.from_ndarray(s16[None, i:i + 1024].copy(), format="s16", layout="mono")
                af.sample_rate = rate
                af.pts = i
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path
