"""Clip cut + normalise: one pass over a segment of a source's frames cuts each of its windows
into an H.264 mp4 at a fixed frame rate; the audio comes cut to 16 kHz mono per window.

Frames are resampled by time (for each output tick, the latest source frame shown at that
instant), so VFR sources come out at a constant rate with correct timing. Each window's motion
is measured on the pictures it is made of (``pipeline.stages.visual.motion``), and its pictures
are held back from the encoder until the window cannot be still: a still or chaotic window is a
ledger row (``motion``), never encoded, and never decoded again by the visual stage. On the
episodes of ``benchmarks/bench_long_source.py`` a fifth of the windows are stills. Source frame indices
(``start_frame``/``end_frame``, end exclusive) count decoded frames whatever their timing; they
come from the scene scan, which decodes every frame anyway.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from common.fs import redact
from common.media import AUDIO_RATE, VIDEO_FPS, MediaError, Mp4Writer, fit_size, iter_pictures
from pipeline.source.scenes import Window
from pipeline.stages.visual.motion import MotionConfig, MotionMeter, gray_from_yuv, gray_size
from pipeline.stages.visual.motion import backend_label as motion_backend
from schemas.base import Strict


class ClipsConfig(Strict):
    # Fixed, not a free choice: lip-sync offsets, the speaking-score windows and the trainer's
    # speech-video window mask are all defined on a 25 fps timeline (common.media.VIDEO_FPS).
    fps: float = VIDEO_FPS
    # Longest side of the stored clip; larger sources are downscaled (aspect kept, even sizes).
    max_side: int = Field(1280, ge=64)
    crf: int = Field(20, ge=0, le=51)
    # x264 preset: the encode is the largest single cost of curation on a CPU. On the real clips
    # at crf 20, superfast encodes 1.4-2.8x faster than veryfast at the same PSNR against the
    # source (within 0.2 dB), for 6-37 % more bytes; veryfast is the choice where storage
    # weighs more than curation time.
    preset: str = "superfast"
    audio_rate: Literal[16000] = AUDIO_RATE  # Silero VAD, Wav2Vec2, SyncNet and LR-ASD all take 16 kHz
    audio_format: Literal["flac", "wav"] = "flac"

    @field_validator("fps")
    @classmethod
    def _fixed_fps(cls, v: float) -> float:
        if abs(float(v) - VIDEO_FPS) > 1e-9:
            raise ValueError(f"clips are stored at {VIDEO_FPS:g} fps: lip-sync offsets, speaking scores and the "
                             f"trainer's speech-video window are defined at that rate (got {v})")
        return float(v)


def clip_id_for(source_sha256: str, start_s: float, end_s: float) -> str:
    """Deterministic from source content and span (millisecond resolution): reruns agree."""
    key = f"{source_sha256}:{int(round(start_s * 1000))}:{int(round(end_s * 1000))}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def base_row(source: dict) -> dict:
    """Every row in the pipeline starts from this template, so all rows share one set of keys."""
    return {
        "clip_id": None,
        "source_uri": redact(source["source_uri"]),
        "source_sha256": source.get("source_sha256"),
        "start_s": None, "end_s": None, "start_frame": None, "end_frame": None,
        "scene_index": None, "window_index": None,
        "fps": None, "width": None, "height": None, "num_frames": None,
        "video": b"", "has_audio": bool(source.get("has_audio", False)),
        "audio_pcm": np.zeros(0, np.float32),
        "status": None, "reject_stage": None, "reject_reason": None, "st2v_block": None,
        "backends": "{}",
    }


def failed_source_row(source: dict, status: str, stage: str, reason: str) -> dict:
    row = base_row(source)
    row.update(status=status, reject_stage=stage, reject_reason=reason)
    return row


def short_scene_row(source: dict, w: Window, min_clip_s: float) -> dict:
    """The ledger row of a scene too short to become a clip (not encoded)."""
    r = base_row(source)
    r.update(clip_id=clip_id_for(source["source_sha256"], w.start_s, w.end_s), start_s=w.start_s, end_s=w.end_s,
             scene_index=w.scene_index, window_index=0, status="rejected", reject_stage="scenes",
             reject_reason=f"too_short: {w.duration:.2f}s < min {min_clip_s:.2f}s")
    return r


class SeekMissed(RuntimeError):
    """The container could not seek to a keyframe before the segment (no usable index)."""


def cut_windows(src, source: dict, windows: list[Window], audio: Optional[list[np.ndarray]], cfg: ClipsConfig,
                src_width: int, src_height: int, seek: bool = False, final: bool = True,
                motion: Optional[MotionConfig] = None, threads: Optional[int] = None) -> list[dict]:
    """Rows for ``windows`` (consecutive, spans known), encoded in one pass over the source's
    frames. ``seek``: start decoding at the last keyframe before the first window instead of the
    beginning (a later segment of a long source); ``final``: these windows end the source, so the
    last one runs to the end of the video stream. ``audio``: each window's samples, or None.
    ``motion``: measure each window's motion, and reject still and chaotic ones unencoded.
    ``threads``: the decoder's and each encoder's threads (``common.media.media_threads``)."""
    width, height = fit_size(src_width, src_height, cfg.max_side)
    states = [_WindowState(w, cfg, motion, width, height, threads) for w in windows]
    prev = None  # the latest decoded picture
    prev_t = 0.0
    failure: Optional[str] = None
    try:
        frames = iter_pictures(src, width, height, start_s=windows[0].start_s if seek else None, threads=threads)
        for t, frame in frames:
            if prev is None and seek and t > windows[0].start_s + 1e-6:
                raise SeekMissed(f"seek landed at {t:.3f}s, after the first window at {windows[0].start_s:.3f}s")
            for st in states:
                if prev is not None:
                    st.emit_until(t, prev, width, height)
            prev, prev_t = frame, t
            if not final and all(st.done for st in states):
                break  # the rest of the source belongs to later segments
    except MediaError as e:
        failure = str(e)
    last_frame_end = prev_t + 1.0 / cfg.fps
    rows = []
    for k, st in enumerate(states):
        r = base_row(source)
        w = st.w
        r.update(clip_id=clip_id_for(source["source_sha256"], w.start_s, w.end_s), start_s=w.start_s, end_s=w.end_s,
                 scene_index=w.scene_index, window_index=w.window_index, fps=float(cfg.fps), width=width, height=height,
                 start_frame=w.start_frame, end_frame=w.end_frame)
        if prev is not None and failure is None:
            st.emit_until(max(w.end_s, last_frame_end) if final else w.end_s, prev, width, height, final=True)
        elif prev is not None and st.complete_before(prev_t):
            st.emit_until(w.end_s, prev, width, height, final=True)
        if st.motion is not None:
            r.update(motion_score=round(st.motion[0], 4), motion_class=st.motion[1])
        if st.still and (failure is None or st.complete_before(prev_t)):
            r.update(status="rejected", reject_stage="motion", reject_reason=st.motion[1])
        elif st.data is None or (failure is not None and not st.complete_before(prev_t)):
            r.update(status="error", reject_stage="clips",
                     reject_reason=f"decode_failed: {failure}" if failure else "no frames in window")
            st.abort()
        else:
            r["video"] = st.data
            r["num_frames"] = st.n
            if audio is not None:
                r["audio_pcm"] = np.ascontiguousarray(audio[k], dtype=np.float32)
        label = {"clips": {"backend": "pyav", "fallback": False, "encoder": "libx264", "crf": cfg.crf,
                           "preset": cfg.preset, "fps": cfg.fps, "audio": f"{AUDIO_RATE} Hz mono"}}
        if motion is not None:
            label["motion"] = motion_backend(motion)
        r["backends"] = json.dumps(label, sort_keys=True, separators=(",", ":"))
        rows.append(r)
    return rows


# Pictures a window holds back from its encoder while it may be still, at most (bytes). A still
# 10 s window of 1280 x 720 is 345 MB: one held longer is encoded (and still rejected).
HOLD_BYTES = 384 * 1024**2


class _WindowState:
    """Encoder state of one window while the source is decoded once for all windows."""

    def __init__(self, w: Window, cfg: ClipsConfig, motion: Optional[MotionConfig], width: int, height: int,
                 threads: Optional[int] = None):
        self.w = w
        self.threads = threads
        self.cfg = cfg
        self.ticks = max(1, int(math.floor(w.duration * cfg.fps + 1e-6)))
        self.n = 0
        self.writer: Optional[Mp4Writer] = None
        self.data: Optional[bytes] = None
        self.meter = MotionMeter(motion, self.ticks) if motion is not None else None
        self.gray_size = gray_size(width, height, motion) if motion is not None else None
        # pictures held back while the window may be still (None: the encoder has them all)
        self.held: Optional[list] = [] if motion is not None else None
        self.max_held = max(1, HOLD_BYTES // (width * height * 3 // 2))
        self.motion: Optional[tuple[float, str]] = None  # (score, class) once the window is full
        self.still = False  # still or chaotic: not a clip

    @property
    def done(self) -> bool:
        """Every tick emitted: encoded, or judged still or chaotic."""
        return self.data is not None or self.still

    def tick_time(self, k: int) -> float:
        return self.w.start_s + k / self.cfg.fps

    def emit_until(self, t_next: float, frame, width: int, height: int, final: bool = False) -> None:
        """Emit every tick before ``t_next`` with ``frame`` (the latest frame shown then)."""
        while self.n < self.ticks and (self.tick_time(self.n) < t_next - 1e-6 or (final and self.tick_time(self.n) < t_next + 1e-6)):
            if self.meter is not None and self.meter.wants(self.n):
                self.meter.add(gray_from_yuv(frame, self.gray_size))
            if self.held is not None and (self.meter.cannot_be_static() or len(self.held) >= self.max_held):
                self._release(width, height)
            if self.held is not None:
                self.held.append(frame)
            else:
                self._write(frame, width, height)
            self.n += 1
        if self.n == self.ticks and self.data is None and not self.still:
            self._finish(width, height)

    def _write(self, frame, width: int, height: int) -> None:
        if self.writer is None:
            self.writer = Mp4Writer(width, height, self.cfg.fps, self.cfg.crf, self.cfg.preset, threads=self.threads)
        self.writer.write(frame)

    def _release(self, width: int, height: int) -> None:
        held, self.held = self.held, None
        for f in held:
            self._write(f, width, height)

    def _finish(self, width: int, height: int) -> None:
        if self.meter is not None:
            self.motion = self.meter.result()
            if self.motion[1] != "normal":
                self.still, self.held = True, None
                self.abort()  # free the encoder as soon as the window is full
                return
            if self.held is not None:
                self._release(width, height)
        if self.writer is not None:
            self.data = self.writer.close()

    def complete_before(self, t: float) -> bool:
        return self.w.end_s <= t + 1e-6

    def abort(self) -> None:
        self.held = None
        if self.writer is not None and self.data is None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None

