"""Throughput of the OpenAI-compatible LLM backend (httpx) against a local stub server with a
fixed 200 ms latency, at concurrency 1, 8 and 32 (requests per second and share of the ideal
concurrency / latency); then the same load against a server that rate-limits a quarter of requests
with 429 + ``Retry-After`` at random (every clip still answered; the wall time the waits add).
Run: .venv/bin/python benchmarks/bench_llm.py [--latency 0.2] [--rounds 4] [--retry-after 0.5]

Each request carries the real payload of the character filter (prompt, JSON Schema and
keyframes as JPEG data URLs), so the figure includes client-side encoding and HTTP overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import random
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
    ap.add_argument("--retry-after", type=float, default=0.5, help="seconds the rate-limited answers ask to wait")
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

    c = max(args.concurrency)
    n = max(8, args.rounds * c)
    print(f"\nrate-limited server: a random quarter of requests answered 429, Retry-After {args.retry_after:g} s "
          f"(concurrency {c}, {n} clips, retries 5)")
    coin = random.Random(0)
    with StubChatServer(reply=VERDICT, delay_s=args.latency, status=lambda i: 429 if coin.random() < 0.25 else 200,
                        headers={"Retry-After": f"{args.retry_after:g}"}) as srv:
        cfg = LLMConfig(backend="openai", endpoint=srv.url, model="stub-vlm", concurrency=c, retries=5,
                        timeout_s=30.0, backoff_s=0.05)
        be = OpenAICompatBackend(cfg, CharacterFilterConfig(), CaptionConfig())
        be.setup()
        t0 = time.perf_counter()
        results = be.ask(queries(n))
        dt = time.perf_counter() - t0
        be.close()
        ok = sum(not isinstance(r, Exception) for r in results)
        print(f"answered {ok}/{n}, requests sent {srv.requests} ({srv.requests - n} retries), {dt:.2f} s "
              f"(without limits ~{n / c * args.latency:.2f} s)")


if __name__ == "__main__":
    main()
