"""Optical-flow motion score and class."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.stages.visual.motion import MotionConfig, analyse_motion, flow_magnitudes, motion_class
from tests.helpers.visual_clips import frames_25, real


def test_class_thresholds():
    cfg = MotionConfig()
    assert motion_class(0.0, cfg) == "static"
    assert motion_class(0.5, cfg) == "normal"
    assert motion_class(cfg.chaotic_min + 1, cfg) == "chaotic"


def test_flow_measures_a_known_translation():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((300, 500)) * 255).astype(np.uint8), (0, 0), 3)
    frames = np.stack([np.repeat(base[:, 10 + 2 * i: 266 + 2 * i, None], 3, 2) for i in range(8)])
    # 2 px/frame at 256 px wide, analysed at 256: the mean magnitude is about 2
    mags = flow_magnitudes(frames, MotionConfig(analysis_width=256, frame_step=1))
    assert np.median(mags) == pytest.approx(2.0, abs=0.3)


@pytest.fixture(scope="module")
def katie(real_dir):
    return frames_25(real(real_dir, "closeup_talk_hdtf_katiehill.mp4"), 4.0)


@pytest.mark.realdata
def test_talking_head_is_normal(katie):
    score, cls = analyse_motion(katie, MotionConfig())
    assert cls == "normal" and 0.1 < score < 3.0


@pytest.mark.realdata
def test_repeated_real_frame_is_static(katie):
    still = np.repeat(katie[50:51], 60, axis=0)
    score, cls = analyse_motion(still, MotionConfig())
    assert cls == "static", score


@pytest.mark.realdata
def test_violent_shake_is_chaotic(katie):
    rng = np.random.default_rng(1)
    h, w = katie.shape[1:3]
    shaken = np.stack([cv2.warpAffine(f, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
                       for f, (dx, dy) in zip(katie[:60], rng.integers(-60, 61, (60, 2)))])
    score, cls = analyse_motion(shaken, MotionConfig())
    assert cls == "chaotic", score


def test_farneback_backend_agrees_on_class():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((200, 400)) * 255).astype(np.uint8), (0, 0), 3)
    frames = np.stack([np.repeat(base[:, 5 + i: 261 + i, None], 3, 2) for i in range(10)])
    assert analyse_motion(frames, MotionConfig(method="farneback"))[1] == "normal"
    assert analyse_motion(np.repeat(frames[:1], 10, 0), MotionConfig(method="farneback"))[1] == "static"
