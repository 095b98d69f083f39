"""The curation plan: which stages run, in which order, grouped into which operators, with which
resources. The runners (``runners.py``) execute it on Ray Data or in this process."""
from __future__ import annotations

from pipeline.engine.config import CurateConfig, StageResources
from pipeline.engine.stage import Stage
from pipeline.stages.audio_embed import AudioEmbedStage
from pipeline.stages.language.caption import CaptionStage
from pipeline.stages.language.character import CharacterFilterStage
from pipeline.stages.latents import LatentStage
from pipeline.stages.music import MusicStage
from pipeline.stages.speech import SpeechStage
from pipeline.stages.visual.speakers import SpeakersStage
from pipeline.stages.visual.stage import VisualStage

Operator = tuple[str, list[type[Stage]], StageResources]


def stage_plan(cfg: CurateConfig) -> list[Operator]:
    """Ordered operators, each a list of stages sharing one worker (one model load). Cheap
    filters first, so expensive stages see fewer clips. An operator that loads no model in this
    config (:func:`modelless_operators`) runs in the worker of the operator before it."""
    r = cfg.resources
    plan: list[Operator] = [
        ("speech", [SpeechStage], r.speech),
        ("music", [MusicStage], r.music),
        # motion -> faces -> shot size -> lip-sync (re-aligns the audio), on one shared decode;
        # before the embedding so that it embeds re-aligned audio of surviving clips only
        ("visual", [VisualStage], r.visual),
        # who speaks when (LR-ASD) on the visual stage's tracks and re-aligned audio: its own
        # operator, so it can take a GPU and batch clips while detection and flow stay on CPUs
        ("speakers", [SpeakersStage], r.speakers),
        ("audio_embed", [AudioEmbedStage], r.audio_embed),
        # one worker for both: they share the process-wide LLM backend (one model in memory)
        ("llm", [CharacterFilterStage, CaptionStage], r.llm),
    ]
    if cfg.latents.enabled:  # optional: one 3D-VAE pass per kept clip, for pixel-free training
        plan.append(("latents", [LatentStage], r.latents))
    return fuse_modelless(plan, modelless_operators(cfg))


def modelless_operators(cfg: CurateConfig) -> set[str]:
    """Operators whose stages load no model in this config: disabled, a rules backend, or a
    model that is not available locally (their labelled fallback is a little arithmetic). A
    worker of their own would only cost its start-up (a Ray worker, imports) and hold its
    reservation (on a cluster perhaps a GPU) for nothing."""
    from pipeline.engine.preflight import model_checks

    missing = {stage for stage, _why in model_checks(cfg)}
    light = set()
    if "music" in missing or cfg.music.backend == "snr":
        light.add("music")
    if "speakers" in missing or not cfg.speakers.enabled or not cfg.speakers.checkpoint:
        light.add("speakers")
    if "audio_embed" in missing or not cfg.audio_embed.enabled:
        light.add("audio_embed")
    if cfg.llm.backend == "rules" or not (cfg.character.enabled or cfg.caption.enabled):
        light.add("llm")
    return light


def fuse_modelless(plan: list[Operator], light: set[str]) -> list[Operator]:
    """``plan`` with each operator named in ``light`` folded into the operator before it."""
    out: list[Operator] = []
    for name, stages, res in plan:
        if out and name in light:
            host, host_stages, host_res = out[-1]
            out[-1] = (host, host_stages + stages, host_res)
        else:
            out.append((name, stages, res))
    return out


def build_stages(stages: list[type[Stage]], cfg: CurateConfig, device: str = "cpu") -> list[Stage]:
    return [cls.from_config(cfg, device) for cls in stages]


def apply_stages(stages: list[Stage], rows: list[dict]) -> list[dict]:
    """Run a batch through ``stages`` in order."""
    for st in stages:
        rows = st.run(rows)
    return rows
