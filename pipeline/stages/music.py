"""Music / noise: how much of a clip's audio energy is not the voice.

Production backend: Demucs (htdemucs) vocals stem; the stem becomes the clip's cleaned speech
and ``music_ratio`` = energy(mix - vocals) / energy(mix). Embedded default (no weights): a
VAD-gated energy estimate: the background level measured where the VAD hears no speech is
assumed to continue under the speech, so ``music_ratio`` = background energy x duration / total
energy. It separates nothing; ``backends`` says so.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from common.media import AUDIO_RATE
from common.weights import ModelMissing, resolve_model
from pipeline.engine.stage import Stage, StageResult, backend_label
from schemas.base import Strict


class MusicConfig(Strict):
    backend: Literal["auto", "demucs", "snr"] = "auto"  # auto: demucs when its weights exist
    demucs_model: str = "htdemucs"
    # Above this share of non-vocal energy the speech is too buried for lip-sync learning.
    max_music_ratio: float = Field(0.35, ge=0, le=1)
    frame_ms: int = Field(32, ge=8)


log = logging.getLogger(__name__)


def frame_energies(pcm: np.ndarray, frame: int) -> np.ndarray:
    n = len(pcm) // frame
    if n == 0:
        return np.zeros(0)
    x = pcm[: n * frame].astype(np.float64).reshape(n, frame)
    return (x * x).mean(axis=1)


def snr_music_ratio(pcm: np.ndarray, segments: list[list[float]], frame_ms: int = 32) -> float:
    """Non-vocal energy share estimated from the non-speech frames (see module doc)."""
    frame = max(1, int(AUDIO_RATE * frame_ms / 1000))
    e = frame_energies(pcm, frame)
    total = float(e.sum())
    if len(e) == 0 or total <= 1e-12:
        return 0.0
    centres = (np.arange(len(e)) + 0.5) * frame / AUDIO_RATE
    speech = np.zeros(len(e), bool)
    for s, t in segments:
        speech |= (centres >= s) & (centres < t)
    # frames straddling a segment edge carry voice: keep one frame of guard on each side
    guarded = speech | np.roll(speech, 1) | np.roll(speech, -1)
    quiet = e[~guarded]
    if len(quiet) >= max(3, int(0.05 * len(e))):
        background = float(quiet.mean())
    else:
        # (almost) continuous speech: the quietest speech frames bound the background from above
        background = float(np.percentile(e, 10))
    return float(np.clip(background * len(e) / total, 0.0, 1.0))


def _demucs_allow_list() -> list:
    """What a published demucs package pickles beyond tensors: the model class (demucs rebuilds
    the network from it), ``Fraction`` segment lengths and numpy scalars in its constructor
    arguments. Nothing in it runs code while unpickling."""
    from fractions import Fraction

    import numpy as np
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    scalar = np._core.multiarray.scalar
    return [HTDemucs, HDemucs, Demucs, Fraction, np.dtype, type(np.dtype("float64")), type(np.dtype("float32")),
            type(np.dtype("int64")), type(np.dtype("bool")), scalar, (scalar, "numpy.core.multiarray.scalar")]


def load_demucs(model: str, models_dir: Optional[str] = None):
    """An HTDemucs (or any demucs) model from a serialized .th package path, a directory holding
    one, or a registry name, loaded without running pickled code (demucs' own loader unpickles
    anything). Raises ModelMissing when absent, UnsafeWeights for a package holding more."""
    from demucs.states import load_model

    from common.weights import load_state_dict

    path = Path(resolve_model(model, models_dir))
    if path.is_dir():
        cands = sorted(path.glob("*.th"))
        if not cands:
            raise ModelMissing(f"no demucs .th checkpoint in {path}; run `mocha models fetch htdemucs`")
        path = cands[0]
    net = load_model(load_state_dict(path, allow=_demucs_allow_list()))
    net.eval()
    return net, path.name


def separate_vocals(net, pcm: np.ndarray) -> np.ndarray:
    """Vocals stem of 16 kHz mono ``pcm`` (16 kHz mono out, same length)."""
    import julius
    import torch
    from demucs.apply import apply_model

    x = torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32)).to(next(net.parameters()).device)
    x = julius.resample_frac(x, AUDIO_RATE, net.samplerate)
    wav = x[None].expand(net.audio_channels, -1)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.inference_mode():
        stems = apply_model(net, ((wav - mean) / std)[None], shifts=0, split=True, overlap=0.25, progress=False)[0]
    vocals = stems[list(net.sources).index("vocals")] * std + mean
    out = julius.resample_frac(vocals.mean(0), net.samplerate, AUDIO_RATE).cpu().numpy()
    out = out[: len(pcm)]
    if len(out) < len(pcm):
        out = np.pad(out, (0, len(pcm) - len(out)))
    return out.astype(np.float32)


class MusicStage(Stage):
    name = "music"
    columns = {"music_ratio": None}

    def __init__(self, cfg: MusicConfig, device: str = "cpu", models_dir: Optional[str] = None):
        super().__init__(cfg, device, models_dir)
        self.net = None
        self.missing: Optional[str] = None
        self.model_file = None

    def setup(self) -> None:
        if self.cfg.backend == "snr":
            return
        try:
            self.net, self.model_file = load_demucs(self.cfg.demucs_model, self.models_dir)
            self.net.to(self.device)
        except ModelMissing as e:
            if self.cfg.backend == "demucs":
                raise
            self.missing = str(e)

    def backend(self) -> dict:
        if self.net is not None:
            return backend_label("demucs", False, model=self.cfg.demucs_model, file=self.model_file)
        info = backend_label("snr-vad-gated", True, separation=False)
        if self.missing:
            info["reason"] = self.missing
        return info

    def process(self, row: dict) -> StageResult:
        if not row.get("has_audio"):
            return StageResult.kept(music_ratio=None)
        pcm = row["audio_pcm"]
        if len(pcm) == 0 or float(np.max(np.abs(pcm))) < 1e-6:
            return StageResult.kept(music_ratio=0.0)
        out: dict = {}
        if self.net is not None:
            vocals = separate_vocals(self.net, pcm)
            total = float(np.sum(pcm.astype(np.float64) ** 2)) + 1e-12
            ratio = float(np.clip(np.sum((pcm - vocals).astype(np.float64) ** 2) / total, 0.0, 1.0))
            out["audio_pcm"] = vocals  # the cleaned speech is what gets stored and embedded
        else:
            segs = json.loads(row.get("speech_segments") or "[]")
            ratio = snr_music_ratio(pcm, segs, self.cfg.frame_ms)
        out["music_ratio"] = ratio
        if ratio > self.cfg.max_music_ratio:
            return StageResult.st2v_blocked(f"high_music_ratio {ratio:.2f} > {self.cfg.max_music_ratio:.2f}", **out)
        return StageResult.kept(**out)
