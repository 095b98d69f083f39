"""Cluster-scale figures on this machine: the driver's peak RSS and the bytes it received for N
and 10N input clips (flat: workers write the shards, the driver gets commit records only), clips
per second on one node against a local two-node Ray cluster, and Ray Data's per-operator stats.

    .venv/bin/python benchmarks/bench_cluster.py [--n 6] [--seconds 4]

Prints, never asserts. Inputs are synthetic talking and silent characters (common.synth).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FPS = 25


def make_inputs(folder: Path, n: int, seconds: float) -> list[str]:
    from common.media import encode_mp4
    from common.synth import speech_envelope, synth_speech, synth_talking_frames

    folder.mkdir(parents=True, exist_ok=True)
    speech = synth_speech(seconds, 1)
    mouth = speech_envelope(speech, FPS, int(seconds * FPS))
    out = []
    for k in range(n):
        p = folder / f"clip{k:04d}.mp4"
        if not p.exists():
            talk = k % 2 == 0
            p.write_bytes(encode_mp4(synth_talking_frames(seconds, 240, 180, (40 + (7 * k) % 150, 110, 90),
                                                         mouth if talk else None, k), FPS, audio=speech if talk else None))
        out.append(str(p))
    return out


def curate(inputs: list[str], out: Path, extra: list[str] = ()) -> tuple[float, int, dict]:
    """Wall seconds, the driver process's peak RSS (MiB, polled), run.json."""
    import psutil

    cmd = [sys.executable, "-m", "mocha", "curate", *inputs, "--output", str(out), "--no-progress", *extra]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    peak, me = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, me.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    err = proc.stderr.read()
    if proc.returncode:
        raise RuntimeError(err[-3000:])
    return time.perf_counter() - t, peak // 2**20, json.loads((out / "run.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--cache", default="/tmp/mocha_cluster_inputs")
    a = ap.parse_args()
    print(f"{os.cpu_count()} cores; inputs: synthetic {a.seconds:g} s clips, 240x180")
    with tempfile.TemporaryDirectory() as d:
        print("\n== driver memory and bytes received, embedded Ray")
        rows = {}
        for n in (a.n, 10 * a.n):
            inputs = make_inputs(Path(a.cache), n, a.seconds)
            wall, peak, run = curate(inputs, Path(d) / f"out{n}")
            ex = run["execution"]
            rows[n] = (wall, run["counts"]["clips"])
            print(f"N={n:4d} inputs, {run['counts']['clips']:4d} clips: driver peak RSS {peak} MiB, "
                  f"received {ex['driver_bytes_received'] / 1024:.1f} KiB "
                  f"({ex['driver_bytes_received'] / max(1, run['counts']['clips']):.0f} B per clip), wall {wall:.1f} s")
        last = run["execution"]["ray_data"]
        print("\n== Ray Data per-operator stats (10N run)\n" + "\n".join(
            ln for ln in last.splitlines() if ln.startswith(("Operator", "*", "Dataset")) or "wall time" in ln)[:6000])

        print("\n== one node against a local two-node cluster (same machine: the cores are the limit)")
        from ray.cluster_utils import Cluster

        inputs = make_inputs(Path(a.cache), 2 * a.n, a.seconds)
        wall1, _, run1 = curate(inputs, Path(d) / "one")
        c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 3, "node_ip_address": "127.0.0.1"})
        c.add_node(num_cpus=3, node_ip_address="127.0.0.1")
        c.wait_for_nodes()
        try:
            wall2, _, run2 = curate(inputs, Path(d) / "two", ["--ray-address", c.address])
        finally:
            c.shutdown()
        for label, wall, run in (("embedded, one node", wall1, run1), ("two nodes", wall2, run2)):
            clips = run["counts"]["clips"]
            print(f"{label:20s}: {clips} clips in {wall:.1f} s = {clips / wall:.2f} clips/s")


if __name__ == "__main__":
    main()
