"""Keyframes of a clip for a vision-language model, decoded with common.media."""
from __future__ import annotations

import base64

import numpy as np

from common.media import MediaError, fit_size, iter_frames, probe


def sample_keyframes(video: bytes, k: int, max_side: int = 448) -> list[np.ndarray]:
    """``k`` RGB frames at the centres of ``k`` equal parts of the clip, longest side at most
    ``max_side``. Streams the decode and keeps only the chosen frames."""
    if not video:
        raise MediaError("clip has no video bytes")
    info = probe(video)
    if not info.has_video or not info.width:
        raise MediaError("clip has no video stream")
    w, h = fit_size(info.width, info.height, max_side)
    dur = info.duration_s if info.duration_s > 0 else None
    if dur is None:
        frames = [f for _, f in iter_frames(video, width=w, height=h)]
        if not frames:
            raise MediaError("no decodable video frames")
        idx = np.linspace(0, len(frames) - 1, num=min(k, len(frames))).round().astype(int)
        return [frames[i] for i in idx]
    targets = [(i + 0.5) * dur / k for i in range(k)]
    chosen: list = [None] * k
    best = [float("inf")] * k
    for t, frame in iter_frames(video, width=w, height=h):
        for j, target in enumerate(targets):
            d = abs(t - target)
            if d < best[j]:
                best[j], chosen[j] = d, frame
        if t > targets[-1] and all(c is not None for c in chosen):
            break
    out = [c for c in chosen if c is not None]
    if not out:
        raise MediaError("no decodable video frames")
    # a short clip may map two targets to one frame; the model gains nothing from a duplicate
    uniq, seen = [], set()
    for c in out:
        if id(c) not in seen:
            seen.add(id(c))
            uniq.append(c)
    return uniq


def jpeg_data_url(rgb: np.ndarray, quality: int = 90) -> str:
    """``data:image/jpeg;base64,...`` for the OpenAI-compatible chat API."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise MediaError("JPEG encoding of a keyframe failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
