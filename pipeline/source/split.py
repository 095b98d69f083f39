"""Per-source work before the per-clip stages, in two steps, so that a source of any length is
handled in bounded memory and committed piece by piece:

1. :func:`plan_source` (one task per source): hash and probe; one decode for scene detection,
   which also notes every frame's time (the clips' source-frame spans, no second count); the
   windows packed into *segments* of about ``scenes.segment_s``; one sequential audio decode
   that hands each segment its windows' 16 kHz samples. Segments are yielded as they are ready.
2. :func:`cut_segment` (one task per segment): decode the segment's range (seeking to it for a
   later segment of a long source) and encode its windows.

Before both, :func:`source_facts` (one task per input, all inputs before the plan) hashes,
probes and fingerprints the source, so the driver can find duplicates first; the plan reuses
those facts instead of reading the file again.

Each of these runs its media work in a child process (``pipeline.source.sandbox``) with a time
limit scaled by the media it reads. Whatever goes wrong with a source becomes a row with a
reason, never an exception, so the ledger accounts for every input; a timeout or a dead child
is marked ``retry`` so that a rerun does that source (or segment) again.
"""
from __future__ import annotations

import logging
import math
import traceback
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from common.fs import redact
from common.media import MediaError, audio_slices
from pipeline.engine.config import CurateConfig
from pipeline.source import sandbox
from pipeline.source.clips import SeekMissed, clip_id_for, cut_windows, failed_source_row, short_scene_row
from pipeline.source.fingerprint import fingerprint
from pipeline.source.ingest import IngestConfig, check_source, open_source, source_problem, source_size
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
    # the rows say why this work did not finish (a time limit, a dead child): committed so the
    # ledger shows it, but not counted as done, so a rerun does it again
    retry: bool = False
    duplicate: bool = False  # the row of a source dropped as a copy of another (not a candidate to keep)

    @property
    def source_uri(self) -> str:
        return self.source["source_uri"]

    @property
    def final(self) -> bool:
        return self.index == self.count - 1

    def record(self) -> dict:
        """What a commit record says of this segment."""
        rec = {"source": redact(self.source_uri), "source_sha256": self.source.get("source_sha256"), "index": self.index,
               "count": self.count, "start_s": round(self.start_s, 6), "end_s": round(self.end_s, 6),
               "duration_s": float(self.source.get("duration_s") or 0.0), "rows": len(self.rows or [])}
        if self.retry:
            rec["retry"] = True
        if self.duplicate:
            rec["duplicate"] = True
        return rec


def _failed(src: dict, status: str, stage: str, reason: str, retry: bool = False, index: int = 0,
            count: int = 1) -> Segment:
    return Segment(src, index, count, rows=[failed_source_row(src, status, stage, reason)], retry=retry)


def media_seconds(item: dict, cfg: IngestConfig) -> float:
    """Seconds of media a whole-source decode will go through: the probed duration, or for a
    container that declares none, what its size holds at a low bitrate (1 Mbit/s)."""
    dur = float(item.get("duration_s") or 0.0)
    if dur <= 0:
        dur = min(cfg.max_duration_s, float(item.get("size_bytes") or 0) * 8 / 1e6)
    return min(dur, cfg.max_duration_s)


def source_facts(item: dict, cfg: CurateConfig) -> dict:
    """The checked item (hash, probe facts, or its problem) with the near-duplicate fingerprint
    of a readable video under ``fingerprint``; marked ``checked`` so the plan does not read the
    file again. A time limit or a dead child gives an error marked ``retry``."""
    if item.get("error") or item.get("checked"):
        return item
    sb = cfg.ingest.sandbox
    try:
        out = list(sandbox.stream(_facts, (item, cfg), sb.base_s, "hashing and probing", sb))[-1]
    except sandbox.SandboxFailure as e:
        return {**item, "error": e.reason, "retry": e.retry, "checked": True}
    except Exception as e:  # a bug, not the file: still one row for this source, not a failed job
        log.debug("%s", traceback.format_exc())
        return {**item, "error": f"ingest_failed: {type(e).__name__}: {e}", "checked": True}
    return out


