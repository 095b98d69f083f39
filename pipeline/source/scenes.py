"""Scene split with PySceneDetect on a downscaled decode, and the clip windows derived from it.

Times come from PySceneDetect's timecodes (presentation timestamps on the pyav backend), so
variable-frame-rate sources are cut by time, not by frame counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import av
import numpy as np
from pydantic import Field, model_validator

from common.media import decoder_threads, media_threads
from schemas.base import Strict


class ScenesConfig(Strict):
    detector: Literal["adaptive", "content", "threshold", "histogram", "hash"] = "adaptive"
    # Extra keyword arguments of the PySceneDetect detector (e.g. {"threshold": 27.0});
    # empty means the detector's own published defaults.
    detector_args: dict[str, Any] = {}
    # PySceneDetect downscale factor for the analysis decode; 0 = its automatic choice
    # (about 256 px wide), which is what its published goldens use.
    downscale: int = Field(0, ge=0)
    # MoCha trains on short shots; below 2 s there is too little speech to learn lip motion,
    # above 10 s a clip no longer fits a training sample, so long scenes become windows.
    min_clip_s: float = Field(2.0, gt=0)
    max_clip_s: float = Field(10.0, gt=0)
    # A source is cut and committed in segments of consecutive windows covering about this much
    # video, each its own task: a cut worker holds one segment (bounded memory whatever the
    # source's length), segments of one film run in parallel and overlap with the later stages,
    # and a killed job redoes only the segments it had not committed. A minute keeps a segment
    # to ~6 clips (a few tens of MB in flight) at a task overhead well under 1 %.
    segment_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.max_clip_s < self.min_clip_s:
            raise ValueError(f"scenes.max_clip_s ({self.max_clip_s}) < scenes.min_clip_s ({self.min_clip_s})")
        return self


DETECTORS = {
    "adaptive": "AdaptiveDetector",
    "content": "ContentDetector",
    "threshold": "ThresholdDetector",
    "histogram": "HistogramDetector",
    "hash": "HashDetector",
}


@dataclass
class Scene:
    index: int
    start_s: float
    end_s: float
    start_frame: int  # on PySceneDetect's (nominal-rate) frame timeline
    end_frame: int


@dataclass
class Window:
    scene_index: int
    window_index: int
    start_s: float
    end_s: float
    # source frames shown in the window (end exclusive), from the scene scan's frame times
    start_frame: Optional[int] = None
    end_frame: Optional[int] = None

    @property
    def duration(self) -> float:
        return self.end_s - self.start_s


def make_detector(cfg: ScenesConfig):
    import scenedetect.detectors as d

    cls = getattr(d, DETECTORS[cfg.detector])
    try:
        return cls(**cfg.detector_args)
    except TypeError as e:
        raise ValueError(f"scenes.detector_args {cfg.detector_args} do not fit {cls.__name__}: {e}") from None


@dataclass
class SceneScan:
    """What one decode of the source for scene detection tells: the scenes, and the time of
    every decoded frame (and which are keyframes), so that clip spans in source frames and the
    seek points of long sources are known without decoding again."""

    scenes: list[Scene]
    frame_times: np.ndarray  # seconds from the container start, one per decoded frame
    keyframes: list[tuple[float, int]]  # (time, frame index) of every keyframe

    @property
    def cuts(self) -> list[float]:
        return [s.start_s for s in self.scenes[1:]]


def detect_scenes(src: Union[str, object], cfg: ScenesConfig, threads: Optional[int] = None) -> SceneScan:
    """Scenes covering the whole video, from PySceneDetect on its own (downscaled) decode with
    ``threads`` decoder threads (``common.media.media_threads``)."""
    from scenedetect import SceneManager

    video = _recording_stream(src, threads)
    sm = SceneManager()
    sm.add_detector(make_detector(cfg))
    if cfg.downscale > 0:
        sm.auto_downscale = False
        sm.downscale = cfg.downscale
    sm.detect_scenes(video=video, show_progress=False)
    scenes = []
    for i, (a, b) in enumerate(sm.get_scene_list(start_in_scene=True)):
        scenes.append(Scene(i, float(a.seconds), float(b.seconds), int(a.frame_num), int(b.frame_num)))
    # the last scene ends where the video stream ends (PySceneDetect's end timecode), not at the
    # container duration, which an audio tail can make longer than the pictures
    return SceneScan(scenes, np.asarray(video.times, dtype=np.float64), video.keyframes)


class _LenientPyAV:
    """PyAV as PySceneDetect's backend sees it, except that containers open with lenient
    metadata decoding (as in common.media): a tag that is not UTF-8 would otherwise make it
    refuse a video whose pictures and sound are intact. The backend calls ``av.open`` itself
    and takes no open options, so its module's name for PyAV is pointed here."""

    def __getattr__(self, name: str):
        return getattr(av, name)

    @staticmethod
    def open(*args, **kwargs):
        kwargs.setdefault("metadata_errors", "replace")
        return av.open(*args, **kwargs)


