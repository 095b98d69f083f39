"""Long sources: wall time against a plain decode, the split/cut worker's peak memory by source
length, and the time share of each step, on synthetic "episodes" made of the real clips (talking
close-up and medium shots, nature, music) rescaled to 640x360 at 25 fps with AAC audio, cut hard.

    .venv/bin/python benchmarks/bench_long_source.py [--minutes 10 30 60] [--episode-minutes 20]
        [--real ../shared/data/real] [--cache /tmp/mocha_episodes] [--weights ../shared/data/weights]

--weights adds the production-like models found there (YuNet faces, LR-ASD speakers) to the
embedded defaults, for the same figures with the learned models' cost in them.

Prints, never asserts. Episodes are cached (building a 60-minute one takes minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.tree_memory import split_worker_peak

CLIPS = ["closeup_talk_hdtf_katiehill.mp4", "cuts_nature_noperson_noaudio.mp4", "medium_talk_latentsync_demo2.mp4",
         "face_music_only_lp_d14.mp4", "medium_talk_latentsync_demo1.mp4", "medium_person_music_only_lp_s18.mp4"]


def build_episode(real: Path, minutes: float, path: Path) -> Path:
    """Real clips at 640x360 (letterboxed), concatenated with hard cuts until ``minutes``."""
    import av

    from common import media

    if path.exists():
        return path
    parts = []
    for name in CLIPS:
        f = real / name
        frames, times = media.decode_video(str(f))
        idx = media.resample_times(times, 0.0, float(times[-1]) + 1 / 25, 25.0)
        pcm = media.decode_audio(str(f))
        pcm = np.zeros(int(len(idx) / 25 * 16000), np.float32) if pcm is None else pcm
        parts.append((frames, idx, pcm))
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(tmp), "w") as c:
        v = c.add_stream("libx264", rate=Fraction(25))
        v.width, v.height, v.pix_fmt = 640, 360, "yuv420p"
        v.options = {"preset": "veryfast", "crf": "23", "x264-params": "log-level=error"}
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        n, t_audio, k = 0, 0, 0
        while n < minutes * 60 * 25:
            frames, idx, pcm = parts[k % len(parts)]
            k += 1
            for i in idx:
                img = _fit(frames[i])
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = n
                n += 1
                for pkt in v.encode(f):
                    c.mux(pkt)
            seg = pcm[: int(len(idx) / 25 * 16000)]
            for j in range(0, len(seg), 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(seg[None, j:j + 1024]), format="flt", layout="mono")
                af.sample_rate, af.pts = 16000, t_audio
                t_audio += af.samples
                for pkt in a.encode(af):
                    c.mux(pkt)
        for s in (v, a):
            for pkt in s.encode(None):
                c.mux(pkt)
    tmp.rename(path)
    return path


def _fit(img: np.ndarray) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = min(640 / w, 360 / h)
    small = cv2.resize(img, (max(2, int(w * s)) // 2 * 2, max(2, int(h * s)) // 2 * 2))
    out = np.zeros((360, 640, 3), np.uint8)
    y, x = (360 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def plain_decode_s(path: Path) -> float:
    """Seconds of a plain PyAV decode of ``path``'s pictures (to RGB) and sound: the yardstick
    of the speed figures, with FFmpeg's own threading (its fastest on an idle machine)."""
    from common import media

    t = time.perf_counter()
    for _ in media.iter_frames(str(path), threads=0):
        pass
    media.decode_audio(str(path))
    return time.perf_counter() - t


def weight_overrides(weights: Optional[Path]) -> list[str]:
    """--set overrides that use the detector and active-speaker weights in ``weights``."""
    if weights is None:
        return []
    return [f"visual.faces.yunet_onnx={weights / 'face_detection_yunet_2023mar.onnx'}",
            f"speakers.checkpoint={weights / 'lr_asd_pretrain_AVA.model'}"]


def curate_s(inputs: list[str], extra: list[str] = ()) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mocha", "curate", *inputs, "--output", f"{d}/out", "--no-progress", *extra],
                       cwd=ROOT, check=True, capture_output=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        wall = time.perf_counter() - t
        return wall, json.loads(Path(f"{d}/out/run.json").read_text())


