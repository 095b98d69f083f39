"""Wav2Vec2 speech embeddings (``model.wav2vec2``): one float16 vector per video frame.

The stage embeds the clips of a batch together (``model.wav2vec2.embed_audio_batch``: padded
and masked so each clip gets the features it would get alone), on the device Ray assigned.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from common.weights import ModelMissing
from model.wav2vec2 import embed_audio_batch, load_wav2vec2
from pipeline.engine.stage import Stage, StageResult, backend_label
from schemas.base import Strict


class AudioEmbedConfig(Strict):
    enabled: bool = True
    model: str = "facebook/wav2vec2-base-960h"  # hub id, registry name or local path
    # Which hidden state to keep: -1 = last layer.
    layer: int = -1
    max_seconds_per_pass: float = Field(30.0, gt=0)
    # Passes (clips, or 30 s pieces of longer ones) per forward. The rows a call sees are the
    # Ray batch (resources.audio_embed.batch_size); this splits them further. Padding costs
    # compute on the shorter items, and on CPU a batch gains little over one at a time
    # (benchmarks/bench_batching.py); on a GPU larger batches fill the device.
    batch_size: int = Field(8, ge=1)


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

    def _wants(self, row: dict) -> bool:
        # t2v-bound rows carry no embedding by contract
        return self.net is not None and row.get("st2v_block") is None and bool(row.get("has_audio"))

    def process_batch(self, rows: list[dict]) -> list[StageResult]:
        results = [StageResult.kept(audio_emb=None, backend=None if self.net is None else {}) for _ in rows]
        todo = [i for i, r in enumerate(rows) if self._wants(r)]
        if todo:
            clips = [(rows[i]["audio_pcm"], float(rows[i]["fps"]), int(rows[i]["num_frames"])) for i in todo]
            embs = embed_audio_batch(self.net, self.fe, clips, self.cfg.layer, self.cfg.max_seconds_per_pass,
                                     self.cfg.batch_size)
            for i, emb in zip(todo, embs):
                results[i] = StageResult.kept(audio_emb=emb)
        return results
