"""Figures for the visual stage on the real clips (../shared/data/real).

Prints: frames per second of face detection (each backend), of the sync and motion steps and of
the whole stage; decode passes per clip; sync confidence of aligned vs shifted vs mismatched vs
music-only pairs. Run: ``.venv/bin/python benchmarks/bench_visual.py [--seconds 8]``.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from common import media
from pipeline.stages.visual.faces import FacesConfig, detect_frames, make_detector
from pipeline.stages.visual.motion import analyse_motion
from pipeline.stages.visual.stage import VisualConfig, VisualStage
from pipeline.stages.visual.sync import SyncConfig, SyncScorer
from pipeline.stages.visual.tracking import character_tracks, track_faces

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOCHA_SHARED_DIR", ROOT.parent / "shared"))
REAL, WEIGHTS = SHARED / "data" / "real", SHARED / "data" / "weights"
SPF = 640  # audio samples per video frame at 25 fps / 16 kHz


def load(name: str, seconds: float, max_side: int = 640) -> np.ndarray:
    info = media.probe(str(REAL / name))
    w, h = media.fit_size(info.width, info.height, max_side)
    frames, _ = media.decode_video(str(REAL / name), width=w, height=h, max_frames=int(seconds * 25))
    return frames


def audio(name: str, n_frames: int, delay_frames: int = 0) -> np.ndarray:
    pcm = media.decode_audio(str(REAL / name))
    pcm = np.pad(pcm, (0, max(0, n_frames * SPF - len(pcm))))[: n_frames * SPF]
    if delay_frames:
        pcm = np.concatenate([np.zeros(delay_frames * SPF, np.float32), pcm[: len(pcm) - delay_frames * SPF]])
    return pcm


def faces_cfg(backend: str) -> FacesConfig:
    return FacesConfig(backend=backend, yunet_onnx=str(WEIGHTS / "face_detection_yunet_2023mar.onnx"),
                       scrfd_onnx=str(WEIGHTS / "scrfd_500m_bnkps.onnx"))


def dominant_boxes(frames: np.ndarray, fc: FacesConfig) -> np.ndarray:
    dets = detect_frames(make_detector(fc), frames, fc.detect_every, fc.min_face_px)
    tracks = track_faces(dets, fc.iou_threshold, fc.max_gap)
    chars = character_tracks(tracks, len(dets), frames.shape[2], frames.shape[1], 1, 0.0)
    return chars[0][0].boxes_per_frame(len(frames))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--face-backend", default="yunet", help="face backend for the sync figures")
    args = ap.parse_args()
    secs = args.seconds
    clip = load("closeup_talk_hdtf_katiehill.mp4", secs)
    print(f"# machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; clip {clip.shape}")

    for backend in ("haar", "yunet", "scrfd"):
        det = make_detector(faces_cfg(backend))
        t = time.perf_counter()
        for f in clip[:50]:
            det.detect(f)
        print(f"faces[{backend}]: {50 / (time.perf_counter() - t):.1f} frames/s detected "
              f"(stage detects every {FacesConfig().detect_every}nd frame)")

    t = time.perf_counter()
    analyse_motion(clip, VisualConfig().motion)
    print(f"motion[dis]: {len(clip) / (time.perf_counter() - t):.1f} frames/s")

    boxes = dominant_boxes(clip, faces_cfg(args.face_backend))
    scorer = SyncScorer(SyncConfig())
    pcm = audio("closeup_talk_hdtf_katiehill.mp4", len(clip))
    t = time.perf_counter()
    scorer.score(clip, boxes, pcm)
    print(f"sync[av-correlation]: {len(clip) / (time.perf_counter() - t):.1f} frames/s")

    # SyncNet backend speed with random weights in the published layout (the weights do not
    # change the cost); the real checkpoint is user-supplied.
    import tempfile

    import torch

    from model.syncnet import SyncNet

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "syncnet_v2.model"
        torch.save(SyncNet().state_dict(), ckpt)
        sn = SyncScorer(SyncConfig(syncnet_checkpoint=str(ckpt)))
        n = 50
        t = time.perf_counter()
        sn.score(clip[:n], boxes[:n], pcm[: n * SPF])
        print(f"sync[syncnet-v2, CPU]: {n / (time.perf_counter() - t):.1f} frames/s")

    stage = VisualStage(VisualConfig(faces=faces_cfg(args.face_backend)))
    row = {"clip_id": "bench", "video": media.encode_mp4(clip, 25), "fps": 25.0, "width": clip.shape[2],
           "height": clip.shape[1], "num_frames": len(clip), "audio_pcm": pcm, "has_audio": True,
           "st2v_block": None, "reject_stage": None, "backends": "{}"}
    t = time.perf_counter()
    stage.run([row])
    dt = time.perf_counter() - t
    print(f"visual stage[{args.face_backend}]: {len(clip) / dt:.1f} frames/s end to end; "
          f"decode passes per clip: {stage.decode_passes}")

    print(f"\n# sync separation (face backend {args.face_backend}, threshold {SyncConfig().avcorr_min_conf}); "
          "offset convention: audio delayed by k frames -> offset -k; conf = z-score vs unrelated (far-shifted, time-reversed) pairings")
    katie, demo1, demo2 = ("closeup_talk_hdtf_katiehill.mp4", "medium_talk_latentsync_demo1.mp4",
                           "medium_talk_latentsync_demo2.mp4")
    # (video, seconds, audio or None for its own, delays, kind): the clip lengths of tests/pipeline/stages/visual/test_sync.py
    cases = [
        (katie, 8.0, None, (0, 5, 10), "synced"),
        (demo1, 10.0, None, (0, 5, 10), "synced"),
        (demo2, 10.0, None, (0, 5, 10), "synced"),
        (demo2, 20.0, None, (0, 5, 10), "synced"),
        (demo1, 10.0, "speech_other_latentsync_demo1_audio.wav", (0,), "mismatched"),
        (katie, 8.0, "music_only_vibe_ace.ogg", (0,), "music"),
        ("face_music_only_lp_d14.mp4", 8.0, None, (0,), "music"),
    ]
    worst = {"synced": np.inf, "unrelated": -np.inf}
    for video, vsecs, other, delays, kind in cases:
        frames = media_to_25(video, vsecs)
        b = dominant_boxes(frames, faces_cfg(args.face_backend))
        for d in delays:
            pcm = audio(other or video, len(frames), d)
            t = time.perf_counter()
            r = scorer.score(frames, b, pcm)
            dt = time.perf_counter() - t
            label = kind if kind != "synced" else ("aligned" if d == 0 else f"audio+{d}")
            expect = f"{-d:+3d}" if kind == "synced" else "  -"
            key = "synced" if kind == "synced" else "unrelated"
            worst[key] = min(worst[key], r.conf) if key == "synced" else max(worst[key], r.conf)
            print(f"{video[:34]:34s} {vsecs:4.0f}s {(other or '')[:28]:28s} {label:10s} expect {expect} "
                  f"offset {r.offset:+3d} conf {r.conf:5.2f} dist {r.dist:.3f}  ({len(frames) / dt:.0f} frames/s)")
    # The same speaker out of step: her video rolled by 4 s against her own audio.
    frames = media_to_25(katie, 8.0)
    rolled = np.concatenate([frames[100:], frames[:100]])
    r = scorer.score(rolled, dominant_boxes(rolled, faces_cfg(args.face_backend)), audio(katie, len(frames)))
    worst["unrelated"] = max(worst["unrelated"], r.conf)
    print(f"{katie[:34]:34s}    8s {'video rolled by 4 s':28s} {'mismatched':10s} expect   - "
          f"offset {r.offset:+3d} conf {r.conf:5.2f} dist {r.dist:.3f}")
    thr = SyncConfig().avcorr_min_conf
    print(f"lowest synced conf {worst['synced']:.2f}, highest unrelated {worst['unrelated']:.2f}; "
          f"threshold {thr}: margins {worst['synced'] - thr:+.2f} / {thr - worst['unrelated']:+.2f}")


def media_to_25(name: str, secs: float) -> np.ndarray:
    info = media.probe(str(REAL / name))
    w, h = media.fit_size(info.width, info.height, 640)
    frames, times = media.decode_video(str(REAL / name), width=w, height=h)
    idx = media.resample_times(times, 0.0, min(secs, float(times[-1])), 25.0)
    return frames[idx]


if __name__ == "__main__":
    main()