def _recording_stream(src, threads: Optional[int] = None):
    import scenedetect.backends.pyav as backend
    from scenedetect.backends.pyav import VideoStreamAv

    if not isinstance(backend.av, _LenientPyAV):
        backend.av = _LenientPyAV()

    class RecordingStream(VideoStreamAv):
        """PySceneDetect's PyAV stream, noting each decoded frame's time and keyframe flag."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            st = self._container.start_time
            self._start = float(st / av.time_base) if st is not None else 0.0
            self.times: list[float] = []
            self.keyframes: list[tuple[float, int]] = []

        def read(self, decode: bool = True):
            out = super().read(decode)
            if out is not False and self._frame is not None:
                f = self._frame
                if f.pts is not None and f.time_base:
                    t = float(f.pts * f.time_base) - self._start
                else:  # no timestamp: one nominal frame after the last
                    t = (self.times[-1] if self.times else 0.0) + 1.0 / float(self.frame_rate or 25)
                if f.key_frame:
                    self.keyframes.append((t, len(self.times)))
                self.times.append(t)
            return out

    # suppress_output: PyAV's default (FFmpeg logs off); scenedetect would otherwise switch
    # FFmpeg's terminal logger on for the whole process. Threads as in every decode of
    # common.media (frame threading where the worker has more than one CPU): the lockup
    # scenedetect warns of needs FFmpeg's logs routed through Python, which stay off here.
    name = src if isinstance(src, str) else "stream"
    n = media_threads(threads)
    stream = RecordingStream(src, name=name, suppress_output=True, threading_mode=None if n == 1 else "AUTO")
    decoder_threads(stream._video_stream, n)  # its stream is ours to set before the first frame
    return stream


def frame_span(times: np.ndarray, start_s: float, end_s: float) -> tuple[int, int]:
    """Source frames shown in [start_s, end_s): (first index, last index + 1); an empty span sits
    at the first frame after it."""
    a = int(np.searchsorted(times, start_s - 1e-6, side="left"))
    b = int(np.searchsorted(times, end_s - 1e-6, side="left"))
    return (a, b) if b > a else (b, b)


def windows_for(scenes: list[Scene], cfg: ScenesConfig) -> tuple[list[Window], list[Window]]:
    """Split scenes into clip windows of [min_clip_s, max_clip_s]. Long scenes become
    consecutive windows of equal length (ceil(L / max) of them), so no tail is lost; scenes
    shorter than min_clip_s are returned separately so the ledger can account for them."""
    keep, short = [], []
    for s in scenes:
        length = s.end_s - s.start_s
        if length + 1e-6 < cfg.min_clip_s:
            short.append(Window(s.index, 0, s.start_s, s.end_s))
            continue
        n = max(1, math.ceil(length / cfg.max_clip_s - 1e-9))
        step = length / n
        for k in range(n):
            end = s.end_s if k == n - 1 else s.start_s + (k + 1) * step
            keep.append(Window(s.index, k, s.start_s + k * step, end))
    return keep, short
