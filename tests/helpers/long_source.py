"""Long synthetic sources made in the test: minutes of tiny H.264 video in hard-cut scenes of
random length (flat colours under noise, so the scene detector sees every cut and nothing else),
with optional 16 kHz PCM audio (PCM in Matroska: no AAC priming offset)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FPS = 25


def scene_lengths(minutes: float, seed: int = 0, lo_s: float = 4.0, hi_s: float = 40.0) -> list[float]:
    rng = np.random.default_rng(seed)
    total, out = minutes * 60.0, []
    while sum(out) < total - 1e-6:
        out.append(float(min(round(rng.uniform(lo_s, hi_s) * FPS) / FPS, total - sum(out))))
    return out


def make_long_source(path: Path, minutes: float, seed: int = 0, size: tuple[int, int] = (64, 36),
                     audio: bool = True, gop: int = 50) -> list[float]:
    """Write the source; returns its scene lengths in seconds."""
    rng = np.random.default_rng(seed)
    lengths = scene_lengths(minutes, seed)
    w, h = size
    with av.open(str(path), mode="w", format="matroska") as c:
        v = c.add_stream("libx264", rate=Fraction(FPS))
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "ultrafast", "g": str(gop), "x264-params": "log-level=error"}
        a = None
        if audio:
            a = c.add_stream("pcm_s16le", rate=16000)
            a.layout = "mono"
        n = 0
        spf = 16000 // FPS
        for k, length in enumerate(lengths):
            base = rng.integers(30, 226, size=3)
            for _ in range(int(round(length * FPS))):
                img = np.clip(base[None, None] + rng.integers(-6, 7, size=(h, w, 1)), 0, 255).astype(np.uint8)
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = n
                for pkt in v.encode(f):
                    c.mux(pkt)
                if a is not None:
                    pcm = (rng.standard_normal(spf) * 800 * (1 + k % 3)).astype(np.int16)
                    af = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
                    af.sample_rate, af.pts = 16000, n * spf
                    for pkt in a.encode(af):
                        c.mux(pkt)
                n += 1
        for s in (v, a):
            if s is not None:
                for pkt in s.encode(None):
                    c.mux(pkt)
    return lengths
