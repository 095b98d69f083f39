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
    # Demucs segments (7.8 s of audio each for htdemucs; a 10 s clip is two) per forward,
    # across the clips of a Ray batch (resources.music.batch_size). Activation memory grows
    # linearly with it; on a GPU larger batches keep the device busy.
    demucs_batch_size: int = Field(4, ge=1)


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


def _normalised_mix(net, pcm: np.ndarray):
    """``pcm`` (16 kHz mono) as the model's input: resampled, one copy per model channel,
    normalised by the clip's own mean and std (demucs' separate.py does the same)."""
    import julius
    import torch

    x = torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32)).to(next(net.parameters()).device)
    x = julius.resample_frac(x, AUDIO_RATE, net.samplerate)
    wav = x[None].expand(net.audio_channels, -1)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    return ((wav - mean) / std)[None], mean, std


def _vocals_out(net, stems, mean, std, n: int) -> np.ndarray:
    """The vocals stem of (sources, channels, length) ``stems``, de-normalised, back at 16 kHz
    mono and exactly ``n`` samples long."""
    import julius

    vocals = stems[list(net.sources).index("vocals")] * std + mean
    out = julius.resample_frac(vocals.mean(0), net.samplerate, AUDIO_RATE).cpu().numpy()
    out = out[:n]
    if len(out) < n:
        out = np.pad(out, (0, n - len(out)))
    return out.astype(np.float32)


def separate_vocals(net, pcm: np.ndarray, overlap: float = 0.25) -> np.ndarray:
    """Vocals stem of 16 kHz mono ``pcm`` (16 kHz mono out, same length), one clip through
    demucs' own ``apply_model`` (split into overlapping segments, no random shifts)."""
    import torch
    from demucs.apply import apply_model

    mix, mean, std = _normalised_mix(net, pcm)
    with torch.inference_mode():
        stems = apply_model(net, mix, shifts=0, split=True, overlap=overlap, progress=False)[0]
    return _vocals_out(net, stems, mean, std, len(pcm))


def can_batch(net) -> bool:
    """Segment batching needs one model with a fixed segment (HTDemucs, Demucs v3); a bag of
    models goes through ``apply_model`` clip by clip."""
    from demucs.apply import BagOfModels

    return not isinstance(net, BagOfModels) and getattr(net, "segment", None)


def separate_vocals_batch(net, pcms: list[np.ndarray], batch_size: int = 4, overlap: float = 0.25) -> list[np.ndarray]:
    """:func:`separate_vocals` of several clips, their segments run ``batch_size`` at a time.

    ``apply_model`` cuts a clip into overlapping segments, pads each to the model's length
    (``TensorChunk.padded``: real neighbouring samples where there are any, zeros past the
    ends), runs the model per segment and cross-fades the outputs with a triangular weight.
    The model treats the items of a batch independently, so running segments of several
    clips in one forward and cross-fading each clip's own segments with the same weights, in
    the same order, gives ``apply_model``'s result (tested against it)."""
    import torch
    from demucs.apply import TensorChunk
    from demucs.utils import center_trim

    segment = int(net.samplerate * net.segment)  # as apply_model computes it
    stride = int((1 - overlap) * segment)
    device = next(net.parameters()).device
    weight = torch.cat([torch.arange(1, segment // 2 + 1, device=device),
                        torch.arange(segment - segment // 2, 0, -1, device=device)])
    weight = weight / weight.max()  # apply_model's transition_power=1
    mixes = [_normalised_mix(net, pcm) for pcm in pcms]
    jobs = []  # (clip, offset, chunk length, padded segment)
    for ci, (mix, _, _) in enumerate(mixes):
        for offset in range(0, mix.shape[-1], stride):
            chunk = TensorChunk(mix, offset, segment)
            valid = net.valid_length(chunk.length) if hasattr(net, "valid_length") else chunk.length
            jobs.append((ci, offset, chunk.length, chunk.padded(valid)))
    outs: dict[int, torch.Tensor] = {}
    by_len: dict[int, list[int]] = {}
    for j, job in enumerate(jobs):  # only segments of one padded length share a forward
        by_len.setdefault(job[3].shape[-1], []).append(j)
    with torch.inference_mode():
        for idx in by_len.values():
            for b in range(0, len(idx), max(1, batch_size)):
                part = idx[b:b + max(1, batch_size)]
                res = net(torch.cat([jobs[j][3] for j in part]))
                for j, r in zip(part, res):
                    outs[j] = center_trim(r, jobs[j][2])
        stems = [torch.zeros(len(net.sources), mix.shape[1], mix.shape[-1], device=device) for mix, _, _ in mixes]
        sums = [torch.zeros(mix.shape[-1], device=device) for mix, _, _ in mixes]
        for j, (ci, offset, n, _) in enumerate(jobs):  # in offset order, as apply_model adds them
            stems[ci][..., offset:offset + segment] += weight[:n] * outs[j]
            sums[ci][offset:offset + segment] += weight[:n]
    return [_vocals_out(net, st / sm, mean, std, len(pcm))
            for st, sm, (_, mean, std), pcm in zip(stems, sums, mixes, pcms)]


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

    def process_batch(self, rows: list[dict]) -> list[StageResult]:
        # clips with sound go through Demucs together; the rest need no model, nor do clips the
        # speech stage already kept out of st2v (their music share decides nothing)
        loud = [i for i, r in enumerate(rows) if r.get("has_audio") and len(r["audio_pcm"])
                and float(np.max(np.abs(r["audio_pcm"]))) >= 1e-6 and r.get("st2v_block") is None]
        vocals: dict[int, np.ndarray] = {}
        if self.net is not None and loud:
            pcms = [rows[i]["audio_pcm"] for i in loud]
            if can_batch(self.net):
                outs = separate_vocals_batch(self.net, pcms, self.cfg.demucs_batch_size)
            else:
                outs = [separate_vocals(self.net, p) for p in pcms]
            vocals = dict(zip(loud, outs))
        return [self._result(r, vocals.get(i)) for i, r in enumerate(rows)]

    def _result(self, row: dict, vocals: Optional[np.ndarray]) -> StageResult:
        if not row.get("has_audio"):
            return StageResult.kept(music_ratio=None)
        pcm = row["audio_pcm"]
        if len(pcm) == 0 or float(np.max(np.abs(pcm))) < 1e-6:
            return StageResult.kept(music_ratio=0.0)
        if self.net is not None and vocals is None:  # not separated: st2v was already blocked
            return StageResult.kept(music_ratio=None)
        out: dict = {}
        if vocals is not None:
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
