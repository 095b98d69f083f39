"""Shared helpers of the trainer tests: tiny frozen models, a real clip's latents and a small
in-memory DataModule with a resumable position (the batch format of training/data)."""
from __future__ import annotations

import lightning as L
import numpy as np

AUDIO_DIM = 8


def speech_features(pcm: np.ndarray, num_frames: int, fps: float = 25.0, rate: int = 16000,
                    dim: int = AUDIO_DIM) -> np.ndarray:
    """Per-video-frame log band energies of the speech: a weight-free stand-in for Wav2Vec2
    features with the same layout (one vector per video frame)."""
    hop = int(round(rate / fps))
    out = np.zeros((num_frames, dim), np.float32)
    for i in range(num_frames):
        seg = pcm[i * hop:(i + 1) * hop]
        if len(seg) < 16:
            continue
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
        bands = np.array_split(spec, dim)
        out[i] = np.log1p(np.array([b.mean() for b in bands]) * 1e3)
    return (out - out.mean()) / (out.std() + 1e-6)


class ListLoader:
    """Prepared batches in a fixed cycle, starting at position ``start``."""

    def __init__(self, batches: list[dict], start: int = 0, epochs: int = 1000):
        self.batches, self.start, self.epochs = batches, start, epochs

    def __iter__(self):
        for pos in range(self.start, len(self.batches) * self.epochs):
            yield self.batches[pos % len(self.batches)]


class InMemoryDataModule(L.LightningDataModule):
    """Counts batches as the training loop consumes them (``on_before_batch_transfer`` runs
    per trained batch, after Lightning's one-batch prefetch), so the position in its
    ``state_dict`` is exact at every checkpoint and a resumed run continues at the next batch."""

    def __init__(self, batches: list[dict]):
        super().__init__()
        self.batches = batches
        self.consumed = 0

    def train_dataloader(self):
        return ListLoader(self.batches, start=self.consumed)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        if self.trainer is not None and self.trainer.training:
            self.consumed += 1
        return batch

    def state_dict(self):
        return {"consumed": self.consumed}

    def load_state_dict(self, state_dict):
        self.consumed = int(state_dict["consumed"])
