"""``mocha eval``: Sync-C / Sync-D of generated videos, the lip-sync metrics of the MoCha paper.

Sync-C is the SyncNet confidence (median minus minimum of the mean audio-visual distance over
the +-vshift offset search; higher = better synchronised) and Sync-D the minimum distance (lower
= better). Both come from the curation's own scorer (``pipeline.stages.visual.sync.score_sync``), so generated
videos and training clips are measured with one ruler; which backend scored them (SyncNet v2
checkpoint, or the weight-free audio-visual correlation fallback whose scale differs) is written
into every row and the summary, so numbers of different backends are never compared unawares.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from common.media import VIDEO_FPS

log = logging.getLogger(__name__)



def load_for_sync(video: str, speech: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames resampled to 25 fps and the 16 kHz speech (the video's own track by default)."""
    from common.media import decode_audio, decode_video, resample_times

    frames, times = decode_video(video)
    dur = float(times[-1]) + (float(np.median(np.diff(times))) if len(times) > 1 else 1 / VIDEO_FPS)
    frames = frames[resample_times(times, 0.0, dur, VIDEO_FPS)]
    pcm = decode_audio(speech or video)
    if pcm is None or not len(pcm):
        raise ValueError(f"{speech or video}: no speech to score against")
    return frames, pcm


def evaluate_videos(videos: Sequence[str], speech: Optional[Sequence[str]] = None,
                    out: Optional[str] = None, sync_cfg=None) -> dict:
    from pipeline.stages.visual.sync import SyncConfig, SyncScorer, score_sync

    cfg = sync_cfg or SyncConfig()
    if speech and len(speech) != len(videos):
        raise ValueError(f"{len(speech)} --speech files for {len(videos)} videos (one each, or none)")
    backend = SyncScorer(cfg).info()
    rows = []
    for i, v in enumerate(videos):
        row = {"video": str(v), "backend": backend}
        try:
            frames, pcm = load_for_sync(v, speech[i] if speech else None)
            res = score_sync(frames, pcm, cfg)
            row.update(sync_c=float(res.conf), sync_d=float(res.dist), offset=int(res.offset),
                       backend={**backend, "backend": res.backend})
        except (ValueError, RuntimeError, OSError) as e:
            # one unscorable video (no face, no audio) is a row with its reason, not a crash
            row["error"] = str(e)
        rows.append(row)
    ok = [r for r in rows if "error" not in r]
    summary = {
        "videos": len(rows), "scored": len(ok), "backend": backend,
        "sync_c_mean": float(np.mean([r["sync_c"] for r in ok])) if ok else None,
        "sync_d_mean": float(np.mean([r["sync_d"] for r in ok])) if ok else None,
        "abs_offset_mean": float(np.mean([abs(r["offset"]) for r in ok])) if ok else None,
    }
    report = {"summary": summary, "videos": rows}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
    return report
