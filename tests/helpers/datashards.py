"""Synthetic curated shards for the data-loader tests: real (tiny) H.264 clips, written with
the project's clip schema, one solid colour per clip so tests can tell frames apart."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from common.media import encode_audio, encode_mp4
from schemas.rows import clip_schema
from tests.helpers.tables import rows_to_table

DIM = 8


def colour_clip(value: int, n: int = 12, w: int = 32, h: int = 32, fps: float = 25.0, step: int = 1) -> bytes:
    """A clip whose frame i has grey level value + step*i (so order and source index are visible)."""
    frames = [np.full((h, w, 3), min(255, value + step * i), np.uint8) for i in range(n)]
    return encode_mp4(frames, fps, crf=0, preset="ultrafast")


def make_row(clip_id: str, track: str, shot: str, video: bytes, n: int = 12, w: int = 32, h: int = 32,
             emb_value: Optional[float] = None, fps: float = 25.0, **extra) -> dict:
    row = {
        "clip_id": clip_id, "source_uri": f"synthetic://{clip_id}",
        "source_sha256": hashlib.sha256(clip_id.encode()).hexdigest(),
        "start_s": 0.0, "end_s": n / fps, "start_frame": 0, "end_frame": n, "fps": fps, "width": w, "height": h,
        "track": track, "shot_size": shot, "prompt": f"prompt of {clip_id}", "video": video,
        "backends": "{}", "num_frames": n,
    }
    if track == "st2v":
        v = 0.0 if emb_value is None else emb_value
        # per-frame value v + i/100 so alignment is checkable
        row["audio_emb"] = [[v + i / 100.0] * DIM for i in range(n)]
        row["audio"] = encode_audio(np.zeros(int(n / fps * 16000), np.float32))
    row.update(extra)
    return row


def write_shards(root: Path, rows: list[dict], per_file: int = 40, row_group: int = 10, dim: int = DIM) -> list[Path]:
    """Rows into ROOT/<track>/part-XXXX.parquet, as `mocha curate` lays them out."""
    out = []
    schema = clip_schema(dim)
    for track in ("st2v", "t2v"):
        mine = [r for r in rows if r["track"] == track]
        d = Path(root) / track
        d.mkdir(parents=True, exist_ok=True)
        for k in range(0, len(mine), per_file):
            p = d / f"part-{k // per_file:04d}.parquet"
            pq.write_table(rows_to_table(mine[k:k + per_file], schema), p, row_group_size=row_group)
            out.append(p)
    return out


def mixed_rows(counts: dict[tuple[str, str], int], video: bytes, n: int = 12) -> list[dict]:
    rows = []
    for (track, shot), k in counts.items():
        for i in range(k):
            rows.append(make_row(f"{track}-{shot}-{i:05d}", track, shot, video, n=n))
    return rows
