"""Speech detection with Silero VAD (its weights ship inside the silero-vad wheel)."""
from __future__ import annotations

import json

import numpy as np
from pydantic import Field

from common.media import AUDIO_RATE
from pipeline.engine.stage import Stage, StageResult, backend_label
from schemas.base import Strict


class SpeechConfig(Strict):
    threshold: float = Field(0.5, gt=0, lt=1)  # Silero speech probability
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 300
    # A talking-character clip should be mostly speech: below this it cannot be st2v.
    min_speech_ratio: float = Field(0.5, ge=0, le=1)
    # Digital silence (peak below this) is reported as such rather than as "no speech".
    silence_peak: float = Field(1e-4, ge=0)


def speech_segments(model, pcm: np.ndarray, cfg: SpeechConfig) -> list[list[float]]:
    """Speech segments [[start_s, end_s], ...] of 16 kHz mono ``pcm``."""
    import torch
    from silero_vad import get_speech_timestamps

    if len(pcm) < 512:
        return []
    model.reset_states()
    ts = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32)), model,
                               threshold=cfg.threshold, sampling_rate=AUDIO_RATE,
                               min_speech_duration_ms=cfg.min_speech_duration_ms,
                               min_silence_duration_ms=cfg.min_silence_duration_ms)
    return [[t["start"] / AUDIO_RATE, t["end"] / AUDIO_RATE] for t in ts]


def speech_ratio(segments: list[list[float]], duration_s: float) -> float:
    if duration_s <= 0:
        return 0.0
    return float(min(1.0, sum(e - s for s, e in segments) / duration_s))


class SpeechStage(Stage):
    name = "speech"
    columns = {"speech_ratio": None, "speech_segments": None}

    def setup(self) -> None:
        from silero_vad import load_silero_vad

        self.model = load_silero_vad(onnx=False)

    def backend(self) -> dict:
        import silero_vad

        return backend_label("silero-vad", False, version=getattr(silero_vad, "__version__", "?"),
                             threshold=self.cfg.threshold)

    def process(self, row: dict) -> StageResult:
        if not row.get("has_audio"):
            return StageResult.st2v_blocked("no_audio_stream", speech_ratio=None, speech_segments=None)
        pcm = row["audio_pcm"]
        if len(pcm) == 0 or float(np.max(np.abs(pcm))) < self.cfg.silence_peak:
            return StageResult.st2v_blocked("silent_audio", speech_ratio=0.0, speech_segments="[]")
        segs = speech_segments(self.model, pcm, self.cfg)
        ratio = speech_ratio(segs, len(pcm) / AUDIO_RATE)
        out = {"speech_ratio": ratio, "speech_segments": json.dumps([[round(s, 3), round(e, 3)] for s, e in segs])}
        if ratio < self.cfg.min_speech_ratio:
            return StageResult.st2v_blocked(f"low_speech_ratio {ratio:.2f} < {self.cfg.min_speech_ratio:.2f}", **out)
        return StageResult.kept(**out)
