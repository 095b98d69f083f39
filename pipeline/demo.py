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
    # syllables of random loudness in phrases of random length: real speech is not periodic,
    # and a periodic envelope would look in sync at many shifts
    start = 0
    while start < n:
        length = int(0.18 * AUDIO_RATE)
        seg = src[start:start + length]
        y = np.zeros(len(seg))
        for k, f in enumerate(vowels[rng.integers(len(vowels))]):
            y += _resonate(seg, f, 80 + 40 * k) / (k + 1)
        env = rng.uniform(0.4, 1.0) * np.sin(np.linspace(0, np.pi, len(seg))) ** 0.6
        out[start:start + len(seg)] = y * env
        start += length
    phrase = np.ones(n)  # phrases of random length with short pauses between them
    at = rng.uniform(1.5, 3.0)
    while at < seconds:
        gap = rng.uniform(0.25, 0.5)
        phrase[int(at * AUDIO_RATE):int((at + gap) * AUDIO_RATE)] = 0.0
        at += gap + rng.uniform(1.5, 3.0)
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


def speech_envelope(pcm: np.ndarray, fps: float, n: int) -> np.ndarray:
    """Per-video-frame loudness in [0, 1] (drives the cartoon's mouth)."""
    hop = int(AUDIO_RATE / fps)
    env = np.array([np.sqrt(np.mean(pcm[i * hop:(i + 1) * hop] ** 2)) if i * hop < len(pcm) else 0.0 for i in range(n)])
    return env / (env.max() + 1e-9)


def draw_character(img: np.ndarray, cx: int, cy: int, mouth: float, scale: float = 1.0) -> None:
    """A flat cartoon head and shoulders; OpenCV's face detectors find it like a real face."""
    import cv2

    s = scale
    cv2.ellipse(img, (cx, cy + int(230 * s)), (int(150 * s), int(120 * s)), 0, 0, 360, (150, 60, 60), -1)
    cv2.ellipse(img, (cx, cy), (int(70 * s), int(92 * s)), 0, 0, 360, (225, 180, 150), -1)
    cv2.ellipse(img, (cx, cy - int(70 * s)), (int(75 * s), int(40 * s)), 0, 180, 360, (60, 40, 30), -1)
    for dx in (-28, 28):
        ex = cx + int(dx * s)
        cv2.ellipse(img, (ex, cy - int(18 * s)), (int(14 * s), int(7 * s)), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(img, (ex, cy - int(18 * s)), max(1, int(6 * s)), (20, 30, 40), -1)
        cv2.line(img, (ex - int(16 * s), cy - int(35 * s)), (ex + int(16 * s), cy - int(37 * s)), (70, 50, 40), max(1, int(4 * s)))
    cv2.line(img, (cx, cy - int(10 * s)), (cx - int(6 * s), cy + int(20 * s)), (200, 150, 120), max(1, int(3 * s)))
    cv2.ellipse(img, (cx, cy + int(45 * s)), (int(24 * s), max(1, int((3 + 22 * mouth) * s))), 0, 0, 360, (140, 50, 60), -1)


def synth_talking_frames(seconds: float, width: int, height: int, bg: tuple, mouth: np.ndarray | None,
                         seed: int = 0, face: bool = True):
    """A character on a textured background, swaying a little; its mouth follows ``mouth``."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 40, size=(height, width, 1)).astype(np.int16)
    base = np.clip(np.array(bg, np.int16)[None, None] + tex, 0, 255).astype(np.uint8)
    for k in range(int(seconds * FPS)):
        f = base.copy()
        if face:
            cx = width // 2 + int(12 * math.sin(2 * math.pi * k / 60))
            cy = int(height * 0.45) + int(4 * math.sin(2 * math.pi * k / 37))
            draw_character(f, cx, cy, float(mouth[k]) if mouth is not None else 0.1, scale=height / 360)
        else:
            f = np.roll(f, 3 * k, axis=1)
        yield f


def make_demo_inputs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    # a talking character, two shots with a hard cut between them: st2v material
    # shots of 8 s: the weight-free lip-sync scorer needs several seconds of speech to be sure
    speech = synth_speech(16.0, 1)
    mouth = speech_envelope(speech, FPS, int(16.0 * FPS))
    frames = list(synth_talking_frames(8.0, 480, 360, (130, 110, 90), mouth[:200], 1)) + \
        list(synth_talking_frames(8.0, 480, 360, (70, 90, 120), mouth[200:], 2))
    p = folder / "talking_two_shots.mp4"
    p.write_bytes(encode_mp4(frames, FPS, audio=speech))
    made.append(p)
    # the same character without an audio stream: t2v material (visual filters pass, no speech)
    p = folder / "character_no_audio.mp4"
    p.write_bytes(encode_mp4(synth_talking_frames(6.0, 480, 360, (100, 120, 100), None, 3), FPS))
    made.append(p)
    # no character at all: rejected by the face filter
    p = folder / "no_character.mp4"
    p.write_bytes(encode_mp4(synth_talking_frames(4.0, 320, 240, (60, 140, 60), None, 4, face=False), FPS,
                             audio=synth_speech(4.0, 5)))
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
    p.add_argument("--no-train", action="store_true",
                   help="stop after curation (skip the tiny training run and the generated mp4)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pipeline.config import load_config
    from pipeline.curate import run_curate

    root = Path(args.output)
    inputs = make_demo_inputs(root / "inputs")
    cfg = load_config(None, [], inputs=[str(p) for p in inputs], output=str(root / "shards"))
    run_curate(cfg, runner=args.runner)
    print(f"demo shards: {root / 'shards'} (st2v/, t2v/, ledger/, run.json)", file=sys.stdout)
    if args.no_train:
        return 0
    # a few steps of a tiny, clearly labelled random model on those shards, then one generation
    from training.demo import run_training_demo

    res = run_training_demo(str(root / "shards"), str(root / "training"))
    print(f"demo training: {res['steps']} steps, loss {res['losses'][0]:.3f} -> {res['losses'][-1]:.3f}; "
          f"checkpoint {res['checkpoint']}")
    print(f"demo generation: {res['generated_mp4']} ({res['generated_frames']} frames, "
          f"{res['speech_seconds']} s of speech)")
    return 0
