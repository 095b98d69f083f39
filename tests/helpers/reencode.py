"""Copies of a video as a crawl finds them: re-encoded at another size, bitrate, frame rate and
audio rate, optionally with a few seconds trimmed off either end (PyAV, made in the test)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np


def reencode(src: Path, dst: Path, scale: float = 1.0, trim_start_s: float = 0.0, trim_end_s: float = 0.0,
             crf: int = 28, fps: Optional[float] = None, audio_rate: int = 44100, container: str = "mp4") -> Path:
    """Write ``dst``: ``src`` from ``trim_start_s`` to ``trim_end_s`` before its end, scaled by
    ``scale`` (even sizes), H.264 at ``crf`` (at ``fps``, or the source's rate), AAC stereo at
    ``audio_rate``. Timestamps start at 0."""
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        rate = Fraction(fps).limit_denominator(1001) if fps else (vs.average_rate or Fraction(25))
        dur = float(c.duration / av.time_base) if c.duration else None
        frames = []
        for f in c.decode(vs):
            t = float(f.pts * f.time_base) if f.pts is not None else len(frames) / float(rate)
            frames.append((t, f.to_ndarray(format="rgb24")))
    end = (dur or (frames[-1][0] + 1 / float(rate))) - trim_end_s
    h, w = frames[0][1].shape[:2]
    ow, oh = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
    pcm = _audio(src, audio_rate)
    with av.open(str(dst), mode="w", format=container) as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = ow, oh, "yuv420p"
        v.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "log-level=error"}
        a = None
        if pcm is not None:
            a = out.add_stream("aac", rate=audio_rate)
            a.layout = "stereo"
        n, k, times = 0, 0, [t for t, _ in frames]
        while True:
            t = trim_start_s + n / float(rate)
            if t >= end - 1e-6:
                break
            while k + 1 < len(frames) and times[k + 1] <= t + 1e-6:
                k += 1
            vf = av.VideoFrame.from_ndarray(frames[k][1], format="rgb24").reformat(width=ow, height=oh)
            vf.pts = n
            for pkt in v.encode(vf):
                out.mux(pkt)
            n += 1
        for pkt in v.encode(None):
            out.mux(pkt)
        if a is not None:
            seg = pcm[:, int(trim_start_s * audio_rate):int(end * audio_rate)]
            for i in range(0, seg.shape[1], 1024):
                chunk = np.ascontiguousarray(seg[:, i:i + 1024])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                af.sample_rate, af.pts = audio_rate, i
                for pkt in a.encode(af):
                    out.mux(pkt)
            for pkt in a.encode(None):
                out.mux(pkt)
    return dst


def _audio(src: Path, rate: int) -> Optional[np.ndarray]:
    with av.open(str(src)) as c:
        if not c.streams.audio:
            return None
        res = av.AudioResampler(format="fltp", layout="stereo", rate=rate)
        parts = []
        for f in c.decode(c.streams.audio[0]):
            for o in res.resample(f):
                parts.append(o.to_ndarray())
        for o in res.resample(None):
            parts.append(o.to_ndarray())
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else None
