"""Optical-flow motion: motion_score and static/normal/chaotic, on small gray pictures.

Measured where the pictures first exist: the clip cut feeds a :class:`MotionMeter` the pictures
it encodes (``pipeline.source.clips``), so a still or chaotic window is rejected before it is
encoded; the visual stage measures a clip's decoded frames only when the cut did not (rows made
elsewhere).
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from schemas.base import Strict


class MotionConfig(Strict):
    method: Literal["dis", "farneback"] = "dis"
    # Flow runs on the shared decode shrunk to this width: motion_score is px/frame at this size.
    analysis_width: int = Field(256, ge=32)
    frame_step: int = Field(2, ge=1)  # flow between frames t and t+step, divided by step
    # A re-encoded still picture measures ~0.00 px/frame (identical frames are coded as skips);
    # real footage measures more even when calm (a leaf on a rock 0.07, a seated speaker 0.14).
    static_max: float = Field(0.03, ge=0)
    # 6 px/frame at 256 px is over half the frame width per second at 25 fps: whip pans and
    # heavy shake (real speakers and film action measure 0.1-1.0).
    chaotic_min: float = Field(6.0, gt=0)


def gray_size(width: int, height: int, cfg: MotionConfig) -> tuple[int, int]:
    """(w, h) of the flow pictures for frames of ``width`` x ``height``."""
    w = min(cfg.analysis_width, width)
    return w, max(8, int(round(height * w / width)))


# Limited-range luma (16-235) to the full-range gray that flow is measured on from RGB frames.
_FULL_RANGE = np.clip((np.arange(256) - 16) * 255 / 219 + 0.5, 0, 255).astype(np.uint8)


def gray_from_yuv(picture, size: tuple[int, int]) -> np.ndarray:
    """The flow picture of a decoded YUV picture (``av.VideoFrame``): its luma, shrunk to
    ``size``, in full range, as :func:`flow_magnitudes` makes it from an RGB frame."""
    plane = picture.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(picture.height, plane.line_size)[:, :picture.width]
    return cv2.LUT(cv2.resize(y, size, interpolation=cv2.INTER_AREA), _FULL_RANGE)


class MotionMeter:
    """Mean flow magnitude of a clip of ``num_frames`` frames, fed the gray picture of every
    ``step``-th frame (:meth:`wants` says which) as it comes: flow between frames t and
    t + step, divided by step (px/frame at ``cfg.analysis_width``)."""

    def __init__(self, cfg: MotionConfig, num_frames: int):
        self.cfg = cfg
        self.step = cfg.frame_step if num_frames > cfg.frame_step else 1
        self.pairs = max(0, -(-num_frames // self.step) - 1)  # pairs a full clip has
        if cfg.method == "dis":
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
            self._calc = lambda a, b: dis.calc(a, b, None)
        else:
            self._calc = lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        self._last = None
        self.mags: list[float] = []
        self._sum = 0.0

    def wants(self, frame_index: int) -> bool:
        return frame_index % self.step == 0

    def add(self, gray: np.ndarray) -> None:
        if self._last is not None:
            fl = self._calc(self._last, gray)
            # cv2.magnitude: a tenth of numpy's square-sum-root on a 256 x 144 flow field
            self.mags.append(float(cv2.magnitude(fl[..., 0], fl[..., 1]).mean()) / self.step)
            self._sum += self.mags[-1]
        self._last = gray

    def cannot_be_static(self) -> bool:
        """Whatever the rest of the clip, its mean is already at least ``static_max``."""
        return self.pairs > 0 and self._sum >= self.cfg.static_max * self.pairs

    def result(self) -> tuple[float, str]:
        score = float(np.mean(self.mags)) if self.mags else 0.0
        return score, motion_class(score, self.cfg)


def flow_magnitudes(frames: np.ndarray, cfg: MotionConfig) -> np.ndarray:
    """Mean flow magnitude (px/frame at ``cfg.analysis_width``) of each frame pair t, t+step."""
    meter = MotionMeter(cfg, len(frames))
    h, w = frames.shape[1:3]
    size = gray_size(w, h, cfg)
    for f in frames[::meter.step]:
        meter.add(cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA))
    return np.asarray(meter.mags, np.float64)


def motion_class(score: float, cfg: MotionConfig) -> str:
    if score < cfg.static_max:
        return "static"
    if score > cfg.chaotic_min:
        return "chaotic"
    return "normal"


def analyse_motion(frames: np.ndarray, cfg: MotionConfig) -> tuple[float, str]:
    mags = flow_magnitudes(frames, cfg)
    score = float(mags.mean()) if len(mags) else 0.0
    return score, motion_class(score, cfg)


def backend_label(cfg: MotionConfig) -> dict:
    return {"backend": f"opencv-{cfg.method}", "fallback": False}
