"""Per-source work before the per-clip stages: hash + probe, scene split, clip cut.

Runs as one Ray task per source. Whatever goes wrong with a source becomes a row with a reason,
never an exception, so the ledger accounts for every input.
"""
from __future__ import annotations

import logging
import traceback

from common.media import MediaError, decode_audio
from pipeline.engine.config import CurateConfig
from pipeline.source.clips import cut_clips, failed_source_row
from pipeline.source.ingest import check_source, open_source, source_problem
from pipeline.source.scenes import detect_scenes, windows_for

log = logging.getLogger(__name__)


def split_source(item: dict, cfg: CurateConfig) -> list[dict]:
    src = check_source(item, cfg.ingest)
    problem = source_problem(src)
    if problem is not None:
        status, reason = problem
        return [failed_source_row(src, status, "ingest", reason)]
    try:
        scenes, _cuts = detect_scenes(open_source(src["source_uri"]), cfg.scenes)
    except Exception as e:  # scenedetect raises its own types for undecodable input
        log.debug("%s", traceback.format_exc())
        return [failed_source_row(src, "error", "scenes", f"scene_detection_failed: {type(e).__name__}: {e}")]
    if not scenes:
        return [failed_source_row(src, "rejected", "scenes", "no_frames: the video stream decoded to nothing")]
    windows, short = windows_for(scenes, cfg.scenes)
    audio = None
    if src.get("has_audio"):
        try:
            audio = decode_audio(open_source(src["source_uri"]), cfg.clips.audio_rate)
        except MediaError as e:
            # the clips can still be t2v; the speech stage reports the missing audio
            log.warning("%s: audio decode failed: %s", src["source_uri"], e)
            src["has_audio"] = False
    try:
        return cut_clips(open_source(src["source_uri"]), src, windows, short, audio, cfg.clips,
                         src["src_width"], src["src_height"], cfg.scenes.min_clip_s)
    except Exception as e:
        log.debug("%s", traceback.format_exc())
        return [failed_source_row(src, "error", "clips", f"cut_failed: {type(e).__name__}: {e}")]
