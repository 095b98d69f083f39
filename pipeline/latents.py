"""Optional precomputed VAE latents (``latents`` column) and the training framing they use.

The trainer's loader and this stage must cut and scale a clip identically, or stored latents
would not match the pixels they replace; so the framing (bucket choice by aspect ratio,
resample to the training fps, cover-resize and centre crop) lives here and the loader imports
it. Latents are the first ``num_frames`` frames (1 + 4k for the VAE) of the clip, in the
clip's bucket, stored as float16 ``.npy`` bytes of shape [C, T', H', W'].
"""
from __future__ import annotations

import io
import logging
import math
from typing import Optional

import numpy as np

from pipeline.media import MediaError, iter_frames, resample_times
from pipeline.stage import ClipStage

log = logging.getLogger(__name__)


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


class LatentStage(ClipStage):
    """Encodes each clip's training window with the configured 3D VAE (``model.vae``)."""

    name = "latents"
    columns = {"latents": None}

    def __init__(self, cfg, device: str = "cpu"):
        super().__init__(cfg)
        self.device = device
        self.vae = None
        self.missing: Optional[str] = None

    def setup(self) -> None:
        from model.vae import ModelNotAvailable, VAEConfig, load_vae

        if not self.cfg.enabled:
            self.missing = "disabled in config (latents.enabled=false)"
            return
        try:
            self.vae = load_vae(VAEConfig(name_or_path=self.cfg.vae, subfolder=self.cfg.subfolder,
                                          dtype=self.cfg.dtype)).to(self.device)
        except ModelNotAvailable as e:
            self.missing = str(e)
        if self.vae is not None and (self.cfg.num_frames - 1) % self.vae.temporal_compression:
            raise ValueError(f"latents.num_frames={self.cfg.num_frames} is not 1 + "
                             f"{self.vae.temporal_compression}k for this VAE")

    def backend(self) -> dict:
        if self.vae is None:
            return {"backend": "none", "model": self.cfg.vae, "reason": self.missing}
        return {"backend": self.vae.label or "AutoencoderKLWan", "model": self.cfg.vae,
                "frames": self.cfg.num_frames, "fps": self.cfg.fps, "buckets": self.cfg.buckets}

    def process(self, row: dict) -> dict:
        import torch

        if self.vae is None:
            return {"latents": None}
        cfg = self.cfg
        n_src = int(row.get("num_frames") or 0)
        total = int(math.floor(n_src / float(row["fps"]) * cfg.fps + 1e-6))
        if total < cfg.num_frames:  # shorter than a training sample: the loader pads pixels
            return {"latents": None, "_backend": {**self.backend(), "skipped": "clip shorter than num_frames"}}
        b = cfg.buckets[choose_bucket(int(row["width"]), int(row["height"]), cfg.buckets)]
        frames, _ = decode_window(row["video"], cfg.fps, 0, cfg.num_frames, (b[0], b[1]),
                                  (int(row["width"]), int(row["height"])))
        video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float().div_(127.5).sub_(1.0)
        z = self.vae.encode(video.to(self.device))[0].cpu().numpy()
        return {"latents": latents_to_bytes(z)}