def _facts(item: dict, cfg: CurateConfig) -> Iterator:
    """(in the child) Extend the limit by what the file's size and duration ask, then the facts."""
    sb, near = cfg.ingest.sandbox, cfg.ingest.near_duplicates
    try:
        yield sandbox.Extend(source_size(item["source_uri"]) / (sb.min_read_mb_s * 1e6))
    except OSError:
        pass  # check_source reports it
    src = check_source(item, cfg.ingest)
    src["checked"] = True
    if source_problem(src) is None:
        yield sandbox.Extend(sb.per_media_s * min(near.fingerprint.span_s, media_seconds(src, cfg.ingest)))
        fp = fingerprint(lambda: open_source(src["source_uri"]), bool(src.get("has_audio")), near.fingerprint)
        src["fingerprint"] = fp.to_json()
    yield src


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
    """The segments of one source, without the indices in ``skip`` (already committed). The
    scan and the audio decode run in a child process; segments are yielded as it sends them."""
    sb = cfg.ingest.sandbox
    src = item if item.get("checked") else {**item, "checked": False}
    if item.get("checked") and source_problem(item) is not None:
        yield from _plan(item, cfg, skip)  # nothing to read: the row of its problem
        return
    # an item the facts pass did not check asks for more time once the child has probed it
    limit = sb.base_s + sb.per_media_s * media_seconds(item, cfg.ingest)
    seen: set[int] = set()
    count = None
    try:
        for seg in sandbox.stream(_plan, (item, cfg, skip), limit, "the scene scan", sb):
            seen.add(seg.index)
            count, src = seg.count, seg.source
            yield seg
    except sandbox.SandboxFailure as e:
        yield _failed_rest(src, seen | set(skip), count, "error", "scenes", e.reason, e.retry)
    except Exception as e:  # a bug, not the file: one row for the source instead of a failed job
        log.debug("%s", traceback.format_exc())
        yield _failed_rest(src, seen | set(skip), count, "error", "scenes", f"planning_failed: {type(e).__name__}: {e}",
                           retry=bool(seen))


def _failed_rest(src: dict, done: set[int], count: Optional[int], status: str, stage: str, reason: str,
                 retry: bool) -> Segment:
    """The row of a plan that stopped: for the whole source when no segment came out, else for
    the first segment that did not (the source stays incomplete, so a rerun plans the rest)."""
    if count is None:
        return _failed(src, status, stage, reason, retry=retry)
    index = next(k for k in range(count + 1) if k not in done)
    return _failed(src, status, stage, reason, retry=True, index=min(index, count - 1), count=count)


def _plan(item: dict, cfg: CurateConfig, skip: frozenset[int]) -> Iterator[Segment]:
    if item.get("checked"):
        src = item
    else:
        src = check_source(item, cfg.ingest)
        sb = cfg.ingest.sandbox
        yield sandbox.Extend(float(src.get("size_bytes") or 0) / (sb.min_read_mb_s * 1e6)
                             + sb.per_media_s * media_seconds(src, cfg.ingest))
    problem = source_problem(src)
    if problem is not None:
        status, reason = problem
        yield _failed(src, status, "ingest", reason, retry=bool(src.get("retry")))
        return
    try:
        scan = detect_scenes(open_source(src["source_uri"]), cfg.scenes, threads=split_threads(cfg))
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
                rows += _cut_sandboxed(seg, cfg, seek=seg.index > 0)
            except SeekMissed as e:  # correct but slower: decode from the start of the source
                log.warning("%s segment %d: %s; decoding from the start", seg.source_uri, seg.index, e)
                rows += _cut_sandboxed(seg, cfg, seek=False)
        except sandbox.SandboxFailure as e:
            rows += [_window_error(src, w, e.reason) for w in seg.windows]
            seg.retry = e.retry
        except Exception as e:
            log.debug("%s", traceback.format_exc())
            rows += [_window_error(src, w, f"cut_failed: {type(e).__name__}: {e}") for w in seg.windows]
    seg.rows = sorted(rows, key=lambda r: (r.get("start_s") is None, r.get("start_s") or 0.0))
    seg.audio = None  # now inside the rows
    return seg


def _cut_sandboxed(seg: Segment, cfg: CurateConfig, seek: bool) -> list[dict]:
    sb = cfg.ingest.sandbox
    # from the seek point, the segment's own span; without a seek, everything before it too
    media = seg.end_s - seg.start_s if seek or seg.index == 0 else seg.end_s
    what = f"the clip cut of segment {seg.index}" if seg.count > 1 else "the clip cut"
    return sandbox.run(_cut, (seg, cfg, seek), sb.base_s + sb.per_media_s * max(media, 0.0), what, sb)


def _cut(seg: Segment, cfg: CurateConfig, seek: bool) -> list[dict]:
    src = seg.source
    return cut_windows(open_source(src["source_uri"]), src, seg.windows, seg.audio, cfg.clips,
                       src["src_width"], src["src_height"], seek=seek, final=seg.final, motion=cfg.visual.motion,
                       threads=split_threads(cfg))


def split_threads(cfg: CurateConfig) -> int:
    """Decoder and encoder threads of the scene scan and the cut: the CPUs a split task
    reserves (its work runs in a sandbox child, which Ray's thread settings do not reach)."""
    return max(1, math.floor(cfg.resources.split.num_cpus))


def _window_error(src: dict, w: Window, reason: str) -> dict:
    r = failed_source_row(src, "error", "clips", reason)
    r.update(clip_id=clip_id_for(src["source_sha256"], w.start_s, w.end_s), start_s=w.start_s, end_s=w.end_s,
             scene_index=w.scene_index, window_index=w.window_index)
    return r
