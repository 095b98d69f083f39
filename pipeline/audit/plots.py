"""Charts and thumbnails for the audit page, as base64 data URIs so the HTML is one
self-contained file with no network resources.

Uses matplotlib's object API (``Figure`` renders with the Agg canvas) rather than pyplot: no
global state, no display backend, safe in a worker process."""
from __future__ import annotations

import base64
import io
import math
from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from common import media

# Status -> colour, shared by every chart so a reader learns it once.
STATUS_COLOURS = {"st2v": "#2b7bb9", "t2v": "#7fb77e", "rejected": "#d9534f", "error": "#8c564b"}
_DPI = 80  # small PNGs: the page stays a few hundred kB even with many charts


def _data_uri(fig: Figure, fmt: str = "png") -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=_DPI, bbox_inches="tight")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def funnel_chart(steps: list[dict]) -> str:
    """Horizontal bars, one per step: clips still in after the step (blue) and those the step
    removed (red), labelled with the count and its most common reason."""
    labels = [s["stage"] for s in steps]
    remaining = np.array([s["remaining"] for s in steps], dtype=float)
    removed = np.array([s.get("removed", 0) for s in steps], dtype=float)
    fig = Figure(figsize=(10, 0.45 * len(steps) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(steps))[::-1]
    ax.barh(y, remaining, color=STATUS_COLOURS["st2v"], label="remaining")
    ax.barh(y, removed, left=remaining, color=STATUS_COLOURS["rejected"], label="removed")
    top = max(1.0, float((remaining + removed).max()) if len(steps) else 1.0)
    for yi, s in zip(y, steps):
        text = f"{s['remaining']}"
        if s.get("removed"):
            reasons = s.get("reasons") or {}
            first = max(reasons, key=reasons.get) if reasons else ""
            text += f"  (-{s['removed']}{': ' + first if first else ''}{' ...' if len(reasons) > 1 else ''})"
        ax.text(s["remaining"] + s.get("removed", 0) + top * 0.01, yi, text, va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, top * 1.6)
    ax.set_xlabel("clips")
    ax.set_title("Filter funnel")
    ax.legend(loc="lower right", fontsize=8)
    return _data_uri(fig)


def histograms(series: dict[str, dict[str, list]], units: Optional[dict[str, str]] = None) -> str:
    """One panel per score, stacked by status. ``series`` maps score -> status -> values (None
    allowed: counted as "not computed" in the panel title)."""
    units = units or {}
    names = list(series)
    cols = 3
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4 * cols, 2.8 * rows))
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        groups = series[name]
        data, colours, labels, nulls = [], [], [], 0
        for status, vals in groups.items():
            arr = np.array([v for v in vals if v is not None and not _isnan(v)], dtype=float)
            nulls += len(vals) - len(arr)
            if len(arr):
                data.append(arr)
                colours.append(STATUS_COLOURS.get(status, "#999999"))
                labels.append(status)
        title = name + (f" [{units[name]}]" if name in units else "")
        if data:
            allv = np.concatenate(data)
            lo, hi = float(allv.min()), float(allv.max())
            bins = _bins(lo, hi, allv)
            # one polygon per status instead of one patch per bin: 10x faster to draw
            ax.hist(data, bins=bins, stacked=True, histtype="stepfilled", color=colours, label=labels)
            ax.legend(fontsize=7)
            title += f"  n={len(allv)}"
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        if nulls:
            title += f", {nulls} not computed"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.subplots_adjust(hspace=0.45, wspace=0.25)
    return _data_uri(fig)


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _bins(lo: float, hi: float, values: np.ndarray):
    if hi <= lo:
        return np.array([lo - 0.5, lo + 0.5])
    if np.all(np.equal(np.mod(values, 1), 0)) and hi - lo <= 40:
        return np.arange(lo - 0.5, hi + 1.5)  # integer scores (offsets, face counts): one bin each
    return 30


# One colour per character tag (Person1, Person2 ...), cycling; the strip's rows use them.
PERSON_COLOURS = ("#2b7bb9", "#e07b39", "#5aa05a", "#9467bd", "#c44e52", "#8c8c8c")


def speaking_timeline(turns: list[dict], duration_s: float, persons: Optional[list[str]] = None,
                      width: int = 280, row_h: int = 12) -> str:
    """Inline SVG: one row per character (Person1 first), a bar over each of its turns, on a
    time axis of the clip's duration. ``turns``: ``speaking_turns`` of a clip row."""
    def tag_key(p: str):
        digits = "".join(ch for ch in str(p) if ch.isdigit())
        return (0, int(digits)) if digits else (1, str(p))

    who = [t.get("person") or f"track {t.get('track')}" for t in turns]
    rows = list(dict.fromkeys(sorted(set(who) | set(persons or []), key=tag_key)))
    label_w, dur = 58, max(float(duration_s or 0.0), 1e-3)
    plot_w = width - label_w
    h = row_h * max(1, len(rows)) + 14
    esc = lambda x: str(x).replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")  # noqa: E731
    parts = [f'<svg class="speaking-timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'viewBox="0 0 {width} {h}" role="img" aria-label="speaking timeline">']
    for r, name in enumerate(rows):
        y = r * row_h
        colour = PERSON_COLOURS[r % len(PERSON_COLOURS)]
        parts.append(f'<text x="0" y="{y + row_h - 3}" font-size="9">{esc(name)}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{plot_w}" height="{row_h - 4}" fill="#f0f0f0"/>')
        for t, w in zip(turns, who):
            if w != name:
                continue
            a = min(max(float(t.get("start_s") or 0.0), 0.0), dur)
            b = min(max(float(t.get("end_s") or 0.0), a), dur)
            x0, x1 = label_w + plot_w * a / dur, label_w + plot_w * b / dur
            score = t.get("score")
            tip = f"{name} {a:.2f}-{b:.2f} s" + (f", score {float(score):.2f}" if score is not None else "")
            parts.append(f'<rect class="turn" data-person="{esc(name)}" data-start="{a:.2f}" data-end="{b:.2f}" '
                         f'x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 0.5):.1f}" height="{row_h - 4}" '
                         f'fill="{colour}"><title>{esc(tip)}</title></rect>')
    axis_y = row_h * max(1, len(rows)) + 10
    parts.append(f'<text x="{label_w}" y="{axis_y}" font-size="8">0 s</text>'
                 f'<text x="{width}" y="{axis_y}" font-size="8" text-anchor="end">{dur:.1f} s</text></svg>')
    return "".join(parts)


def keyframe_thumbnail(video: bytes, max_side: int = 192) -> str:
    """JPEG data URI of the middle frame of an mp4 clip, longest side ``max_side``."""
    import cv2  # headless OpenCV: only needed for the gallery

    info = media.probe(video)
    middle = info.duration_s / 2.0
    rgb = None
    # Stop at the middle frame: holding every decoded frame of a long HD clip costs gigabytes.
    for t, frame in media.iter_frames(video):
        rgb = frame
        if t >= middle:
            break
    if rgb is None:
        raise media.MediaError("no decodable video frames")
    h, w = rgb.shape[:2]
    tw, th = media.fit_size(w, h, max_side)
    small = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise media.MediaError("thumbnail JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(jpg.tobytes()).decode("ascii")
