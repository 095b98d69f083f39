"""Wav2Vec2 speech embeddings (``model.wav2vec2``): one float16 vector per video frame."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from common.weights import ModelMissing
from model.wav2vec2 import embed_audio, load_wav2vec2
from pipeline.engine.stage import Stage, StageResult, backend_label
from schemas.base import Strict


class AudioEmbedConfig(Strict):
    enabled: bool = True
    model: str = "facebook/wav2vec2-base-960h"  # hub id, registry name or local path
    # Which hidden state to keep: -1 = last layer.
    layer: int = -1
    max_seconds_per_pass: float = Field(30.0, gt=0)


class AudioEmbedStage(Stage):
    """Fills ``audio_emb`` for clips that may still become st2v. Without a model the column
    stays null and ``backends`` says why; the loader can compute it later from ``audio``."""

    name = "audio_embed"
    columns = {"audio_emb": None}

    def __init__(self, cfg: AudioEmbedConfig, device: str = "cpu", models_dir: Optional[str] = None):
        super().__init__(cfg, device, models_dir)
        self.net = self.fe = None
        self.missing: Optional[str] = None

    def setup(self) -> None:
        if not self.cfg.enabled:
            self.missing = "disabled in config (audio_embed.enabled=false)"
            return
        try:
            self.net, self.fe = load_wav2vec2(self.cfg.model, self.device, self.models_dir)
        except ModelMissing as e:
            self.missing = str(e)

    def backend(self) -> dict:
        if self.net is None:
            return backend_label("none", True, model=self.cfg.model, reason=self.missing)
        return backend_label("wav2vec2", False, model=self.cfg.model, layer=self.cfg.layer)

    def process(self, row: dict) -> StageResult:
        if self.net is None or row.get("st2v_block") is not None or not row.get("has_audio"):
            # t2v-bound rows carry no embedding by contract
            return StageResult.kept(audio_emb=None, backend=None if self.net is None else {})
        emb = embed_audio(self.net, self.fe, row["audio_pcm"], float(row["fps"]), int(row["num_frames"]),
                          self.cfg.layer, self.cfg.max_seconds_per_pass)
        return StageResult.kept(audio_emb=emb)
