"""Wav2Vec2 features for st2v rows curated without ``audio_emb``: the loader calls the very
functions of the pipeline stage (pipeline.stages.audio_embed), so features are identical to the ones
the curation would have stored for the same audio."""
from __future__ import annotations

from typing import Optional

import numpy as np

from common.media import decode_audio_bytes


class AudioFeaturizer:
    """Loads the model once per worker, on first use."""

    def __init__(self, model: str, layer: int = -1, models_dir: Optional[str] = None, device: str = "cpu"):
        self.model_name, self.layer, self.models_dir, self.device = model, layer, models_dir, device
        self._net = self._fe = None

    def label(self) -> dict:
        return {"backend": "wav2vec2", "model": self.model_name, "layer": self.layer, "where": "loader"}

    def features(self, audio: bytes, fps: float, num_frames: int) -> np.ndarray:
        from model.wav2vec2 import embed_audio, load_wav2vec2

        if self._net is None:
            self._net, self._fe = load_wav2vec2(self.model_name, self.device, self.models_dir)
        pcm = decode_audio_bytes(audio)
        emb = embed_audio(self._net, self._fe, pcm, fps, num_frames, self.layer)
        return np.asarray(emb, dtype=np.float32)


def make_featurizer(cfg) -> Optional[AudioFeaturizer]:
    """The loader's featurizer for a DataConfig, or None when no audio model is configured."""
    if cfg.audio_model is None:
        return None
    return AudioFeaturizer(cfg.audio_model, cfg.audio_layer, cfg.models_dir)
