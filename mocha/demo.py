"""`mocha demo`: make small sample inputs offline, curate them end to end on embedded defaults,
and say where the shards are. No third-party media: every input is synthesised here."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common.media import VIDEO_FPS, encode_mp4
from common.synth import speech_envelope, synth_speech, synth_talking_frames


def make_demo_inputs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    # a talking character, two shots with a hard cut between them: st2v material
    # shots of 8 s: the weight-free lip-sync scorer needs several seconds of speech to be sure
    speech = synth_speech(16.0, 1)
    mouth = speech_envelope(speech, VIDEO_FPS, int(16.0 * VIDEO_FPS))
    frames = list(synth_talking_frames(8.0, 480, 360, (130, 110, 90), mouth[:200], 1)) + \
        list(synth_talking_frames(8.0, 480, 360, (70, 90, 120), mouth[200:], 2))
    p = folder / "talking_two_shots.mp4"
    p.write_bytes(encode_mp4(frames, VIDEO_FPS, audio=speech))
    made.append(p)
    # the same character without an audio stream: t2v material (visual filters pass, no speech)
    p = folder / "character_no_audio.mp4"
    p.write_bytes(encode_mp4(synth_talking_frames(6.0, 480, 360, (100, 120, 100), None, 3), VIDEO_FPS))
    made.append(p)
    # no character at all: rejected by the face filter
    p = folder / "no_character.mp4"
    p.write_bytes(encode_mp4(synth_talking_frames(4.0, 320, 240, (60, 140, 60), None, 4, face=False), VIDEO_FPS,
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
    from pipeline.engine.config import load_config
    from pipeline.engine.curate import run_curate

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
