"""The last step of a segment before its shards are written: route every row, store its media
in final form, and group consecutive shots of one conversation into multi-clip samples."""
from __future__ import annotations

from typing import Any

from pipeline.engine.config import CurateConfig
from pipeline.finalize.grouping import group_clips
from pipeline.finalize.route import finalize


def finish_rows(rows: list[dict], cfg: CurateConfig, tokenizer: Any = None) -> list[dict]:
    """Rows of one segment, routed and grouped, in time order. A group never crosses segments:
    a segment boundary falls between windows, and segments are minutes long, so only the
    shots that straddle a boundary lose their group."""
    rows = sorted((finalize(r, cfg.clips) for r in rows), key=lambda r: (r.get("start_s") is None, r.get("start_s") or 0.0))
    kept = [r for r in rows if r.get("status") in ("st2v", "t2v")]
    group_clips(kept, cfg.caption.max_group_clips, tokenizer=tokenizer, cfg=cfg.caption)
    return rows
