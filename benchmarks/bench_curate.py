"""Curation figures on the real clips (../shared/data/real), printed, never asserted.

1. throughput: seconds of input video per wall second of `mocha curate` (Ray, embedded
   defaults) and the ratio to a plain PyAV decode of the same files;
2. scene split alone vs the `scenedetect` command line (same detector, AdaptiveDetector
   defaults): wall-time ratio and whether the cuts are identical;
3. peak memory (max RSS) of one worker process running every stage on the longest input.

usage: .venv/bin/python benchmarks/bench_curate.py [--real DIR] [--skip-curate]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plain_decode_s(files: list[Path]) -> float:
    from bench_long_source import plain_decode_s as one

    return sum(one(f) for f in files)


def curate_s(files: list[Path], out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mocha.cli", "curate", *map(str, files), "--output", str(out), "--no-progress"],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    return time.perf_counter() - t


def cli_cuts(f: Path, tmp: Path) -> tuple[list[int], float]:
    exe = Path(sys.executable).with_name("scenedetect")
    t = time.perf_counter()
    subprocess.run([str(exe), "-q", "-i", str(f), "-b", "pyav", "-o", str(tmp), "detect-adaptive", "list-scenes", "-s",
                    "-f", "scenes.csv"], check=True, capture_output=True)
    dt = time.perf_counter() - t
    with open(tmp / "scenes.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [int(r["Start Frame"]) - 1 for r in rows[1:]], dt  # CSV frames are 1-based


def worker_peak_rss_mb(f: Path) -> float:
    code = f"""
import resource, sys
sys.path.insert(0, {str(ROOT)!r})
from pipeline.engine.config import load_config
from pipeline.engine.runners import iter_local
cfg = load_config(None, [], inputs=[{str(f)!r}], output="unused")
for rec in iter_local([{{"source_uri": {str(f)!r}}}], cfg, 768):
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real"))
    ap.add_argument("--skip-curate", action="store_true")
    args = ap.parse_args()
    real = Path(args.real)
    if not real.is_dir():
        print(f"real data not found at {real}; nothing to measure")
        return
    from common import media
    from pipeline.source.scenes import ScenesConfig, detect_scenes

    files = sorted(real.glob("*.mp4"))
    total_s = sum(media.probe(str(f)).duration_s for f in files)
    print(f"inputs: {len(files)} videos, {total_s:.1f} s of video, {os.cpu_count()} cores")
    dec = plain_decode_s(files)
    print(f"plain PyAV decode (video + audio): {dec:.1f} s wall = {total_s / dec:.2f} s of input per wall second")
    if not args.skip_curate:
        with tempfile.TemporaryDirectory() as d:
            wall = curate_s(files, Path(d) / "out")
            run = json.loads((Path(d) / "out" / "run.json").read_text())
        print(f"mocha curate (Ray, embedded defaults, incl. Ray start): {wall:.1f} s wall = "
              f"{total_s / wall:.3f} s of input per wall second; {wall / dec:.1f}x the plain decode; "
              f"clips {run['counts']['clips']}, status {run['counts']['status']}")
    ours = cli = 0.0
    same = True
    for f in files:
        t = time.perf_counter()
        scenes = detect_scenes(str(f), ScenesConfig()).scenes
        ours += time.perf_counter() - t
        with tempfile.TemporaryDirectory() as d:
            cuts, dt = cli_cuts(f, Path(d))
        cli += dt
        mine = [s.start_frame for s in scenes[1:]]
        same &= mine == cuts
        if mine != cuts:
            print(f"  cuts differ on {f.name}: ours {mine} cli {cuts}")
    print(f"scene split (AdaptiveDetector): ours {ours:.1f} s, scenedetect CLI {cli:.1f} s (incl. process start), "
          f"ratio ours/cli {ours / cli:.2f}; cuts identical on all files: {same}")
    longest = max(files, key=lambda f: media.probe(str(f)).duration_s)
    print(f"peak RSS of one worker running every stage on the longest input ({longest.name}): "
          f"{worker_peak_rss_mb(longest):.0f} MiB")


if __name__ == "__main__":
    main()
