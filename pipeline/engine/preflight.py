"""Checks before any work starts: which configured models are missing (an error for the ones
named explicitly, a labelled fallback for the rest) and facts the writer needs up front."""
from __future__ import annotations

import json
from pathlib import Path

from common.weights import REGISTRY, ModelMissing, model_file, resolve_model
from pipeline.engine.config import CurateConfig
from pipeline.stages.visual.stage import resolve_models as resolve_visual_models
from schemas.rows import DEFAULT_AUDIO_EMB_DIM


class CurateError(RuntimeError):
    """A problem with the job itself (bad inputs, missing required model): nothing was run."""


def model_checks(cfg: CurateConfig) -> list[tuple[str, str]]:
    """(stage, problem) for every configured model that is not available locally. A model the
    config names explicitly (visual detectors, SyncNet) is an error when missing."""
    try:
        resolve_visual_models(cfg.visual, cfg.run.models_dir)
    except ModelMissing as e:
        raise CurateError(f"visual: {e}") from None
    missing = []
    sp = cfg.speakers
    if sp.enabled and sp.checkpoint:
        try:
            model_file(sp.checkpoint, sp.weights, cfg.run.models_dir)
        except ModelMissing as e:
            if sp.checkpoint not in REGISTRY:  # a path the user gave
                raise CurateError(f"speakers: {e}") from None
            missing.append(("speakers", str(e)))
    if cfg.audio_embed.enabled:
        try:
            resolve_model(cfg.audio_embed.model, cfg.run.models_dir)
        except ModelMissing as e:
            missing.append(("audio_embed", str(e)))
    if cfg.music.backend != "snr":
        try:
            resolve_model(cfg.music.demucs_model, cfg.run.models_dir)
        except ModelMissing as e:
            if cfg.music.backend == "demucs":
                raise CurateError(f"music.backend=demucs but {e}") from None
            missing.append(("music", str(e)))
    return missing


def audio_emb_dim(cfg: CurateConfig) -> int:
    """Hidden size of the configured Wav2Vec2 (from its config, no weights loaded)."""
    try:
        path = resolve_model(cfg.audio_embed.model, cfg.run.models_dir)
        with open(Path(path) / "config.json") as f:
            return int(json.load(f)["hidden_size"])
    except (ModelMissing, OSError, KeyError, ValueError):
        return DEFAULT_AUDIO_EMB_DIM
