"""Shot size from the dominant face's height relative to the frame (thresholds: ShotConfig)."""
from __future__ import annotations

from typing import Optional

from pipeline.config import ShotConfig

SHOT_SIZES = ("close_up", "medium_close_up", "medium", "wide", "no_face")


def shot_size(height_ratio: Optional[float], cfg: ShotConfig) -> str:
    if height_ratio is None or height_ratio <= 0:
        return "no_face"
    if height_ratio >= cfg.close_up:
        return "close_up"
    if height_ratio >= cfg.medium_close_up:
        return "medium_close_up"
    if height_ratio >= cfg.medium:
        return "medium"
    return "wide"
