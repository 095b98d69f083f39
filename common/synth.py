"""Sample media made offline: speech-like audio and a cartoon talking character.

The demo's inputs and several tests are built from these, so the project ships no third-party
media and needs no download to run end to end.
"""
from __future__ import annotations

import math

import numpy as np

from common.media import AUDIO_RATE, VIDEO_FPS


def synth_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like audio: a glottal pulse train with a wandering pitch through vowel formants,
    gated into syllables and phrases. Voice-activity detectors hear it as speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * AUDIO_RATE)
    t = np.arange(n) / AUDIO_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = np.cumsum(f0 / AUDIO_RATE)
    src = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)  # one pulse per period
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)]
    out = np.zeros(n)
    # syllables of random loudness in phrases of random length: real speech is not periodic,
    # and a periodic envelope would look in sync at many shifts
    start = 0
    while start < n:
        length = int(0.18 * AUDIO_RATE)
        seg = src[start:start + length]
        y = np.zeros(len(seg))
        for k, f in enumerate(vowels[rng.integers(len(vowels))]):
            y += _resonate(seg, f, 80 + 40 * k) / (k + 1)
        env = rng.uniform(0.4, 1.0) * np.sin(np.linspace(0, np.pi, len(seg))) ** 0.6
        out[start:start + len(seg)] = y * env
        start += length
    phrase = np.ones(n)  # phrases of random length with short pauses between them
    at = rng.uniform(1.5, 3.0)
    while at < seconds:
        gap = rng.uniform(0.25, 0.5)
        phrase[int(at * AUDIO_RATE):int((at + gap) * AUDIO_RATE)] = 0.0
        at += gap + rng.uniform(1.5, 3.0)
    out *= phrase
    out += 0.002 * rng.standard_normal(n)
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _resonate(x: np.ndarray, freq: float, bw: float) -> np.ndarray:
    r = math.exp(-math.pi * bw / AUDIO_RATE)
    a1, a2 = -2 * r * math.cos(2 * math.pi * freq / AUDIO_RATE), r * r
    y = np.zeros(len(x))
    y1 = y2 = 0.0
    for i, v in enumerate(x):
        y0 = v - a1 * y1 - a2 * y2
        y[i] = y0
        y2, y1 = y1, y0
    return y


def speech_envelope(pcm: np.ndarray, fps: float, n: int) -> np.ndarray:
    """Per-video-frame loudness in [0, 1] (drives the cartoon's mouth)."""
    hop = int(AUDIO_RATE / fps)
    env = np.array([np.sqrt(np.mean(pcm[i * hop:(i + 1) * hop] ** 2)) if i * hop < len(pcm) else 0.0 for i in range(n)])
    return env / (env.max() + 1e-9)


def draw_character(img: np.ndarray, cx: int, cy: int, mouth: float, scale: float = 1.0) -> None:
    """A flat cartoon head and shoulders; OpenCV's face detectors find it like a real face."""
    import cv2

    s = scale
    cv2.ellipse(img, (cx, cy + int(230 * s)), (int(150 * s), int(120 * s)), 0, 0, 360, (150, 60, 60), -1)
    cv2.ellipse(img, (cx, cy), (int(70 * s), int(92 * s)), 0, 0, 360, (225, 180, 150), -1)
    cv2.ellipse(img, (cx, cy - int(70 * s)), (int(75 * s), int(40 * s)), 0, 180, 360, (60, 40, 30), -1)
    for dx in (-28, 28):
        ex = cx + int(dx * s)
        cv2.ellipse(img, (ex, cy - int(18 * s)), (int(14 * s), int(7 * s)), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(img, (ex, cy - int(18 * s)), max(1, int(6 * s)), (20, 30, 40), -1)
        cv2.line(img, (ex - int(16 * s), cy - int(35 * s)), (ex + int(16 * s), cy - int(37 * s)), (70, 50, 40), max(1, int(4 * s)))
    cv2.line(img, (cx, cy - int(10 * s)), (cx - int(6 * s), cy + int(20 * s)), (200, 150, 120), max(1, int(3 * s)))
    cv2.ellipse(img, (cx, cy + int(45 * s)), (int(24 * s), max(1, int((3 + 22 * mouth) * s))), 0, 0, 360, (140, 50, 60), -1)


def synth_talking_frames(seconds: float, width: int, height: int, bg: tuple, mouth: np.ndarray | None,
                         seed: int = 0, face: bool = True):
    """A character on a textured background, swaying a little; its mouth follows ``mouth``."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 40, size=(height, width, 1)).astype(np.int16)
    base = np.clip(np.array(bg, np.int16)[None, None] + tex, 0, 255).astype(np.uint8)
    for k in range(int(seconds * VIDEO_FPS)):
        f = base.copy()
        if face:
            cx = width // 2 + int(12 * math.sin(2 * math.pi * k / 60))
            cy = int(height * 0.45) + int(4 * math.sin(2 * math.pi * k / 37))
            draw_character(f, cx, cy, float(mouth[k]) if mouth is not None else 0.1, scale=height / 360)
        else:
            f = np.roll(f, 3 * k, axis=1)
        yield f
