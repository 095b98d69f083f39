"""The training framing of a clip: bucket by aspect ratio, resample to the training fps,
cover-resize and centre crop; and the storage form of VAE latents.

The curation's latents stage and the trainer's loader must cut and scale a clip identically, or
stored latents would not match the pixels they replace, so both take the framing from here.
"""
from __future__ import annotations

import io
import math

import numpy as np

from common.media import MediaError, iter_frames, resample_times


def choose_bucket(width: int, height: int, buckets: list[list[int]]) -> int:
    """Index of the [h, w] bucket whose aspect ratio is nearest (in log scale) to the clip's."""
    a = math.log(max(width, 1) / max(height, 1))
    return int(np.argmin([abs(a - math.log(b[1] / b[0])) for b in buckets]))


def cover_size(w: int, h: int, bh: int, bw: int) -> tuple[int, int]:
    """(width, height) of the clip scaled to cover a bh x bw bucket, aspect kept."""
    s = max(bw / w, bh / h)
    return max(bw, int(math.ceil(w * s))), max(bh, int(math.ceil(h * s)))


def decode_window(video: bytes, fps: float, start: int, count: int, bucket: tuple[int, int],
                  src_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``start .. start+count`` of the clip on a constant ``fps`` timeline (from the
    frames' own timestamps, so VFR is safe), scaled to cover the bucket and centre-cropped:
    (uint8 [count, bh, bw, 3], source frame index of each frame). Raises MediaError."""
    bh, bw = bucket
    sw, sh = cover_size(src_size[0], src_size[1], bh, bw)
    t0, t1 = start / fps, (start + count) / fps
    kept: list[np.ndarray] = []
    times: list[float] = []
    first = n = 0  # source index of kept[0]; frames decoded so far
    try:
        for t, f in iter_frames(video, width=sw, height=sh):
            if t >= t1 - 1e-6 and kept:
                break
            if t <= t0 + 1e-6:  # only the latest frame at or before the window start is needed
                kept, times, first = [], [], n
            kept.append(f)
            times.append(t)
            n += 1
    except MediaError:
        if not kept:
            raise
    except Exception as e:  # PyAV raises a few non-FFmpeg errors on garbage input
        raise MediaError(f"{type(e).__name__}: {e}") from e
    if not kept:
        raise MediaError("no decodable video frames")
    idx = resample_times(np.asarray(times), t0, t1, fps)
    if len(idx) < count:
        raise MediaError(f"window of {count} frames but the timeline gives {len(idx)}")
    y0, x0 = (sh - bh) // 2, (sw - bw) // 2
    return np.stack([kept[i][y0:y0 + bh, x0:x0 + bw] for i in idx]), idx + first


def source_indices(num_src: int, src_fps: float, fps: float, count: int) -> np.ndarray:
    """Source frame of each of the first ``count`` frames at ``fps`` for a constant-rate clip
    (the clip stage re-encodes at a fixed fps), without decoding it."""
    times = np.arange(num_src) / src_fps
    return resample_times(times, 0.0, count / fps, fps)


def latents_to_bytes(z: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(z, dtype=np.float16), allow_pickle=False)
    return buf.getvalue()


def latents_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
