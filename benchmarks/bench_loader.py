"""Loader throughput on curated shards at the training settings (256 px buckets, 49 frames =
~2 s at 25 fps): samples/s of one worker (decoding in the main process) and of one process
with N dataloader workers, peak memory, and the training-step rate the loader can feed.

usage: python benchmarks/bench_loader.py [--shards OUT_DIR] [--epochs 3] [--workers 2]
Without --shards it runs `mocha curate` on ../shared/data/real into a temporary folder.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def curate_real(tmp: Path) -> Path:
    real = Path(os.environ.get("MOCHA_SHARED_DIR", ROOT.parent / "shared")) / "data" / "real"
    if not real.is_dir():
        sys.exit(f"no --shards given and no real data at {real}")
    out = tmp / "out"
    subprocess.run([sys.executable, "-m", "mocha.cli", "curate", str(real), "--output", str(out), "--no-progress"],
                   cwd=ROOT, check=True, capture_output=True)
    return out


def tiny_wav2vec2(tmp: Path, dim: int) -> str:
    """Only for shards curated without embeddings: random weights of the right width, so the
    figure includes the loader-side feature cost a run without stored embeddings would pay."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=dim, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
    Wav2Vec2Model(cfg).save_pretrained(tmp / "w2v")
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(tmp / "w2v")
    return str(tmp / "w2v")


def rate(index, cfg, workers: int, epochs: int) -> float:
    """Samples/s over whole epochs of every sample (both tracks), worker start-up included:
    timing a few batches after a warm-up would count batches the workers prefetched meanwhile."""
    from training.data.dataset import ShardLoader, ShardStream

    n, t0 = 0, time.perf_counter()
    for e in range(epochs):
        loader = ShardLoader(ShardStream(index, cfg, mode="epoch", epoch=e), workers, cfg.prefetch_factor)
        n += sum(len(b["clip_id"]) for b in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    a = ap.parse_args()

    import pyarrow.parquet as pq

    from schemas.rows import META_EMB_DIM
    from training.data.config import DataConfig
    from training.data.shards import build_index

    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    shards = Path(a.shards) if a.shards else curate_real(tmp)
    first = sorted(shards.glob("st2v/*.parquet"))[0]
    dim = int(pq.read_schema(first).metadata[META_EMB_DIM])
    index = build_index([str(shards)], dim)
    needs_model = any(v is None for f in shards.glob("st2v/*.parquet")
                      for v in pq.read_table(f, columns=["audio_emb"]).column("audio_emb").to_pylist()[:1])
    model = tiny_wav2vec2(tmp, dim) if needs_model else None
    # missing_prompt=empty: the figure is about decoding; shards curated before captioning
    # existed have no prompts and would otherwise (rightly) be refused
    cfg = DataConfig(roots=[str(shards)], batch_size=a.batch_size, audio_emb_dim=dim, audio_model=model,
                     missing_prompt="empty")
    res = {"shards": str(shards), "samples_in_shards": len(index.items), "num_frames": cfg.num_frames,
           "resolution": cfg.resolution, "batch_size": cfg.batch_size,
           "audio_emb": "computed in the loader (tiny random Wav2Vec2)" if model else "stored"}
    one = rate(index, cfg, 0, a.epochs)
    rss_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    many = rate(index, cfg, a.workers, a.epochs)
    rss_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    res.update({
        "samples_per_s_one_worker": round(one, 2),
        f"samples_per_s_process_{a.workers}_workers": round(many, 2),
        "batches_per_s_process": round(many / cfg.batch_size, 3),
        "peak_rss_main_MiB": round(rss_main, 1),
        "peak_rss_worker_MiB": round(rss_child, 1),
        "cpu_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # the machine may be shared
        # the loader is not the bottleneck while one training step (one batch per process) takes
        # at least this long
        "min_step_time_s_for_loader_not_to_bottleneck": round(cfg.batch_size / many, 3),
    })
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
