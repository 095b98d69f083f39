"""IoU tracking of face detections with gap tolerance, and per-track statistics.

Detections arrive on sampled frames; a track continues while its next detection overlaps the
last box (IoU >= threshold) within ``max_gap`` sampled frames. Boxes are interpolated between
a track's detections so later steps (mouth crops) have one box per frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / ua) if ua > 0 else 0.0


@dataclass
class Track:
    track_id: int
    frames: list = field(default_factory=list)  # frame indices with a detection
    boxes: list = field(default_factory=list)  # [x0, y0, x1, y1, score] per detection
    missed: int = 0

    @property
    def last(self) -> np.ndarray:
        return self.boxes[-1]

    def box_array(self) -> np.ndarray:
        return np.asarray(self.boxes, np.float32)

    def boxes_per_frame(self, num_frames: int) -> np.ndarray:
        """(num_frames, 4) boxes, linearly interpolated; held constant outside the track's span."""
        f = np.asarray(self.frames, np.float64)
        b = self.box_array()
        t = np.arange(num_frames)
        return np.stack([np.interp(t, f, b[:, k]) for k in range(4)], 1).astype(np.float32)

    def handover(self, num_frames: int, width: int, height: int, every: int = 1) -> dict:
        """What the speakers stage needs of this track: its frame span (first detection to the
        last, plus the frames after it that were not sampled) and its per-frame box in frame
        fractions (independent of the decode size)."""
        last = min(num_frames - 1, int(self.frames[-1]) + max(1, every) - 1)
        boxes = self.boxes_per_frame(num_frames) / np.array([width, height, width, height], np.float32)
        return {"track_id": self.track_id, "first": int(self.frames[0]), "last": last, "boxes": boxes}


def track_faces(dets: dict[int, np.ndarray], iou_threshold: float = 0.3, max_gap: int = 6) -> list[Track]:
    """Greedy IoU association, highest overlap first, in frame order."""
    active: list[Track] = []
    done: list[Track] = []
    next_id = 0
    for fi in sorted(dets):
        d = dets[fi]
        pairs = sorted(((iou(t.last, d[j]), ti, j) for ti, t in enumerate(active) for j in range(len(d))),
                       reverse=True)
        used_t, used_d = set(), set()
        for ov, ti, j in pairs:
            if ov < iou_threshold or ti in used_t or j in used_d:
                continue
            used_t.add(ti)
            used_d.add(j)
            t = active[ti]
            t.frames.append(fi)
            t.boxes.append(d[j])
            t.missed = 0
        still = []
        for ti, t in enumerate(active):
            if ti not in used_t:
                t.missed += 1
            (still if t.missed <= max_gap else done).append(t)
        active = still
        for j in range(len(d)):
            if j not in used_d:
                active.append(Track(next_id, [fi], [d[j]]))
                next_id += 1
    return done + active


@dataclass
class TrackStats:
    track_id: int
    coverage: float  # share of sampled frames with a detection of this track
    height_ratio: float  # mean box height / frame height
    center: tuple  # mean box centre, 0..1 of the frame
    bbox_mean: tuple  # mean box, 0..1 of the frame
    num_detections: int

    def to_json(self) -> dict:
        return {"track_id": self.track_id, "coverage": round(self.coverage, 4),
                "height_ratio": round(self.height_ratio, 4),
                "center": [round(c, 4) for c in self.center],
                "bbox_mean": [round(c, 4) for c in self.bbox_mean]}


def track_stats(t: Track, num_sampled: int, width: int, height: int) -> TrackStats:
    b = t.box_array()
    mean = b[:, :4].mean(0)
    norm = np.array([width, height, width, height], np.float64)
    bm = mean / norm
    return TrackStats(
        track_id=t.track_id,
        coverage=len(t.frames) / max(1, num_sampled),
        height_ratio=float(((b[:, 3] - b[:, 1]) / height).mean()),
        center=(float((bm[0] + bm[2]) / 2), float((bm[1] + bm[3]) / 2)),
        bbox_mean=tuple(float(x) for x in bm),
        num_detections=len(t.frames),
    )


def character_tracks(tracks: list[Track], num_sampled: int, width: int, height: int,
                     min_len: int, min_coverage: float) -> list[tuple[Track, TrackStats]]:
    """Tracks that count as on-screen characters, largest presence x size first (dominant first)."""
    keep = []
    for t in tracks:
        if len(t.frames) < min_len:
            continue
        s = track_stats(t, num_sampled, width, height)
        if s.coverage >= min_coverage:
            keep.append((t, s))
    keep.sort(key=lambda ts: ts[1].coverage * ts[1].height_ratio, reverse=True)
    return keep


def count_faces(dets: dict[int, np.ndarray], chars: list[tuple[Track, TrackStats]]) -> int:
    """Characters on screen: the most common number of character tracks present per sampled
    frame (the dominant count over the clip), at least 1 when any character track exists."""
    if not chars:
        return 0
    counts = []
    for fi in sorted(dets):
        counts.append(sum(1 for t, _ in chars if t.frames[0] <= fi <= t.frames[-1]))
    vals, freq = np.unique(np.asarray(counts), return_counts=True)
    return max(1, int(vals[np.argmax(freq)]))