def step_shares(paths: list[Path], overrides: list[str] = ()) -> dict[str, float]:
    """Seconds per step over ``paths``, in this process (the local runner's steps, timed; the
    visual stage's parts timed inside it, so they are also in its total)."""
    from pipeline.engine.config import load_config
    from pipeline.engine.plan import build_stages, stage_plan
    from pipeline.finalize.finish import finish_rows
    from pipeline.source import split
    from pipeline.stages.visual import speakers
    from pipeline.stages.visual import stage as visual

    cfg = load_config(None, ["ingest.sandbox.enabled=false", *overrides])  # the steps themselves, no child start-up
    times: dict[str, float] = {}

    def timed(name, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        return out

    def wrap(owner, attr, name):
        fn = getattr(owner, attr)
        setattr(owner, attr, lambda *a, **k: timed(name, lambda: fn(*a, **k)))

    wrap(visual.VisualStage, "decode", "  visual: decode")
    wrap(visual, "detect_sampled", "  visual: face detection")
    wrap(visual, "analyse_motion", "  visual: motion")
    wrap(visual.SyncScorer, "score", "  visual: lip-sync")
    wrap(speakers, "decode_crops", "  speakers: decode crops")
    wrap(speakers.SpeakerScorer, "scores", "  speakers: LR-ASD")
    ops = [(name, build_stages(stages, cfg), res) for name, stages, res in stage_plan(cfg)]
    for path in paths:
        plan = split.plan_source({"source_uri": str(path)}, cfg)
        while True:
            seg = timed("plan (probe, scene scan, audio)", next, plan, None)
            if seg is None:
                break
            seg = timed("cut (decode + encode)", split.cut_segment, seg, cfg)
            for name, stages, res in ops:
                for st in stages:
                    rows = seg.rows
                    for i in range(0, len(rows), res.batch_size):
                        timed(f"stage {st.name}", st.run, rows[i:i + res.batch_size])
            timed("finalize (route, encode audio, group)", finish_rows, seg.rows, cfg)
    return times


def print_shares(times: dict[str, float], paths: list[Path]) -> None:
    """The shares, and the total as a multiple of a plain decode of ``paths`` (timed next to it)."""
    dec = sum(plain_decode_s(p) for p in paths)
    total = sum(v for k, v in times.items() if not k.startswith(" "))
    for k, v in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {k:42s} {v:8.1f} s  {100 * v / total:5.1f} %  {v / dec:5.2f}x decode")
    print(f"  {'total':42s} {total:8.1f} s          {total / dec:5.2f}x a plain decode ({dec:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real"))
    ap.add_argument("--minutes", type=float, nargs="*", default=[10, 30, 60])
    ap.add_argument("--episode-minutes", type=float, default=20)
    ap.add_argument("--cache", default="/tmp/mocha_episodes")
    ap.add_argument("--skip-curate", action="store_true")
    ap.add_argument("--only-shares", action="store_true", help="only the time shares per step")
    ap.add_argument("--weights", default=None, help="a folder with the YuNet and LR-ASD weights to use")
    a = ap.parse_args()
    weights = Path(a.weights) if a.weights else None
    overrides = weight_overrides(weights)
    extra = [x for o in overrides for x in ("--set", o)]
    real = Path(a.real)
    if not real.is_dir():
        print(f"real data not found at {real}; nothing to measure")
        return
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores; " + (f"embedded defaults with YuNet and LR-ASD from {weights}" if weights else "embedded defaults"))

    print("\n== split/cut worker peak memory by source length (plan + cut of every segment; the worker and its sandbox children)")
    for m in [] if a.only_shares else a.minutes:
        ep = build_episode(real, m, cache / f"episode_{m:g}min.mp4")
        segs, rows, secs, mb = split_worker_peak(ep)
        print(f"{m:5g} min: {segs:4d} segments, {rows:5d} rows, {secs:7.1f} s, peak RSS {mb} MiB")

    if not (a.skip_curate or a.only_shares):
        print("\n== mocha curate wall time against a plain PyAV decode of the same files (same run)")
        # the decode is timed before and after the curation and averaged: a shared machine's
        # speed drifts over minutes, and both sides of the ratio should see the same drift
        files = [Path(f) for f in sorted(real.glob("*.mp4"))]
        dec_before = sum(plain_decode_s(f) for f in files)
        wall, run = curate_s([str(f) for f in files], extra)
        dec = (dec_before + sum(plain_decode_s(f) for f in files)) / 2
        print(f"real clips: decode {dec:.1f} s, curate {wall:.1f} s (incl. Ray start) = {wall / dec:.1f}x; "
              f"{run['counts']['clips']} clips, status {run['counts']['status']}, timings {run['timings']}")
        ep = build_episode(real, a.episode_minutes, cache / f"episode_{a.episode_minutes:g}min.mp4")
        dec_before = plain_decode_s(ep)
        wall, run = curate_s([str(ep)], extra)
        dec = (dec_before + plain_decode_s(ep)) / 2
        print(f"{a.episode_minutes:g}-min episode: decode {dec:.1f} s, curate {wall:.1f} s = {wall / dec:.1f}x; "
              f"{run['counts']['clips']} clips, status {run['counts']['status']}, timings {run['timings']}")

    print("\n== time share per step (in-process): the real clips")
    clips = sorted(real.glob("*.mp4"))
    print_shares(step_shares(clips, overrides), clips)
    print("\n== time share per step (in-process): one 10-minute episode")
    ep = [build_episode(real, 10, cache / "episode_10min.mp4")]
    print_shares(step_shares(ep, overrides), ep)
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)")


if __name__ == "__main__":
    main()
