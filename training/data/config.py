"""Typed configuration of the trainer's data side (``training/configs/data.yaml``).

Every threshold of the loader and the curriculum lives here with the reason for its default.
Unknown keys are errors (extra=forbid) so a typo in a long training config fails at start-up,
not after a day of training on the wrong mix.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from common.media import VIDEO_FPS
from schemas.base import Strict
from schemas.rows import DEFAULT_AUDIO_EMB_DIM, FACE_SHOT_SIZES, SHOT_SIZES, TRACKS


def _check_mix(mix: dict[str, float], allowed: tuple[str, ...], what: str) -> None:
    bad = [k for k in mix if k not in allowed]
    if bad:
        raise ValueError(f"{what}: unknown key(s) {bad}; allowed {list(allowed)}")
    if any(v < 0 for v in mix.values()):
        raise ValueError(f"{what}: weights must be >= 0 (got {mix})")
    total = sum(mix.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"{what}: weights must sum to 1 (got {total:.6f} from {mix})")


class StageMix(Strict):
    """The data mix of one curriculum stage."""

    # Share of each track among drawn samples. MoCha trains speech+text (st2v) jointly with
    # text-only video (t2v) at 80/20 so the model keeps its text-to-video ability.
    track_mix: dict[str, float]
    # Shot-size shares within the st2v share (the lip-sync curriculum acts on speech data).
    shot_mix: dict[str, float] = {}
    # Shot sizes the t2v share may draw from; None = every t2v row (a large text-only
    # dataset written in the same schema need not have shot sizes that matter).
    t2v_shot_sizes: Optional[list[str]] = None

    @model_validator(mode="after")
    def _valid(self):
        _check_mix(self.track_mix, TRACKS, "track_mix")
        if self.track_mix.get("st2v", 0.0) > 0:
            _check_mix(self.shot_mix, SHOT_SIZES, "shot_mix")
        if self.t2v_shot_sizes is not None:
            bad = [s for s in self.t2v_shot_sizes if s not in SHOT_SIZES]
            if bad or not self.t2v_shot_sizes:
                raise ValueError(f"t2v_shot_sizes: must be a non-empty subset of {list(SHOT_SIZES)} (got {self.t2v_shot_sizes})")
        return self


def halving_stages(order: tuple[str, ...] = FACE_SHOT_SIZES, st2v_share: float = 0.8) -> list[StageMix]:
    """MoCha's curriculum: stage 0 text-only; stage k >= 1 halves the shares of the shot sizes
    introduced earlier and gives the other half to the k-th shot size."""
    stages = [StageMix(track_mix={"t2v": 1.0})]
    shots: dict[str, float] = {}
    for k, shot in enumerate(order):
        shots = {s: w / 2 for s, w in shots.items()}
        shots[shot] = 1.0 if k == 0 else 0.5
        stages.append(StageMix(track_mix={"st2v": st2v_share, "t2v": round(1 - st2v_share, 10)}, shot_mix=dict(shots)))
    return stages


class CurriculumConfig(Strict):
    stages: list[StageMix] = Field(default_factory=halving_stages)
    # Optimizer step at which each stage begins (stage i runs from stage_starts[i]). The
    # paper gives no step counts; these suit a short run and are meant to be overridden.
    stage_starts: list[int] = [0, 2000, 4000, 6000, 8000]
    # Pin one stage for the whole run (a DAG that trains stage by stage, or `data inspect`).
    stage: Optional[int] = None
    # A stage that names a shot size absent from the shards is an error by default (the
    # curriculum would silently not be the configured one); True renormalises the rest.
    allow_missing_pools: bool = False

    @model_validator(mode="after")
    def _valid(self):
        if len(self.stage_starts) != len(self.stages):
            raise ValueError(f"stage_starts has {len(self.stage_starts)} entries for {len(self.stages)} stages")
        if self.stage_starts and self.stage_starts[0] != 0:
            raise ValueError("stage_starts[0] must be 0")
        if any(b <= a for a, b in zip(self.stage_starts, self.stage_starts[1:])):
            raise ValueError(f"stage_starts must increase strictly (got {self.stage_starts})")
        if self.stage is not None and not 0 <= self.stage < len(self.stages):
            raise ValueError(f"stage {self.stage} out of range 0..{len(self.stages) - 1}")
        return self

    def stage_at(self, step: int) -> int:
        if self.stage is not None:
            return self.stage
        s = 0
        for i, start in enumerate(self.stage_starts):
            if step >= start:
                s = i
        return s


def default_buckets(resolution: int = 256, multiple: int = 16,
                    aspects: tuple[float, ...] = (1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16)) -> list[list[int]]:
    """[height, width] buckets of about resolution**2 pixels, sides multiples of ``multiple``."""
    out = []
    for a in aspects:
        w = max(multiple, int(round(resolution * math.sqrt(a) / multiple)) * multiple)
        h = max(multiple, int(round(resolution / math.sqrt(a) / multiple)) * multiple)
        if [h, w] not in out:
            out.append([h, w])
    return out


class DataConfig(Strict):
    # Shard roots: a `mocha curate` output dir (its st2v/ and t2v/ are read), a folder of
    # Parquet files, one file, or a pyarrow filesystem URI. Rows join the pool of their own
    # `track`, so extra text-only datasets simply add roots.
    roots: list[str] = []
    fps: float = Field(VIDEO_FPS, gt=0)  # the curated clips' fps; SyncNet and Wav2Vec2 alignment assume 25
    # 49 = 1 + 4*12 frames (~2 s at 25 fps): a causal video VAE with temporal compression 4
    # encodes 1 + 4k frames into 1 + k latent frames.
    num_frames: int = Field(49, ge=1)
    vae_temporal_compression: int = Field(4, ge=1)
    vae_spatial_compression: int = Field(8, ge=1)  # Wan 2.1 VAE: stored latents are checked against it
    resolution: int = Field(256, ge=16)  # base side; buckets keep about resolution**2 pixels
    # VAE spatial compression 8 x DiT patch 2: bucket sides must divide by 16.
    spatial_multiple: int = Field(16, ge=1)
    buckets: Optional[list[list[int]]] = None  # [[h, w], ...]; None = default_buckets(resolution)
    random_crop: bool = True  # random temporal window in long clips (deterministic by seed)
    batch_size: int = Field(2, ge=1)
    num_workers: int = Field(2, ge=0)
    prefetch_factor: int = Field(2, ge=1)
    seed: int = 0
    # Row groups kept decoded-from-Parquet per worker: memory is bounded by this times the
    # shards' row-group size, whatever the shard count.
    row_group_cache: int = Field(4, ge=1)
    # Items shuffled together inside one worker's slice: mixes neighbouring row groups
    # without reading the epoch at random (which would re-read a row group per sample).
    shuffle_window: int = Field(256, ge=1)
    audio_emb_dim: int = Field(DEFAULT_AUDIO_EMB_DIM, ge=1)
    # Wav2Vec2 (path, registry name or cached hub id) for st2v rows curated without
    # embeddings; None makes such a row a configuration error.
    audio_model: Optional[str] = None
    audio_layer: int = -1
    models_dir: Optional[str] = None
    # Step = batches // accumulate_grad_batches: the curriculum switches on optimizer steps.
    accumulate_grad_batches: int = Field(1, ge=1)
    # A row without prompt text cannot teach text conditioning: skipped (and counted) by
    # default; "empty" trains it with an empty prompt (as classifier-free-guidance dropout does).
    missing_prompt: Literal["skip", "empty"] = "skip"
    use_latents: bool = True  # use precomputed `latents` when every sample of a batch has them
    # Consecutive undecodable samples before the loader gives up (the shards are then broken,
    # not one clip).
    max_consecutive_failures: int = Field(200, ge=1)
    curriculum: CurriculumConfig = CurriculumConfig()

    @field_validator("roots", mode="before")
    @classmethod
    def _one_root(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _valid(self):
        k = self.vae_temporal_compression
        if (self.num_frames - 1) % k:
            raise ValueError(f"num_frames={self.num_frames} is not 1 + {k}k (VAE temporal compression {k})")
        for b in self.bucket_list():
            if len(b) != 2 or b[0] % self.spatial_multiple or b[1] % self.spatial_multiple or min(b) <= 0:
                raise ValueError(f"bucket {b} must be [h, w], both positive multiples of {self.spatial_multiple}")
        return self

    def bucket_list(self) -> list[list[int]]:
        return self.buckets if self.buckets is not None else default_buckets(self.resolution, self.spatial_multiple)


class DataConfigError(ValueError):
    pass


def load_data_config(path: Optional[str | Path] = None, overrides: list[str] = (), **top: Any) -> DataConfig:
    """The data config from YAML (a top-level ``data:`` section is unwrapped) + overrides."""
    from common.config import ConfigError, load_yaml_config

    try:
        return load_yaml_config(DataConfig, path, overrides, what="data config", section="data", **top)
    except ConfigError as e:
        raise DataConfigError(str(e)) from None
