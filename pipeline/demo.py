"""`mocha demo`: make small sample inputs offline, curate them end to end on embedded defaults,
and say where the shards are. No third-party media: every input is synthesised here."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from pipeline.media import AUDIO_RATE, encode_mp4

FPS = 25


def synth_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like audio: a glottal pulse train with a wandering pitch through vowel formants,
    gated into syllables and phrases. Voice-activity detectors hear it as speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * AUDIO_RATE)
    t = np.arange(n) / AUDIO_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = np.cumsum(f0 / AUDIO_RATE)
    src = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)  # one pulse per period
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)]
    out = np.zeros(n)
    syl = int(0.18 * AUDIO_RATE)
    for start in range(0, n, syl):
        seg = src[start:start + syl]
        if not len(seg):
            break
        y = np.zeros(len(seg))
        for k, f in enumerate(vowels[rng.integers(len(vowels))]):
            y += _resonate(seg, f, 80 + 40 * k) / (k + 1)
        env = np.sin(np.linspace(0, np.pi, len(seg))) ** 0.6
        out[start:start + len(seg)] = y * env
    phrase = ((t % 3.0) < 2.6).astype(np.float64)  # short pauses between phrases
    out *= phrase
    out += 0.002 * rng.standard_normal(n)
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _resonate(x: np.ndarray, freq: float, bw: float) -> np.ndarray:
    r = math.exp(-math.pi * bw / AUDIO_RATE)
    a1, a2 = -2 * r * math.cos(2 * math.pi * freq / AUDIO_RATE), r * r
    y = np.zeros(len(x))
    y1 = y2 = 0.0
    for i, v in enumerate(x):
        y0 = v - a1 * y1 - a2 * y2
        y[i] = y0
        y2, y1 = y1, y0
    return y


def synth_scene_frames(seconds: float, width: int, height: int, hue: int, seed: int = 0):
    """A moving textured scene (so motion and scene detectors have something to see)."""
    rng = np.random.default_rng(seed)
    base = np.zeros((height, width, 3), np.uint8)
    base[..., 0] = (hue * 37) % 256
    base[..., 1] = (hue * 91 + 60) % 256
    base[..., 2] = (hue * 53 + 120) % 256
    tex = rng.integers(0, 60, size=(height, width, 1), dtype=np.uint8)
    for k in range(int(seconds * FPS)):
        f = base.copy()
        f = np.clip(f.astype(np.int16) + np.roll(tex, k * 2, axis=1), 0, 255).astype(np.uint8)
        cx = int(width * (0.3 + 0.4 * (k % 50) / 50))
        cy = height // 2
        f[max(0, cy - 30):cy + 30, max(0, cx - 20):cx + 20] = (240, 200, 170)
        yield f


def make_demo_inputs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    # two scenes with a hard cut, speech-like audio throughout
    frames = list(synth_scene_frames(4.0, 320, 240, 1, 1)) + list(synth_scene_frames(5.0, 320, 240, 4, 2))
    p = folder / "two_scenes_speech.mp4"
    p.write_bytes(encode_mp4(frames, FPS, audio=synth_speech(9.0, 1)))
    made.append(p)
    # one long scene (becomes two windows) without an audio stream: t2v material
    p = folder / "long_scene_no_audio.mp4"
    p.write_bytes(encode_mp4(synth_scene_frames(12.0, 256, 256, 7, 3), FPS))
    made.append(p)
    # bad inputs: each must end as a ledger row with a reason
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "random_bytes.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    made += [folder / "empty.mp4", folder / "random_bytes.mp4"]
    return made


def register(sub) -> None:
    p = sub.add_parser("demo", help="make sample inputs offline and curate them end to end",
                       description="Synthesises a few small videos (and two broken files), runs the "
                       "curation on embedded defaults and prints where the shards are.")
    p.add_argument("--output", default="demo_out", help="working dir (inputs/ and shards/ go here)")
    p.add_argument("--runner", choices=["ray", "local"], default="ray")
    p.set_defaults(func=run)


def run(args) -> int:
    from pipeline.config import load_config
    from pipeline.curate import run_curate

    root = Path(args.output)
    inputs = make_demo_inputs(root / "inputs")
    cfg = load_config(None, [], inputs=[str(p) for p in inputs], output=str(root / "shards"))
    run_curate(cfg, runner=args.runner)
    print(f"demo shards: {root / 'shards'} (st2v/, t2v/, ledger/, run.json)", file=sys.stdout)
    return 0
