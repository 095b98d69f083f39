"""Throughput of the OpenAI-compatible LLM backend against a local stub server with a fixed
200 ms latency, at concurrency 1, 8 and 32 (requests per second and share of the ideal
concurrency / latency). Run: .venv/bin/python benchmarks/bench_llm.py [--latency 0.2] [--rounds 4]

Each request carries the real payload of the character filter (prompt, JSON Schema and
keyframes as JPEG data URLs), so the figure includes client-side encoding and HTTP overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pipeline.stages.language.backends.base import build_query  # noqa: E402
from pipeline.stages.language.backends.openai_compat import OpenAICompatBackend  # noqa: E402
from pipeline.stages.language.config import CaptionConfig, CharacterFilterConfig, LLMConfig  # noqa: E402
from tests.helpers.stub_llm_server import StubChatServer  # noqa: E402

VERDICT = json.dumps({"has_prominent_character": True, "num_characters": 1, "central_character": "Person1",
                      "reason": "one person talks to the camera"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=4, help="requests per run = rounds x concurrency (min 8)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--keyframes", type=int, default=4)
    args = ap.parse_args()
    os.environ.pop("OPENAI_API_KEY", None)

    # Smooth gradients plus sensor-like noise: JPEG sizes like real frames (pure noise would be 3x larger).
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:252, 0:448]
    base = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.float32)
    frames = [np.clip(base + k * 17 + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8) for k in range(args.keyframes)]
    row = {"clip_id": "bench", "start_s": 0.0, "end_s": 5.0, "width": 448, "height": 252, "has_audio": True,
           "speech_ratio": 0.9, "faces": json.dumps([{"track_id": 0, "coverage": 1.0, "height_ratio": 0.4,
                                                       "center": [0.5, 0.4]}]), "shot_size": "close_up"}

    def queries(n):  # one query per clip: each pays its own JPEG encoding, as in a real run
        return [build_query("character", row, frames) for _ in range(n)]

    print(f"stub latency {args.latency * 1000:.0f} ms, {args.keyframes} keyframes of 448x252 per request")
    print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>8} {'ideal':>8} {'of ideal':>8}")
    with StubChatServer(reply=VERDICT, delay_s=args.latency) as srv:
        for c in args.concurrency:
            cfg = LLMConfig(backend="openai", endpoint=srv.url, model="stub-vlm", concurrency=c, retries=0,
                            timeout_s=30.0)
            be = OpenAICompatBackend(cfg, CharacterFilterConfig(), CaptionConfig())
            be.setup()
            be.ask(queries(c))  # warm the connection pool
            n = max(8, args.rounds * c)
            qs = queries(n)
            t0 = time.perf_counter()
            results = be.ask(qs)
            dt = time.perf_counter() - t0
            be.close()
            bad = sum(isinstance(r, Exception) for r in results)
            rps, ideal = n / dt, c / args.latency
            print(f"{c:>11} {n:>8} {dt:>8.2f} {rps:>8.1f} {ideal:>8.1f} {rps / ideal:>8.0%}"
                  + (f"  ({bad} failed)" if bad else ""))
        print(f"max requests in flight at the server: {srv.max_in_flight}")


if __name__ == "__main__":
    main()
