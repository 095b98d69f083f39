"""Figures for the speakers stage (LR-ASD) on the real clips (../shared/data/real, ../shared/data/weights).

Prints:
1. frames per second of the speaking scores on the CPU: the network alone (published windowed
   evaluation of one 8 s track) window by window (batch 1), batched, and batched with the shared
   encoder passes; and the whole stage (decode + crops + network + timeline) for one clip per
   batch and four clips per batch;
2. per real clip and variant: VAD speech share, the share of its speech frames the face is
   speaking in, the mean score, the lip-sync confidence and offset (visual stage), the speech
   attributed to an on-screen face and the route (st2v / t2v and why);
3. the turn-boundary error on two-person conversations built from the real clips, with and
   without the refinement of speaker changes.

Run: ``.venv/bin/python benchmarks/bench_speakers.py [--threads 2] [--skip-table]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.lr_asd import load_lr_asd, windowed_scores  # noqa: E402
from pipeline.finalize.route import route  # noqa: E402
from pipeline.stages.speech import SpeechConfig, SpeechStage  # noqa: E402
from pipeline.stages.visual.faces import FacesConfig  # noqa: E402
from pipeline.stages.visual.speakers import SpeakersConfig, SpeakersStage, decode_crops, track_audio  # noqa: E402
from pipeline.stages.visual.stage import VisualConfig, VisualStage  # noqa: E402
from pipeline.stages.visual.sync import mfcc, shift_audio  # noqa: E402
from tests.helpers.speaker_clips import DEMO2, KATIE, conversation  # noqa: E402
from tests.helpers.visual_clips import frames_25, make_row, pcm_for  # noqa: E402

SHARED = Path(os.environ.get("MOCHA_SHARED_DIR", ROOT.parent / "shared"))
REAL, WEIGHTS = SHARED / "data" / "real", SHARED / "data" / "weights"
AVA = WEIGHTS / "lr_asd_pretrain_AVA.model"


def stages(**speakers_kw):
    visual = VisualStage(VisualConfig(faces=FacesConfig(yunet_onnx=str(WEIGHTS / "face_detection_yunet_2023mar.onnx"))))
    return SpeechStage(SpeechConfig()), visual, SpeakersStage(SpeakersConfig(checkpoint=str(AVA), **speakers_kw))


def curate(sts, frames, pcm) -> dict:
    row = make_row(frames, None if pcm is None else np.asarray(pcm, np.float32).copy())
    for st in sts:
        st.run([row])
    return row


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up (first conv calls pick their algorithms)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def throughput(sts) -> None:
    print("\n## 1. Speaking-score throughput on the CPU (torch threads: %d)" % torch.get_num_threads())
    frames = frames_25(str(REAL / KATIE), 8.0)
    pcm = pcm_for(str(REAL / KATIE), len(frames))
    row = curate(sts[:2], frames, pcm)  # the visual stage's track
    speakers = sts[2]
    tr = row["face_tracks"][:1]
    t = time.perf_counter()
    crops = decode_crops(row["video"], tr, len(tr[0]["boxes"]), speakers.cfg)
    t_crop = time.perf_counter() - t
    feats = [mfcc(track_audio(row["audio_pcm"], tr[0]["first"], tr[0]["last"]))]
    n = len(crops[0])
    net = load_lr_asd(AVA)
    rows = []
    for label, kw in [("window by window (batch 1), published passes", dict(max_batch_frames=1, shared_encoders=False)),
                      ("batched, published passes", dict(shared_encoders=False)),
                      ("window by window (batch 1), shared encoder passes", dict(max_batch_frames=1)),
                      ("batched, shared encoder passes (the stage)", dict())]:
        s = timed(lambda: windowed_scores(net, crops, feats, **kw))
        rows.append((label, n / s))
    print(f"network, one {n}-frame track, windows of 1-6 s averaged:")
    for label, fps in rows:
        print(f"  {label:52s} {fps:7.1f} frames/s")
    print(f"decode + crops of that track: {n / t_crop:7.1f} frames/s")
    clips = [make_row(frames, pcm.copy(), clip_id=f"c{i}") for i in range(4)]
    for c in clips:
        sts[0].run([c])
        sts[1].run([c])
    for batch in (1, 4):
        fresh = [{**c} for c in clips]
        t = time.perf_counter()
        for i in range(0, 4, batch):
            speakers.run(fresh[i:i + batch])
        s = time.perf_counter() - t
        print(f"whole stage, {batch} clip(s) per batch: {4 * n / s:7.1f} frames/s ({s / 4:.2f} s per 8 s clip)")


def table(sts) -> None:
    print("\n## 2. Per real clip and variant (AVA weights, YuNet boxes, first 8-10 s; speaking = smoothed score >= 0)")
    katie = frames_25(str(REAL / KATIE), 8.0)
    s18 = frames_25(str(REAL / "medium_person_music_only_lp_s18.mp4"), 8.0)

    def own(name, sec):
        f = frames_25(str(REAL / name), sec)
        return f, pcm_for(str(REAL / name), len(f))

    variants = {
        "katie (close-up, own speech)": own(KATIE, 8.0),
        "katie, audio 5 frames late": (katie, shift_audio(pcm_for(str(REAL / KATIE), 200), 5)),
        "katie, audio 10 frames late": (katie, shift_audio(pcm_for(str(REAL / KATIE), 200), 10)),
        "demo1 (wide, own speech)": own("medium_talk_latentsync_demo1.mp4", 10.0),
        "demo1 + another utterance": (frames_25(str(REAL / "medium_talk_latentsync_demo1.mp4"), 9.6),
                                      pcm_for(str(REAL / "speech_other_latentsync_demo1_audio.wav"), 240)),
        "demo2 (medium, own speech, 10 s)": own("medium_talk_latentsync_demo2.mp4", 10.0),
        "demo2 (medium, own speech, 20 s)": own("medium_talk_latentsync_demo2.mp4", 20.0),
        "d14 face, music only": own("face_music_only_lp_d14.mp4", 8.0),
        "d3 face, silent audio": own("face_silent_audio_lp_d3.mp4", 8.0),
        "s18 person, music only": own("medium_person_music_only_lp_s18.mp4", 8.0),
        "reaction shot: s18 + katie's speech": (s18, pcm_for(str(REAL / KATIE), len(s18))),
        "reaction shot: d3 + katie's speech": (frames_25(str(REAL / "face_silent_audio_lp_d3.mp4"), 8.0),
                                               pcm_for(str(REAL / KATIE), 200)),
        "still katie + her speech": (np.repeat(katie[60:61], 200, axis=0), pcm_for(str(REAL / KATIE), 200)),
        "d13 face, no audio stream": (frames_25(str(REAL / "face_no_audio_stream_lp_d13.mp4"), 8.0), None),
    }
    head = (f"{'clip':38s} {'speech':>6s} {'speaking':>8s} {'score':>6s} {'sync':>6s} {'off':>4s} "
            f"{'attrib':>6s}  route")
    print(head)
    print("-" * len(head))
    speakers = sts[2]
    for name, (frames, pcm) in variants.items():
        row = curate(sts, frames, pcm)
        faces = json.loads(row.get("faces") or "[]")
        face = faces[0] if faces else {}
        frac, score = face.get("speaking_frac"), face.get("asd_score")
        if frac is None and row.get("face_tracks") and pcm is not None:  # no speech: score all frames
            tr = row["face_tracks"][:1]
            crops = decode_crops(row["video"], tr, len(tr[0]["boxes"]), speakers.cfg)
            s = speakers.scorer.scores(crops, [track_audio(row["audio_pcm"], tr[0]["first"], tr[0]["last"])])[0][0]
            frac, score = float((s >= 0).mean()), float(s.mean())
            name += " *"
        status, reason = route(row) if row.get("reject_stage") is None else ("rejected", row.get("reject_reason"))
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"{name:38s} {fmt(row.get('speech_ratio'), '6.2f')} {fmt(frac, '8.2f')} {fmt(score, '6.2f')} "
              f"{fmt(row.get('sync_conf'), '6.2f')} {fmt(row.get('sync_offset'), '4d')} "
              f"{fmt(row.get('speech_attribution'), '6.2f')}  {status}{': ' + reason if reason else ''}")
    print("* no speech in the clip: speaking share over all its frames")


COMPOSITES = {
    "katie | demo2: L 0-3, R 3-5.5, L 5.5-8": (KATIE, DEMO2, [("left", 0.0, 3.0), ("right", 3.0, 5.5),
                                                             ("left", 5.5, 8.0)], {"left": 0.0, "right": 10.44}),
    "demo2 | katie: L 0-4, R 4-8": (DEMO2, KATIE, [("left", 0.0, 4.0), ("right", 4.0, 8.0)],
                                    {"left": 10.44, "right": 0.0}),
    "demo2 | katie: L 0-2.5, R 2.5-6, L 6-8": (DEMO2, KATIE, [("left", 0.0, 2.5), ("right", 2.5, 6.0),
                                                             ("left", 6.0, 8.0)], {"left": 10.44, "right": 0.0}),
    "katie | demo2: L 0-5, R 5-8": (KATIE, DEMO2, [("left", 0.0, 5.0), ("right", 5.0, 8.0)],
                                    {"left": 0.0, "right": 10.44}),
}


def boundaries(sts) -> None:
    print("\n## 3. Turn-boundary error on two-person conversations (each face speaks its own audio in its turns)")
    refine0 = SpeakersStage(sts[2].cfg.model_copy(update={"refine_s": 0.0}))
    refine0.scorer, refine0._ready = sts[2].scorer, True
    errs = {"refined": [], "not refined": []}
    for name, (left, right, turns, start) in COMPOSITES.items():
        conv = conversation(REAL, left, right, turns, start)
        base = curate(sts[:2], conv.frames, conv.pcm)
        true = [t0 for _, t0, _ in turns[1:]]
        for label, st in (("refined", sts[2]), ("not refined", refine0)):
            row = {**base, "faces": base["faces"], "st2v_block": base["st2v_block"]}
            st.run([row])
            tt = row["speaking_turns"]
            side = ["left" if t["x"] < 0.5 else "right" for t in tt]
            got = [t["start_s"] for a, t, s0, s1 in zip(tt, tt[1:], side, side[1:]) if s0 != s1]
            order_ok = [s for i, s in enumerate(side) if i == 0 or s != side[i - 1]] == [s for s, _, _ in turns]
            e = [abs(a - b) for a, b in zip(got, true)] if len(got) == len(true) else []
            errs[label] += e
            print(f"  {name:40s} {label:12s} changes at {got} (true {true}) "
                  f"{'order ok' if order_ok else 'ORDER WRONG'}, error {', '.join(f'{x:.2f}' for x in e) or '-'} s")
    for label, e in errs.items():
        if e:
            print(f"turn-boundary error, {label}: mean {np.mean(e):.3f} s, max {np.max(e):.3f} s over {len(e)} changes")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip-table", action="store_true")
    args = ap.parse_args()
    if not AVA.is_file():
        print(f"LR-ASD weights not found at {AVA}; nothing to measure")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    sts = stages()
    for st in sts:
        st.setup()
        st._ready = True
    throughput(sts)
    if not args.skip_table:
        table(sts)
    boundaries(sts)


if __name__ == "__main__":
    main()
