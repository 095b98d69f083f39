"""Hand-made output directories with the real shard schemas: for the audit's tests and its
benchmark (a dataset of any size without running the pipeline)."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from schemas.rows import SHOT_SIZES, clip_schema, ledger_schema
from tests.helpers.tables import backends_json, rows_to_table

# Shaped like the curate run's: flat stages, and a group whose members may be bare names.
BACKENDS = {"speech": {"backend": "silero-vad", "fallback": False},
            "music": {"backend": "snr-vad-gated", "fallback": True, "reason": "no demucs weights"},
            "audio_embed": {"backend": "wav2vec2", "fallback": False, "model": "facebook/wav2vec2-base-960h"},
            "clips": {"backend": "pyav", "fallback": False, "encoder": "libx264", "crf": 20},
            "visual": {"faces": {"backend": "scrfd", "fallback": False, "model": "scrfd_500m"},
                       "motion": {"backend": "opencv-dis", "fallback": False},
                       "sync": {"backend": "av-correlation", "fallback": True, "model": None}}}


def tiny_video(frames: int = 6, size: int = 32, fps: float = 25.0, seed: int = 0) -> bytes:
    """A real H.264 mp4 of a few random frames (for gallery thumbnails)."""
    from common.media import encode_mp4

    rng = np.random.default_rng(seed)
    return encode_mp4([rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(frames)], fps)


@functools.lru_cache(maxsize=64)
def _shared_emb(frames: int, dim: int, variant: int = 0) -> np.ndarray:
    """Read-only random embeddings shared between synthetic rows: realistic bytes on disk
    (random values do not compress) without one array per row in memory."""
    a = np.random.default_rng(variant).standard_normal((frames, dim)).astype(np.float16)
    a.flags.writeable = False
    return a


def caption_json(i: int, shot_size: str = "close_up") -> str:
    """A caption valid against schemas.caption (the one the audit validates with)."""
    try:
        from schemas.caption import Caption, dumps
    except ImportError:  # the caption model is not there: any JSON object passes the audit
        return json.dumps({"summary": f"person {i} talks to the camera"})
    cap = Caption.model_validate({
        "characters": [{"tag": "Person1", "appearance": f"person {i}, dark jacket", "speaking": True}],
        "environment": {"setting": "indoors"},
        "camera": {"shot_size": shot_size if shot_size != "no_face" else None},
        "summary": f"Person1 talks to the camera ({i}).",
    })
    return dumps(cap)


def clip_row(i: int, source: int = 0, track: str = "st2v", video: bytes = b"", dim: int = 8,
             span_s: float = 2.0, fps: float = 25.0, shot_size: Optional[str] = None,
             emb_frames: Optional[int] = None) -> dict:
    """Clip ``i`` of source ``source``: consecutive, non-overlapping spans of ``span_s``.
    With ``emb_frames`` the embedding is a numpy array of that many frames (benchmark sizes)."""
    sha = hashlib.sha256(f"source-{source}".encode()).hexdigest()
    start = i * span_s
    rng = np.random.default_rng(i)
    st2v = track == "st2v"
    frames = int(span_s * fps)
    shot_size = shot_size or SHOT_SIZES[i % 4]
    return {
        "clip_id": hashlib.sha256(f"{sha}:{i}".encode()).hexdigest()[:24],
        "source_uri": f"file:///data/source_{source}.mp4", "source_sha256": sha,
        "start_s": start, "end_s": start + span_s,
        "start_frame": int(round(start * fps)), "end_frame": int(round((start + span_s) * fps)),
        "fps": fps, "width": 32, "height": 32, "track": track,
        "speech_ratio": float(rng.uniform(0.5, 1.0)) if st2v else float(rng.uniform(0, 0.1)),
        "music_ratio": float(rng.uniform(0, 0.3)), "num_faces": 1,
        "shot_size": shot_size,
        "sync_offset": int(rng.integers(-3, 4)) if st2v else None,
        "sync_conf": float(rng.uniform(3, 9)) if st2v else None,
        "sync_dist": float(rng.uniform(5, 9)) if st2v else None,
        "motion_score": float(rng.uniform(0.2, 3.0)),
        "caption": caption_json(i, shot_size), "prompt": f"A person {i} talks to the camera, indoors.",
        "video": video,
        "audio": b"fLaC-fake" if st2v else None,
        "audio_emb": (None if not st2v else _shared_emb(emb_frames, dim, i % 16) if emb_frames
                      else np.zeros((2, dim), np.float16).tolist()),
        "backends": backends_json(BACKENDS),
        "num_frames": frames, "face_height_ratio": float(rng.uniform(0.1, 0.6)),
    }


def ledger_row(clip: dict, status: Optional[str] = None, **kw) -> dict:
    keys = ("source_uri", "source_sha256", "clip_id", "start_s", "end_s", "start_frame", "end_frame",
            "speech_ratio", "music_ratio", "num_faces", "shot_size", "sync_offset", "sync_conf", "sync_dist",
            "motion_score", "backends")
    row = {k: clip.get(k) for k in keys}
    row["status"] = status or clip["track"]
    if row["status"] == "t2v":
        row["route_reason"] = "no_speech"
    row.update(kw)
    return row


def _emb_column(rows: list[dict], dim: int):
    """The audio_emb column built from numpy arrays (T, dim) without Python float lists,
    which would cost ~24 bytes per value (gigabytes for a benchmark-sized dataset)."""
    import pyarrow as pa

    embs = [r.get("audio_emb") for r in rows]
    lengths = [0 if e is None else len(e) for e in embs]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    present = [np.asarray(e, np.float16).reshape(-1) for e in embs if e is not None]
    flat = np.concatenate(present) if present else np.zeros(0, np.float16)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float16()), dim)
    mask = pa.array([e is None for e in embs])
    return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=mask)


def _clip_table(rows: list[dict], dim: int):
    schema = clip_schema(dim)
    if not any(isinstance(r.get("audio_emb"), np.ndarray) for r in rows):
        return rows_to_table(rows, schema)
    t = rows_to_table([{**r, "audio_emb": None} for r in rows], schema)
    i = schema.get_field_index("audio_emb")
    return t.set_column(i, schema.field(i), _emb_column(rows, dim))


def write_output(out: Path, clips: list[dict], ledger: list[dict], dim: int = 8,
                 run: Optional[dict] = None, rows_per_shard: int = 2000) -> Path:
    """Write ``clips`` into st2v/ and t2v/ by their track, ``ledger`` into ledger/, and run.json."""
    out = Path(out)
    for track in ("st2v", "t2v"):
        rows = [c for c in clips if c["track"] == track]
        (out / track).mkdir(parents=True, exist_ok=True)
        for k in range(0, len(rows), rows_per_shard):
            pq.write_table(_clip_table(rows[k:k + rows_per_shard], dim),
                           out / track / f"part-{k // rows_per_shard:05d}.parquet")
    (out / "ledger").mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_to_table(ledger, ledger_schema()), out / "ledger" / "part-00000.parquet")
    (out / "run.json").write_text(json.dumps(run or {"versions": {"mocha": "test"}, "counts": {"clips": len(clips)}}))
    return out


def synthetic_output(out: Path, n_clips: int, video: Optional[bytes] = None, dim: int = 8,
                     reject_every: int = 4, t2v_every: int = 5, sources: int = 20,
                     emb_frames: Optional[int] = None, rows_per_shard: int = 2000) -> Path:
    """A consistent output dir: ``n_clips`` ledger clip rows over ``sources`` sources, every
    ``reject_every``-th rejected (by one of three stages), every ``t2v_every``-th kept one in t2v."""
    video = tiny_video() if video is None else video
    per_source = max(1, -(-n_clips // sources))
    clips, ledger = [], []
    stages = [("speech", "speech_ratio below threshold"), ("faces", "no face"), ("motion", "static")]
    for i in range(n_clips):
        track = "t2v" if i % t2v_every == 0 else "st2v"
        c = clip_row(i % per_source, source=i // per_source, track=track, video=video, dim=dim,
                     emb_frames=emb_frames)
        c["clip_id"] = f"{c['clip_id']}-{i}"
        if i % reject_every == reject_every - 1:
            stage, reason = stages[i % 3]
            ledger.append(ledger_row(c, "rejected", reject_stage=stage, reject_reason=reason))
        else:
            clips.append(c)
            ledger.append(ledger_row(c))
    ledger.append({"source_uri": "file:///data/broken.mp4", "status": "error", "reject_stage": "probe",
                   "reject_reason": "cannot open media"})
    return write_output(out, clips, ledger, dim=dim, rows_per_shard=rows_per_shard)
