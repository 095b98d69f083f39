"""The clip-stage protocol shared by every per-clip stage of the pipeline.

A stage is a small class in the style of NeMo Curator's stages: a typed config (a pydantic model
holding every threshold of the stage), ``setup()`` that loads its model once per worker, and
``process(row)`` that returns the columns it adds for one clip. :func:`run_stage` wraps a stage
so that a failing clip becomes an ``error`` row instead of an exception, rejected clips skip
expensive stages, and each stage's backend label is merged into the row's ``backends`` JSON.

Rows inside the pipeline are plain dicts. Keys every clip row carries from the cut stage on:
``clip_id``, ``source_uri``, ``source_sha256``, ``start_s``, ``end_s``, ``start_frame``,
``end_frame``, ``fps``, ``width``, ``height``, ``num_frames``, ``video`` (mp4 bytes, H.264 at
``fps``), ``has_audio`` (bool), ``audio_pcm`` (float32 numpy array, 16 kHz mono; empty when the
source has no audio stream), ``backends`` (JSON string), ``reject_stage`` / ``reject_reason``
(None while the clip is alive), ``st2v_block`` (None, or the reason the clip cannot be st2v,
e.g. ``"no_audio_stream"``; it may still be t2v).
"""
from __future__ import annotations

import json
import logging
import traceback
from typing import Any, ClassVar

log = logging.getLogger(__name__)


class ClipStage:
    """Base class. Subclasses set ``name`` and ``columns`` (column -> value for skipped rows)."""

    name: ClassVar[str] = "stage"
    # Columns this stage adds and their value when it does not run on a row.
    columns: ClassVar[dict[str, Any]] = {}
    # Expensive stages do not look at clips an earlier stage rejected.
    skip_rejected: ClassVar[bool] = True

    def __init__(self, cfg: Any = None):
        self.cfg = cfg
        self._ready = False

    def setup(self) -> None:
        """Load models; called once per worker before the first row."""

    def backend(self) -> dict:
        """What produced this stage's scores (recorded in the row's ``backends``)."""
        return {}

    def process(self, row: dict) -> dict:
        raise NotImplementedError(f"{type(self).__name__}.process")

    # -- helpers for subclasses -------------------------------------------------------------
    @staticmethod
    def reject(reason: str, **columns: Any) -> dict:
        """Return value for ``process`` that rejects the clip with ``reason``."""
        return {**columns, "_reject": reason}

    @staticmethod
    def reject_at(stage: str, reason: str, **columns: Any) -> dict:
        """Reject, naming a sub-stage (a composite stage such as faces+sync+motion)."""
        return {**columns, "_reject": reason, "_stage": stage}

    @staticmethod
    def block_st2v(reason: str, **columns: Any) -> dict:
        """The clip cannot be st2v (no usable speech) but may still be t2v."""
        return {**columns, "_block_st2v": reason}

    def __call__(self, row: dict) -> dict:
        return run_stage(self, row)


def is_alive(row: dict) -> bool:
    return row.get("reject_stage") is None


def merge_backend(row: dict, stage: str, info: dict) -> None:
    if not info:
        return
    backends = json.loads(row.get("backends") or "{}")
    backends[stage] = info
    row["backends"] = json.dumps(backends, sort_keys=True, separators=(",", ":"))


def run_stage(stage: ClipStage, row: dict) -> dict:
    """Apply ``stage`` to ``row`` in place: never raises for a per-clip failure."""
    if not stage._ready:
        stage.setup()
        stage._ready = True
    for col, default in stage.columns.items():
        row.setdefault(col, default)
    if stage.skip_rejected and not is_alive(row):
        return row
    try:
        out = dict(stage.process(row))
    except Exception as e:  # one bad clip must not stop the job
        log.warning("stage %s failed on %s: %s", stage.name, row.get("clip_id"), e)
        log.debug("%s", traceback.format_exc())
        row["reject_stage"] = stage.name
        row["reject_reason"] = f"error: {type(e).__name__}: {e}"[:500]
        row["status"] = "error"
        return row
    info = out.pop("_backend", None)
    merge_backend(row, stage.name, info if info is not None else stage.backend())
    reason = out.pop("_reject", None)
    reject_stage = out.pop("_stage", stage.name)
    block = out.pop("_block_st2v", None)
    row.update(out)
    if reason is not None and is_alive(row):
        row["reject_stage"] = reject_stage
        row["reject_reason"] = reason
        row["status"] = "rejected"
    if block is not None and row.get("st2v_block") is None:
        row["st2v_block"] = f"{reject_stage}: {block}"
    return row
