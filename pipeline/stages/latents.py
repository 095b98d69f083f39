"""Optional precomputed VAE latents (``latents`` column), framed as the trainer frames a clip
(``common.framing``, shared with the loader so stored latents match the pixels they replace).
Latents are the first ``num_frames`` frames (1 + 4k for the VAE) of the clip, in the
clip's bucket, stored as float16 ``.npy`` bytes of shape [C, T', H', W'].

Clips that fall in the same bucket are encoded together, up to ``latents.batch_size`` per
forward: their windows have one shape, so a batch needs no padding, and the VAE treats the
items of a batch independently (its causal convolutions and norms never mix samples), so a
batch gives each clip the latents it gets alone (tested).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

from pydantic import Field

from common.framing import choose_bucket, decode_window, latents_to_bytes
from common.media import VIDEO_FPS
from common.weights import ModelMissing
from pipeline.engine.stage import Stage, StageResult, backend_label
from schemas.base import Strict


class LatentsConfig(Strict):
    """Optional VAE latents per clip (pipeline/stages/latents.py). Off by default: a 3D VAE pass per
    clip is the most expensive step and only pays off when many epochs read the same clips."""

    enabled: bool = False
    vae: str = "wan2.1-vae"  # registry name, local dir or cached hub id (model.vae.load_vae)
    subfolder: Optional[str] = "vae"
    dtype: str = "float32"
    # These must equal the trainer's data config (training/configs/data.yaml): the loader only
    # uses latents whose shape matches its own bucket and length, and decodes pixels otherwise.
    fps: float = Field(VIDEO_FPS, gt=0)
    num_frames: int = Field(49, ge=1)
    buckets: list[list[int]] = [[256, 256], [224, 288], [288, 224], [192, 336], [336, 192]]
    # Clips of one bucket per VAE forward, among the rows of a Ray batch
    # (resources.latents.batch_size). The encoder's activation memory grows linearly with it:
    # lower it where the device runs out of memory.
    batch_size: int = Field(4, ge=1)


log = logging.getLogger(__name__)


class LatentStage(Stage):
    """Encodes each clip's training window with the configured 3D VAE (``model.vae``)."""

    name = "latents"
    columns = {"latents": None}

    def __init__(self, cfg: LatentsConfig, device: str = "cpu", models_dir: Optional[str] = None):
        super().__init__(cfg, device, models_dir)
        self.vae = None
        self.missing: Optional[str] = None

    def setup(self) -> None:
        from model.vae import VAEConfig, load_vae

        if not self.cfg.enabled:
            self.missing = "disabled in config (latents.enabled=false)"
            return
        try:
            self.vae = load_vae(VAEConfig(name_or_path=self.cfg.vae, subfolder=self.cfg.subfolder,
                                          dtype=self.cfg.dtype), self.models_dir).to(self.device)
        except ModelMissing as e:
            self.missing = str(e)
        if self.vae is not None and (self.cfg.num_frames - 1) % self.vae.temporal_compression:
            raise ValueError(f"latents.num_frames={self.cfg.num_frames} is not 1 + "
                             f"{self.vae.temporal_compression}k for this VAE")

    def backend(self) -> dict:
        if self.vae is None:
            return backend_label("none", True, model=self.cfg.vae, reason=self.missing)
        return backend_label(self.vae.label or "AutoencoderKLWan", self.vae.is_tiny, model=self.cfg.vae,
                             frames=self.cfg.num_frames, fps=self.cfg.fps, buckets=self.cfg.buckets)

    def _window(self, row: dict):
        """The clip's training window as the VAE's input [3, T, H, W] in [-1, 1], or the
        reason it has none."""
        import torch

        cfg = self.cfg
        n_src = int(row.get("num_frames") or 0)
        total = int(math.floor(n_src / float(row["fps"]) * cfg.fps + 1e-6))
        if total < cfg.num_frames:  # shorter than a training sample: the loader pads pixels
            return None, "clip shorter than num_frames"
        b = cfg.buckets[choose_bucket(int(row["width"]), int(row["height"]), cfg.buckets)]
        frames, _ = decode_window(row["video"], cfg.fps, 0, cfg.num_frames, (b[0], b[1]),
                                  (int(row["width"]), int(row["height"])))
        return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0), None

    def process_batch(self, rows: list[dict]) -> list[StageResult]:
        import torch

        if self.vae is None:
            return [StageResult.kept(latents=None) for _ in rows]
        results: list[Optional[StageResult]] = [None] * len(rows)
        by_shape: dict[tuple, list[tuple[int, "torch.Tensor"]]] = {}
        for i, row in enumerate(rows):
            video, skipped = self._window(row)
            if video is None:
                results[i] = StageResult.kept(latents=None, backend={**self.backend(), "skipped": skipped})
            else:
                by_shape.setdefault(tuple(video.shape), []).append((i, video))
        step = self.cfg.batch_size
        for group in by_shape.values():
            for b in range(0, len(group), step):
                part = group[b:b + step]
                z = self.vae.encode(torch.stack([v for _, v in part]).to(self.device)).cpu().numpy()
                for (i, _), zi in zip(part, z):
                    results[i] = StageResult.kept(latents=latents_to_bytes(zi))
        return results
