"""Routing: which track a clip goes to, and its final columns for the shard.

st2v: alive, with usable speech (no stage blocked it). t2v: alive (visual filters passed) but
with no usable speech: MoCha's text-only share. Everything else is ledger-only.
"""
from __future__ import annotations

import numpy as np

from common.media import encode_audio
from pipeline.source.clips import ClipsConfig


def route(row: dict) -> tuple[str, str | None]:
    """(status, route_reason): status is st2v, t2v, rejected or error."""
    if row.get("reject_stage") is not None:
        return (row.get("status") or "rejected"), None
    if row.get("clip_id") is None or not row.get("video"):
        return "error", None
    block = row.get("st2v_block")
    if block is None and row.get("has_audio"):
        return "st2v", None
    reason = block or "no_audio_stream"
    # The speakers stage says whose speech it is; when an earlier stage blocked st2v first (a
    # reaction shot also fails lip-sync), its finding still goes into the reason.
    extra = row.get("speakers_block")
    if extra and extra not in reason:
        reason = f"{reason}; {extra}"
    return "t2v", reason


def finalize(row: dict, cfg: ClipsConfig) -> dict:
    """Route, then replace working arrays by their stored form (runs on a worker)."""
    status, reason = route(row)
    row["status"] = status
    row["route_reason"] = reason
    row["track"] = status if status in ("st2v", "t2v") else None
    pcm = row.pop("audio_pcm", None)
    row.pop("face_tracks", None)  # per-frame boxes for the speakers stage, not stored
    row["audio_sample_rate"] = cfg.audio_rate
    if status == "st2v" and pcm is not None and len(pcm):
        row["audio"] = encode_audio(pcm, cfg.audio_rate, cfg.audio_format)
    else:
        row["audio"] = None
    emb = row.get("audio_emb")
    if status == "st2v" and emb is not None:
        row["audio_emb"] = np.asarray(emb, dtype=np.float16)  # (T, D); the writer builds the Arrow list
    else:
        row["audio_emb"] = None
    if status not in ("st2v", "t2v"):
        row["video"] = None  # ledger rows do not carry media
    return row
