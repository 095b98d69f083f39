"""Per-source work before the per-clip stages, in two steps, so that a source of any length is
handled in bounded memory and committed piece by piece:

1. :func:`plan_source` (one task per source): hash and probe; one decode for scene detection,
   which also notes every frame's time (the clips' source-frame spans, no second count); the
   windows packed into *segments* of about ``scenes.segment_s``; one sequential audio decode
   that hands each segment its windows' 16 kHz samples. Segments are yielded as they are ready.
2. :func:`cut_segment` (one task per segment): decode the segment's range (seeking to it for a
   later segment of a long source) and encode its windows.

Whatever goes wrong with a source becomes a row with a reason, never an exception, so the ledger
accounts for every input.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from common.fs import redact
from common.media import MediaError, audio_slices
from pipeline.engine.config import CurateConfig
from pipeline.source.clips import SeekMissed, clip_id_for, cut_windows, failed_source_row, short_scene_row
from pipeline.source.ingest import check_source, open_source, source_problem
from pipeline.source.scenes import Window, detect_scenes, frame_span, windows_for

log = logging.getLogger(__name__)


@dataclass
class Segment:
    """A run of consecutive windows of one source (or the one row of a source that failed)."""

    source: dict  # the checked source item: uri, sha256, probe facts
    index: int
    count: int  # segments of the source
    windows: list[Window] = field(default_factory=list)
    short: list[Window] = field(default_factory=list)  # scenes too short to be clips, in this range
    audio: Optional[list[np.ndarray]] = None  # per window
    rows: Optional[list[dict]] = None  # the cut's output (set at planning for a failed source)
    start_s: float = 0.0
    end_s: float = 0.0

    @property
    def source_uri(self) -> str:
        return self.source["source_uri"]

    @property
    def final(self) -> bool:
        return self.index == self.count - 1

    def record(self) -> dict:
        """What a commit record says of this segment."""
        return {"source": redact(self.source_uri), "source_sha256": self.source.get("source_sha256"), "index": self.index,
                "count": self.count, "start_s": round(self.start_s, 6), "end_s": round(self.end_s, 6),
                "duration_s": float(self.source.get("duration_s") or 0.0), "rows": len(self.rows or [])}


def _failed(src: dict, status: str, stage: str, reason: str) -> Segment:
    return Segment(src, 0, 1, rows=[failed_source_row(src, status, stage, reason)])


def pack_segments(windows: list[Window], short: list[Window], segment_s: float) -> list[tuple[list[Window], list[Window]]]:
    """Consecutive windows grouped so each group spans at most ``segment_s`` (a longer window is
    a group of its own); each too-short scene joins the group whose time range holds it."""
    groups: list[list[Window]] = []
    for w in windows:
        if groups and w.end_s - groups[-1][0].start_s <= segment_s + 1e-6:
            groups[-1].append(w)
        else:
            groups.append([w])
    if not groups:
        return [([], list(short))] if short else []
    starts = [g[0].start_s for g in groups]
    shorts: list[list[Window]] = [[] for _ in groups]
    for w in short:
        k = max(0, int(np.searchsorted(starts, w.start_s, side="right")) - 1)
        shorts[k].append(w)
    return list(zip(groups, shorts))


def plan_source(item: dict, cfg: CurateConfig, skip: frozenset[int] = frozenset()) -> Iterator[Segment]:
    """The segments of one source, without the indices in ``skip`` (already committed)."""
    src = check_source(item, cfg.ingest)
    problem = source_problem(src)
    if problem is not None:
        status, reason = problem
        yield _failed(src, status, "ingest", reason)
        return
    try:
        scan = detect_scenes(open_source(src["source_uri"]), cfg.scenes)
    except Exception as e:  # scenedetect raises its own types for undecodable input
        log.debug("%s", traceback.format_exc())
        yield _failed(src, "error", "scenes", f"scene_detection_failed: {type(e).__name__}: {e}")
        return
    if not scan.scenes:
        yield _failed(src, "rejected", "scenes", "no_frames: the video stream decoded to nothing")
        return
    windows, short = windows_for(scan.scenes, cfg.scenes)
    for w in windows:
        w.start_frame, w.end_frame = frame_span(scan.frame_times, w.start_s, w.end_s)
    groups = pack_segments(windows, short, cfg.scenes.segment_s)
    segments = [Segment(src, k, len(groups), ws, sh, start_s=min(x.start_s for x in ws + sh),
                        end_s=max(x.end_s for x in ws + sh)) for k, (ws, sh) in enumerate(groups)]
    audio = _window_audio(src, windows) if src.get("has_audio") and windows else None
    for seg in segments:
        if audio is not None:
            try:
                seg.audio = [next(audio) for _ in seg.windows]
            except MediaError as e:
                # the clips can still be t2v; the speech stage reports the missing audio
                log.warning("%s: audio decode failed: %s", src["source_uri"], e)
                src["has_audio"], audio = False, None
        if seg.index not in skip:
            yield seg


def _window_audio(src: dict, windows: list[Window]) -> Iterator[np.ndarray]:
    spans = [(w.start_s, w.end_s) for w in windows]
    return audio_slices(open_source(src["source_uri"]), spans)


def cut_segment(seg: Segment, cfg: CurateConfig) -> Segment:
    """Fill ``seg.rows``: a row per window (encoded) and per too-short scene (ledger only)."""
    if seg.rows is not None:
        return seg
    src = seg.source
    rows = [short_scene_row(src, w, cfg.scenes.min_clip_s) for w in seg.short]
    if seg.windows:
        try:
            try:
                rows += _cut(seg, cfg, seek=seg.index > 0)
            except SeekMissed as e:  # correct but slower: decode from the start of the source
                log.warning("%s segment %d: %s; decoding from the start", seg.source_uri, seg.index, e)
                rows += _cut(seg, cfg, seek=False)
        except Exception as e:
            log.debug("%s", traceback.format_exc())
            rows += [_window_error(src, w, f"cut_failed: {type(e).__name__}: {e}") for w in seg.windows]
    seg.rows = sorted(rows, key=lambda r: (r.get("start_s") is None, r.get("start_s") or 0.0))
    seg.audio = None  # now inside the rows
    return seg


def _cut(seg: Segment, cfg: CurateConfig, seek: bool) -> list[dict]:
    src = seg.source
    return cut_windows(open_source(src["source_uri"]), src, seg.windows, seg.audio, cfg.clips,
                       src["src_width"], src["src_height"], seek=seek, final=seg.final)


def _window_error(src: dict, w: Window, reason: str) -> dict:
    r = failed_source_row(src, "error", "clips", reason)
    r.update(clip_id=clip_id_for(src["source_sha256"], w.start_s, w.end_s), start_s=w.start_s, end_s=w.end_s,
             scene_index=w.scene_index, window_index=w.window_index)
    return r
