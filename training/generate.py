"""Text + speech -> talking-character video (``mocha generate``).

Pipeline: speech (16 kHz mono, one track per clip) -> Wav2Vec2 features per video frame ->
Euler ODE sampling of the DiT from noise with separate text and audio guidance ->
VAE decode per clip -> mp4 with the speech muxed in.

Guidance (two conditions, nested as in InstructPix2Pix-style multi-condition CFG):
``v = v(0,0) + s_text * (v(T,0) - v(0,0)) + s_audio * (v(T,A) - v(T,0))``, where ``0`` is the
empty prompt / zero speech the model was trained with under condition dropout.

Frame counts: the clip of a speech track of ``D`` seconds gets the smallest latent length whose
``1 + r*m`` frames cover ``D * fps``; after decoding, the video is cut at the rounded cumulative
speech time, so the whole video is within half a frame of the total speech duration.

A multi-clip structured prompt ("Two video clips. ... First clip: ... Second clip: ...") with one
speech track per clip is generated in ONE pass: the clips' latents are concatenated in time,
self-attention spans all of them (so characters stay consistent), the speech-video window keeps
each clip on its own track, and each clip is decoded as its own causal VAE sequence.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from common.media import AUDIO_RATE, VIDEO_FPS
from model.flow import euler_sample

log = logging.getLogger(__name__)

_CLIP_LINE = re.compile(r"^(?:[A-Z][a-z]+ clip|Clip \d+):", re.M)


@dataclass
class GenerateConfig:
    height: int = 256
    width: int = 256
    fps: float = VIDEO_FPS
    steps: int = 30
    text_scale: float = 5.0
    audio_scale: float = 3.5
    shift: float = 3.0  # more steps at high noise, as for Wan-style flow models
    seed: int = 0
    use_ema: bool = True
    audio_model: Optional[str] = None  # default: the checkpoint's hparams.audio_model
    audio_layer: int = -1
    models_dir: Optional[str] = None


@dataclass
class GenerationResult:
    frames: np.ndarray  # [T, H, W, 3] uint8
    fps: float
    speech: np.ndarray  # concatenated 16 kHz mono track muxed into the mp4
    clip_frames: list[int]
    info: dict = field(default_factory=dict)


def count_prompt_clips(prompt: str) -> int:
    """Clip lines of a structured prompt ("First clip: ..."); 1 for a free-form prompt."""
    return max(1, len(_CLIP_LINE.findall(prompt)))


def prompt_from_input(text: str, tokenizer=None) -> str:
    """The prompt as given, or rendered by the structured-prompt template when it is caption
    JSON (one caption, a list, or {"clips": [...]})."""
    s = text.strip()
    if s.startswith(("{", "[")):
        from schemas.prompt import render_from_json

        return render_from_json(s, tokenizer).text
    return text


def load_module(ckpt_path: str, device: str = "cpu", vae: Optional[str] = None,
                text_encoder: Optional[str] = None):
    """A trained MochaLitModule from a checkpoint; frozen models may be re-pointed to another
    local copy of the same weights (checkpoints store names/paths, not the weights)."""
    from training.module import MochaLitModule

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    hp = dict(ck.get("hyper_parameters", {}))
    if vae:
        hp["vae"] = vae
    if text_encoder:
        hp["text_encoder"] = text_encoder
    hp["init_from"] = None
    module = MochaLitModule(**hp)
    missing, unexpected = module.load_state_dict(ck["state_dict"], strict=False)
    bad = [k for k in missing if k.startswith(("dit.", "ema_dit."))]
    if bad:
        raise ValueError(f"checkpoint {ckpt_path} lacks DiT weights: {bad[:5]} ...")
    return module.to(device).eval()


class SpeechFeatures:
    """Wav2Vec2 features per video frame, exactly as the curation stage computes them."""

    def __init__(self, model: str, layer: int = -1, models_dir: Optional[str] = None):
        from model.wav2vec2 import load_wav2vec2

        self.model_name = model
        self.layer = layer
        self.net, self.fe = load_wav2vec2(model, "cpu", models_dir)

    def __call__(self, pcm: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
        from model.wav2vec2 import embed_audio

        return np.asarray(embed_audio(self.net, self.fe, pcm, fps, num_frames, self.layer), np.float32)


def plan_frames(durations: Sequence[float], fps: float, r: int) -> tuple[list[int], list[int]]:
    """(latent frames per clip, output video frames per clip)."""
    latents, cut = [], []
    cum, prev_end = 0.0, 0
    for d in durations:
        if d <= 0:
            raise ValueError("a speech track is empty")
        cum += d
        end = int(round(cum * fps))
        n_out = max(1, end - prev_end)
        prev_end = end
        m = max(0, math.ceil((n_out - 1) / r))
        latents.append(1 + m)
        cut.append(n_out)
    return latents, cut


@torch.no_grad()
def generate(module, prompt: str, speech: Sequence[np.ndarray], cfg: GenerateConfig,
             features: Optional[SpeechFeatures] = None) -> GenerationResult:
    """``speech``: one 16 kHz mono float array per clip of the prompt."""
    speech = [np.asarray(s, dtype=np.float32).reshape(-1) for s in speech]
    if not speech:
        raise ValueError("generate needs at least one speech track")
    n_clips = count_prompt_clips(prompt)
    if n_clips > 1 and n_clips != len(speech):
        raise ValueError(f"the prompt describes {n_clips} clips but {len(speech)} speech tracks were given "
                         "(one speech track per clip)")
    dit = module.sampling_model() if cfg.use_ema else module.dit
    dcfg = module.dit_cfg
    vae = module.vae_model()
    r, s = vae.temporal_compression, vae.spatial_compression
    ph, pw = dcfg.patch_size[1:]
    if cfg.height % (s * ph) or cfg.width % (s * pw):
        raise ValueError(f"height/width must be multiples of {s * ph} (VAE {s}x, patch {ph})")
    durations = [len(x) / AUDIO_RATE for x in speech]
    lat_frames, out_frames = plan_frames(durations, cfg.fps, r)
    if features is None:
        name = cfg.audio_model or module.hparams.get("audio_model") or "wav2vec2-base-960h"
        features = SpeechFeatures(name, cfg.audio_layer, cfg.models_dir)
    feats, aud_segments = [], []
    for pcm, L in zip(speech, lat_frames):
        n = 1 + r * (L - 1)
        f = features(pcm, cfg.fps, n)
        if f.shape[1] != dcfg.audio_dim:
            raise ValueError(f"speech features have dim {f.shape[1]}, the DiT expects {dcfg.audio_dim}")
        feats.append(torch.from_numpy(f))
        aud_segments.append(n)
    audio = torch.cat(feats)[None].to(module.device)
    text, tmask = module.encode_text([prompt])
    e_text, e_mask = module.encode_text([""])
    Lt = max(text.shape[1], e_text.shape[1])
    pad = lambda x: torch.cat([x, x.new_zeros((x.shape[0], Lt - x.shape[1], *x.shape[2:]))], 1)
    texts = torch.cat([pad(e_text), pad(text), pad(text)])
    tmasks = torch.cat([pad(e_mask), pad(tmask), pad(tmask)])
    audios = torch.cat([torch.zeros_like(audio), torch.zeros_like(audio), audio])
    has_audio = torch.tensor([False, False, True], device=module.device)
    T = sum(lat_frames)
    shape = (1, dcfg.in_channels, T, cfg.height // s, cfg.width // s)
    g = torch.Generator().manual_seed(cfg.seed)
    x0 = torch.randn(shape, generator=g).to(module.device)

    def velocity(x, t):
        v = dit(x.expand(3, -1, -1, -1, -1), t.expand(3), texts, audios, text_mask=tmasks,
                has_audio=has_audio, segments=lat_frames, audio_segments=aud_segments)
        v0, vt, vta = v[0:1], v[1:2], v[2:3]
        return v0 + cfg.text_scale * (vt - v0) + cfg.audio_scale * (vta - vt)

    latents = euler_sample(velocity, x0, cfg.steps, cfg.shift)
    frames, t0 = [], 0
    for L, n_out in zip(lat_frames, out_frames):
        video = vae.decode(latents[:, :, t0:t0 + L])[0]  # [3, T, H, W]
        t0 += L
        clip = ((video.permute(1, 2, 3, 0).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        frames.append(clip[:n_out])
    info = {"prompt": prompt, "clips": len(speech), "steps": cfg.steps, "text_scale": cfg.text_scale,
            "audio_scale": cfg.audio_scale, "seed": cfg.seed, "shift": cfg.shift, "fps": cfg.fps,
            "ema": bool(cfg.use_ema and module.ema_dit is not None),
            "backends": {**module.backends(), "speech_features": getattr(features, "model_name", type(features).__name__)}}
    return GenerationResult(np.concatenate(frames), cfg.fps, np.concatenate(speech), out_frames, info)


def write_mp4(result: GenerationResult, out: str | Path) -> Path:
    """mp4 (H.264 + AAC speech) and a JSON sidecar with settings and backends."""
    from common.media import encode_mp4

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encode_mp4(list(result.frames), result.fps, audio=result.speech))
    side = dict(result.info, frames=int(len(result.frames)), clip_frames=result.clip_frames,
                speech_seconds=len(result.speech) / AUDIO_RATE)
    out.with_suffix(".json").write_text(json.dumps(side, indent=2))
    return out


def read_speech(path: str) -> np.ndarray:
    from common.media import decode_audio

    pcm = decode_audio(path)
    if pcm is None or len(pcm) == 0:
        raise ValueError(f"{path}: no audio stream (a speech file is required)")
    return pcm
