"""Batched vs one-at-a-time model inference on this machine's CPU, and faces at a sampled rate.

Prints:
- Wav2Vec2 (tiny and base-size random configs, built in-process: throughput does not depend on
  the weights) embedding clips of mixed lengths (padded + masked batches) and of one length
  (no padding), at batch 1 / 8 / 32: clips per second and seconds of audio per second;
- face detectors (YuNet and SCRFD from ../shared/data/weights on onnxruntime, OpenCV's Haar
  cascade) on real frames at the visual stage's analysis size, at batch 1 / 8 / 32: frames/s;
- the visual stage on the real clips with per-frame detection vs detection at
  ``visual.faces.detect_fps`` (5 fps by default): stage seconds, detector calls and seconds,
  and whether shot sizes, face counts and sync results agree.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_batching.py [--quick] [--skip-stage]``.
Throughput is given as items per CPU-second of this process (all its threads) as well as per
wall second: on a shared machine the wall figure moves with the neighbours' load, the CPU
figure much less. ``--threads`` sets torch's threads, which the onnx detectors follow too
(as in a stage worker); with 1 thread the figures do not depend on how busy the other core
is. Each row is the best of two runs.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOCHA_SHARED_DIR", ROOT.parent / "shared"))
REAL, WEIGHTS = SHARED / "data" / "real", SHARED / "data" / "weights"
BATCHES = (1, 8, 32)
STAGE_CLIPS = ["closeup_talk_hdtf_katiehill.mp4", "medium_talk_latentsync_demo1.mp4",
               "medium_talk_latentsync_demo2.mp4", "face_music_only_lp_d14.mp4",
               "medium_person_music_only_lp_s18.mp4", "cuts_nature_noperson_noaudio.mp4"]


def _timed(fn, repeat: int = 2) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds of this process) of ``repeat`` runs."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def bench_wav2vec2(quick: bool) -> None:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from model.wav2vec2 import embed_audio_batch

    configs = {
        "tiny": Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
        "base-size": Wav2Vec2Config(),  # wav2vec2-base-960h's architecture, random weights
    }
    fe = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=False)
    rng = np.random.default_rng(0)
    n = 16 if quick else 32
    lengths = {"mixed 1-4 s": rng.uniform(1.0, 4.0, n), "all 2.5 s": np.full(n, 2.5)}
    print("\n== Wav2Vec2 embedding on CPU (torch threads: %d) ==" % torch.get_num_threads())
    print(f"{'model':10s} {'clip lengths':13s} {'batch':>5s} {'clips/cpu-s':>11s} {'audio s/cpu-s':>13s} "
          f"{'vs batch 1':>10s} {'clips/wall-s':>12s}")
    for name, cfg in configs.items():
        torch.manual_seed(0)
        net = Wav2Vec2Model(cfg).eval()
        for label, secs in lengths.items():
            clips = [(0.1 * rng.standard_normal(int(s * 16000)).astype(np.float32), 25.0, int(s * 25)) for s in secs]
            embed_audio_batch(net, fe, clips[:2], batch_size=2)  # warm-up
            base = None
            for b in BATCHES:
                wall, cpu = _timed(lambda: embed_audio_batch(net, fe, clips, batch_size=b))
                base = base or cpu
                print(f"{name:10s} {label:13s} {b:5d} {len(clips) / cpu:11.2f} {secs.sum() / cpu:13.1f} "
                      f"{base / cpu:9.2f}x {len(clips) / wall:12.2f}")


def _frames(name: str, seconds: float):
    from common import media

    info = media.probe(str(REAL / name))
    w, h = media.fit_size(info.width, info.height, 640)
    frames, _ = media.decode_video(str(REAL / name), width=w, height=h, max_frames=int(seconds * 25))
    return frames


def bench_detectors(quick: bool) -> None:
    from pipeline.stages.visual.faces import FacesConfig, make_detector

    frames = _frames("medium_talk_latentsync_demo2.mp4", 1.3 if quick else 2.6)  # 640x360 portrait
    print(f"\n== face detectors on CPU, {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} ==")
    print(f"{'detector':14s} {'batch':>5s} {'frames/cpu-s':>12s} {'vs batch 1':>10s} {'frames/wall-s':>13s}")
    for backend in ("yunet", "scrfd", "haar"):
        path = {"yunet": "face_detection_yunet_2023mar.onnx", "scrfd": "scrfd_500m_bnkps.onnx"}.get(backend)
        if path and not (WEIGHTS / path).is_file():
            print(f"{backend:14s} skipped: {WEIGHTS / path} not found")
            continue
        cfg = FacesConfig(backend=backend, yunet_onnx=str(WEIGHTS / "face_detection_yunet_2023mar.onnx"),
                          scrfd_onnx=str(WEIGHTS / "scrfd_500m_bnkps.onnx"))
        det = make_detector(cfg)
        det.detect_batch(frames[:2])  # warm-up (session, shapes)
        base = None
        for b in BATCHES:
            def run():
                for i in range(0, len(frames), b):
                    det.detect_batch(frames[i:i + b])
            wall, cpu = _timed(run)
            base = base or cpu
            print(f"{det.name:14s} {b:5d} {len(frames) / cpu:12.1f} {base / cpu:9.2f}x {len(frames) / wall:13.1f}")


class _Counting:
    """Wraps a detector to count the frames it is asked about and the time it takes."""

    def __init__(self, det):
        self.det, self.batch_size, self.name = det, det.batch_size, det.name
        self.frames, self.cpu = 0, 0.0

    def detect_batch(self, frames):
        c = time.process_time()
        out = self.det.detect_batch(frames)
        self.cpu += time.process_time() - c
        self.frames += len(frames)
        return out

    def info(self):
        return self.det.info()


def bench_stage(quick: bool, backends: list[str]) -> None:
    from pipeline.stages.visual.faces import FacesConfig
    from pipeline.stages.visual.stage import VisualConfig, VisualStage
    from tests.helpers.visual_clips import frames_25, make_row, pcm_for

    seconds = 4.0 if quick else 8.0
    clips = {}
    for name in STAGE_CLIPS:
        fr = frames_25(str(REAL / name), seconds)
        try:
            pcm = pcm_for(str(REAL / name), len(fr))
        except Exception:  # no audio stream
            pcm = None
        clips[name] = (fr, pcm)
    total = sum(len(f) for f, _ in clips.values())
    print(f"\n== visual stage on {len(clips)} real clips ({total} frames, {seconds:.0f} s each) ==")
    print(f"{'detector':14s} {'detection':16s} {'stage cpu-s':>11s} {'stage wall-s':>12s} {'det frames':>10s} "
          f"{'det cpu-s':>9s} {'same results':>12s}")
    for backend in backends:
        ref = None
        for label, kw in (("every frame", dict(detect_fps=None, detect_every=1)),
                          ("5 fps + refine", dict(detect_fps=5.0))):
            fc = FacesConfig(backend=backend, yunet_onnx=str(WEIGHTS / "face_detection_yunet_2023mar.onnx"),
                             scrfd_onnx=str(WEIGHTS / "scrfd_500m_bnkps.onnx"), **kw)
            st = VisualStage(VisualConfig(faces=fc))
            st.setup()
            st._ready = True
            st.detector = _Counting(st.detector)
            results = []
            t, c = time.perf_counter(), time.process_time()
            for fr, pcm in clips.values():
                row = make_row(fr, None if pcm is None else pcm.copy())
                st.run([row])
                results.append((row["shot_size"], row["num_faces"], row["reject_stage"], row["st2v_block"] is None,
                                row["sync_offset"] if row["st2v_block"] is None else None))
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            same = "reference" if ref is None else ("yes" if results == ref else "NO")
            ref = ref or results
            print(f"{st.detector.name:14s} {label:16s} {cpu:11.1f} {wall:12.1f} {st.detector.frames:10d} "
                  f"{st.detector.cpu:9.1f} {same:>12s}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer clips and frames")
    ap.add_argument("--skip-stage", action="store_true", help="only the model throughput tables")
    ap.add_argument("--stage-backends", default="haar,yunet")
    ap.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads (a stage worker's budget)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    bench_wav2vec2(args.quick)
    if (REAL / "MANIFEST.md").is_file():
        bench_detectors(args.quick)
        if not args.skip_stage:
            bench_stage(args.quick, args.stage_backends.split(","))
    else:
        print(f"\nreal clips not found at {REAL}: detector and stage figures skipped")


if __name__ == "__main__":
    main()
