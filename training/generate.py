"""Text + speech -> talking-character video (``mocha generate``).

Pipeline: speech (16 kHz mono, one track per clip) -> Wav2Vec2 features per video frame ->
the base's flow-matching sampler from diffusers (UniPC on flow sigmas with Wan's time shift, or
flow-matching Euler) over the MoCha model, with separate text and audio guidance ->
VAE decode per clip -> mp4 with the speech muxed in.

A checkpoint holds what was trained and the base's identity: ``load_module`` resolves the base
again (the recorded source, or ``base=`` to point at another copy of the same weights), checks
its sha256 and loads the trained tensors (``torch.load(weights_only=True)``).

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
from model.flow import sample

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
    shift: float = 3.0  # Wan's time shift (3 at 480p and below, 5 at 720p): more steps at high noise
    scheduler: str = "unipc"  # Wan's own (UniPC on flow sigmas); "euler": flow-matching Euler
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
                text_encoder: Optional[str] = None, base: Optional[str] = None):
    """A trained MochaLitModule from a checkpoint: the base is resolved again (``base`` may
    re-point it to another local copy of the same weights: the sha256 must match) and the
    trained tensors are loaded on top; frozen models may be re-pointed likewise."""
    from training.module import CKPT_KEY, MochaLitModule

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if CKPT_KEY not in ck:
        raise ValueError(f"{ckpt_path} is not a MoCha checkpoint (no base identity recorded)")
    import inspect

    args = inspect.signature(MochaLitModule.__init__).parameters
    # LightningCLI adds its own keys (``_instantiator``, ``_class_path``) beside the init args
    hp = {k: v for k, v in ck.get("hyper_parameters", {}).items() if k in args}
    for k, v in (("vae", vae), ("text_encoder", text_encoder), ("base", base)):
        if v:
            hp[k] = v
    hp["init_from"] = None
    module = MochaLitModule(**hp)
    module.on_load_checkpoint(ck)
    module.load_state_dict(ck["state_dict"])
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
    net = module.net
    r = module.mocha_cfg.vae_temporal_compression
    vae = module.vae_model()
    s = vae.spatial_compression
    ph, pw = net.patch_size[1:]
    if vae.temporal_compression != r:
        raise ValueError(f"VAE temporal compression {vae.temporal_compression} != the model's {r}")
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
        if f.shape[1] != module.mocha_cfg.audio_dim:
            raise ValueError(f"speech features have dim {f.shape[1]}, the model expects {module.mocha_cfg.audio_dim}")
        feats.append(torch.from_numpy(f))
        aud_segments.append(n)
    audio = torch.cat(feats)[None].to(module.device)
    text = module.encode_text([prompt])
    e_text = module.encode_text([""])
    # three branches in one batch: (no text, no speech), (text, no speech), (text, speech)
    texts = torch.cat([e_text, text, text])
    audios = torch.cat([torch.zeros_like(audio), torch.zeros_like(audio), audio])
    has_audio = torch.tensor([False, False, True], device=module.device)
    T = sum(lat_frames)
    shape = (1, net.in_channels, T, cfg.height // s, cfg.width // s)
    g = torch.Generator().manual_seed(cfg.seed)
    x0 = torch.randn(shape, generator=g).to(module.device)

    def velocity(x, t):
        v = net(x.expand(3, -1, -1, -1, -1), t.expand(3), texts, audios, has_audio=has_audio,
                segments=lat_frames, audio_segments=aud_segments)
        v0, vt, vta = v[0:1], v[1:2], v[2:3]
        return v0 + cfg.text_scale * (vt - v0) + cfg.audio_scale * (vta - vt)

    with module.sampling_weights(cfg.use_ema):
        latents = sample(velocity, x0, cfg.steps, cfg.shift, cfg.scheduler)
    frames, t0 = [], 0
    for L, n_out in zip(lat_frames, out_frames):
        video = vae.decode(latents[:, :, t0:t0 + L])[0]  # [3, T, H, W]
        t0 += L
        clip = ((video.permute(1, 2, 3, 0).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        frames.append(clip[:n_out])
    info = {"prompt": prompt, "clips": len(speech), "steps": cfg.steps, "text_scale": cfg.text_scale,
            "audio_scale": cfg.audio_scale, "seed": cfg.seed, "shift": cfg.shift, "scheduler": cfg.scheduler,
            "fps": cfg.fps, "ema": bool(cfg.use_ema and module.ema is not None),
            "base": {k: module.base_identity.get(k) for k in ("source", "revision", "sha256")},
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
