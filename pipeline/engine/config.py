"""Typed configuration of a curation run.

One YAML file (see ``configs/curate.yaml``) validated by these pydantic models: an unknown or
mistyped key is an error that names it. Every field can be overridden on the command line with
``--set section.field=value`` (the value is parsed as YAML). Each stage's thresholds live in its
config class next to the stage; this module composes them and holds the run-wide sections.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field, field_validator

from common.config import load_yaml_config
from pipeline.source.clips import ClipsConfig
from pipeline.source.ingest import IngestConfig
from pipeline.source.scenes import ScenesConfig
from pipeline.stages.audio_embed import AudioEmbedConfig
from pipeline.stages.language.config import CaptionConfig, CharacterFilterConfig, LLMConfig
from pipeline.stages.latents import LatentsConfig
from pipeline.stages.music import MusicConfig
from pipeline.stages.speech import SpeechConfig
from pipeline.stages.visual.speakers import SpeakersConfig
from pipeline.stages.visual.stage import VisualConfig
from schemas.base import Strict


class StageResources(Strict):
    """Ray resources of one stage. ``actors`` > 0 runs the stage in an actor pool of that
    (maximum) size, loading its model once per actor; 0 runs it as stateless tasks."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    actors: int = Field(1, ge=0)
    batch_size: int = Field(1, ge=1)


class ResourcesConfig(Strict):
    # Fractional CPUs by default: on a laptop or a 2-core CI box every stage's actor must fit
    # at once or Ray Data stalls; on a cluster raise these per stage.
    split: StageResources = StageResources(num_cpus=1.0, actors=0)
    speech: StageResources = StageResources(num_cpus=0.25, actors=1, batch_size=4)
    music: StageResources = StageResources(num_cpus=0.25, actors=1, batch_size=4)
    audio_embed: StageResources = StageResources(num_cpus=0.5, actors=1, batch_size=4)
    visual: StageResources = StageResources(num_cpus=0.5, actors=1, batch_size=2)
    # LR-ASD is the one network of the visual family that gains from a GPU (set num_gpus;
    # a fraction of one is plenty for 1 M parameters); batches of clips run as one.
    speakers: StageResources = StageResources(num_cpus=0.5, actors=1, batch_size=2)
    llm: StageResources = StageResources(num_cpus=0.25, actors=1, batch_size=4)
    latents: StageResources = StageResources(num_cpus=0.5, actors=1, batch_size=2)
    finalize: StageResources = StageResources(num_cpus=0.25, actors=0, batch_size=4)


class RunConfig(Strict):
    ray_address: Optional[str] = None  # None: embedded local Ray; "auto" or ray://host:10001 for a cluster
    num_cpus: Optional[int] = None  # local Ray only; None = all cores
    strict_models: bool = False  # a missing model is an error before any work starts
    resume: bool = True  # skip sources and clips already committed in the output dir
    max_shard_bytes: int = Field(256 * 1024**2, ge=1024)
    max_shard_rows: int = Field(2000, ge=1)
    models_dir: Optional[str] = None  # default: $MOCHA_MODELS_DIR or ~/.cache/mocha/models
    progress: bool = True


class CurateConfig(Strict):
    inputs: list[str] = []
    output: str = "out"
    run: RunConfig = RunConfig()
    resources: ResourcesConfig = ResourcesConfig()
    ingest: IngestConfig = IngestConfig()
    scenes: ScenesConfig = ScenesConfig()
    clips: ClipsConfig = ClipsConfig()
    speech: SpeechConfig = SpeechConfig()
    music: MusicConfig = MusicConfig()
    audio_embed: AudioEmbedConfig = AudioEmbedConfig()
    latents: LatentsConfig = LatentsConfig()
    llm: LLMConfig = LLMConfig()
    character: CharacterFilterConfig = CharacterFilterConfig()
    caption: CaptionConfig = CaptionConfig()
    visual: VisualConfig = VisualConfig()
    speakers: SpeakersConfig = SpeakersConfig()

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_input(cls, v):
        return [v] if isinstance(v, str) else v


def load_config(path: Optional[str | Path] = None, overrides: list[str] = (), **top: Any) -> CurateConfig:
    """Load the curation config (YAML or the embedded defaults), apply overrides."""
    return load_yaml_config(CurateConfig, path, overrides, **top)
