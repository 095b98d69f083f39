"""Optical-flow motion on the shared (downscaled) decode: motion_score and static/normal/chaotic."""
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


def _gray_small(frames: np.ndarray, width: int) -> list[np.ndarray]:
    h, w = frames.shape[1:3]
    width = min(width, w)
    height = max(8, int(round(h * width / w)))
    return [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (width, height), interpolation=cv2.INTER_AREA)
            for f in frames]


def flow_magnitudes(frames: np.ndarray, cfg: MotionConfig) -> np.ndarray:
    """Mean flow magnitude (px/frame at ``cfg.analysis_width``) of each frame pair t, t+step."""
    step = cfg.frame_step if len(frames) > cfg.frame_step else 1
    # pairs (t, t + step) for t = 0, step, 2 step ...: only every step-th frame is looked at
    gray = _gray_small(frames[::step], cfg.analysis_width)
    if cfg.method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        calc = lambda a, b: dis.calc(a, b, None)  # noqa: E731
    else:
        calc = lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # noqa: E731
    mags = []
    for a, b in zip(gray, gray[1:]):
        fl = calc(a, b)
        mags.append(float(np.sqrt((fl ** 2).sum(-1)).mean()) / step)
    return np.asarray(mags, np.float64)


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
