"""Shot size from the dominant face's height relative to the frame (thresholds: ShotConfig)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from schemas.base import Strict


class ShotConfig(Strict):
    """Shot size from the dominant face box height / frame height.

    Detector boxes run brow to chin, about 1/8 of a standing person's height. Whole body in frame
    (wide) gives boxes under ~0.15 of the frame; waist up (medium, ~3.5 heads visible) 0.15-0.25;
    chest up (medium close-up, ~2.5 heads) 0.25-0.45; head and shoulders (close-up) above 0.45.
    Haar boxes run ~10 % smaller than YuNet/SCRFD ones, so no default sits within 10 % of a
    typical framing.
    """

    close_up: float = Field(0.45, gt=0, le=1)
    medium_close_up: float = Field(0.25, gt=0, le=1)
    medium: float = Field(0.15, gt=0, le=1)

    @model_validator(mode="after")
    def _order(self):
        if not (self.close_up > self.medium_close_up > self.medium):
            raise ValueError("shot thresholds must satisfy close_up > medium_close_up > medium")
        return self


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
