"""The stage contract every per-clip stage of the pipeline follows.

A stage is a small class in the style of NeMo Curator's stages:

- a typed config (a pydantic model next to the stage, holding every threshold) and
  ``from_config(cfg, device)``, the one way the engine builds it, on the device Ray assigned;
- ``setup()``: load the model once per worker; :meth:`Stage.run` calls it, nothing else does;
- ``process_batch(rows) -> [StageResult]``: a batch in, one typed result per row out, so a model
  stage runs its network on the whole batch (the default maps :meth:`Stage.process` over rows);
- ``backend()``: what produces its scores, with ``fallback`` saying whether that is an embedded
  default rather than the production model (the audit reads this flag, not the name).

:meth:`Stage.run` is the engine's only entry point. It fills the stage's columns on every row,
hands the live rows to ``process_batch`` (rejected rows skip expensive stages), isolates
failures (a failing batch is retried row by row, a failing row becomes that clip's ``error``),
and applies each result: its columns, its outcome (kept / rejected / st2v blocked / error) and
the backend label merged into the row's ``backends`` JSON.

Rows are plain dicts. Keys every clip row carries from the cut on: ``clip_id``, ``source_uri``,
``source_sha256``, ``start_s``, ``end_s``, ``start_frame``, ``end_frame``, ``fps``, ``width``,
``height``, ``num_frames``, ``video`` (mp4 bytes), ``has_audio``, ``audio_pcm`` (float32,
16 kHz mono), ``backends`` (JSON), ``reject_stage`` / ``reject_reason`` (None while the clip is
alive) and ``st2v_block`` (None, or why the clip cannot be st2v; it may still be t2v).
"""
from __future__ import annotations

import enum
import json
import logging
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

if TYPE_CHECKING:
    from pipeline.engine.config import CurateConfig

log = logging.getLogger(__name__)


class Outcome(str, enum.Enum):
    KEPT = "kept"
    REJECTED = "rejected"  # ledger only, with the stage and reason
    ST2V_BLOCKED = "st2v_blocked"  # no usable speech: may still be a t2v clip
    ERROR = "error"  # the stage failed on this clip


@dataclass
class StageResult:
    """What a stage decided about one row."""

    columns: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = Outcome.KEPT
    reason: Optional[str] = None
    # a composite stage (visual: faces, shot, sync, motion) names the part that decided
    substage: Optional[str] = None
    # this row's backend label when it differs from the stage's (None: the stage's own; {}: none)
    backend: Optional[dict] = None

    @classmethod
    def kept(cls, backend: Optional[dict] = None, **columns: Any) -> "StageResult":
        return cls(columns, backend=backend)

    @classmethod
    def rejected(cls, reason: str, substage: Optional[str] = None, backend: Optional[dict] = None,
                 **columns: Any) -> "StageResult":
        return cls(columns, Outcome.REJECTED, reason, substage, backend)

    @classmethod
    def st2v_blocked(cls, reason: str, substage: Optional[str] = None, **columns: Any) -> "StageResult":
        return cls(columns, Outcome.ST2V_BLOCKED, reason, substage)

    @classmethod
    def error(cls, err: BaseException) -> "StageResult":
        return cls({}, Outcome.ERROR, f"error: {type(err).__name__}: {err}"[:500])


def backend_label(name: str, fallback: bool, **details: Any) -> dict:
    """A stage's ``backends`` entry: the backend's name, whether it is an embedded fallback,
    and what else identifies it (model, file, thresholds)."""
    return {"backend": name, "fallback": bool(fallback), **details}


class Stage:
    """Base class of every per-clip stage (see the module docstring)."""

    name: ClassVar[str] = "stage"
    # Columns this stage adds, and their value on rows it does not process.
    columns: ClassVar[dict[str, Any]] = {}
    # Expensive stages do not look at clips an earlier stage rejected.
    skip_rejected: ClassVar[bool] = True

    def __init__(self, cfg: Any = None, device: str = "cpu", models_dir: Optional[str] = None):
        self.cfg = cfg
        self.device = device
        self.models_dir = models_dir
        self._ready = False

    @classmethod
    def from_config(cls, cfg: "CurateConfig", device: str = "cpu") -> "Stage":
        """The stage as the curation config and the engine's device choice make it."""
        return cls(getattr(cfg, cls.name), device=device, models_dir=cfg.run.models_dir)

    def setup(self) -> None:
        """Load models; :meth:`run` calls it once before the first batch."""

    def backend(self) -> dict:
        """This stage's ``backends`` entry (see :func:`backend_label`)."""
        return {}

    def process(self, row: dict) -> StageResult:
        raise NotImplementedError(f"{type(self).__name__} implements neither process nor process_batch")

    def process_batch(self, rows: list[dict]) -> list[StageResult]:
        """One result per row. Model stages override this to run their network on the batch;
        the default calls :meth:`process` per row, a failing row becoming its own error."""
        return [self._guarded(row) for row in rows]

    # -- the engine's entry point -----------------------------------------------------------
    def run(self, rows: list[dict]) -> list[dict]:
        """Apply the stage to ``rows`` in place (and return them); never raises for a clip."""
        if not self._ready:
            self.setup()
            self._ready = True
        for row in rows:
            for col, default in self.columns.items():
                row.setdefault(col, default)
        live = [r for r in rows if not (self.skip_rejected and not is_alive(r))]
        if live:
            for row, res in zip(live, self._results(live)):
                self._apply(row, res)
        return rows

    def _guarded(self, row: dict) -> StageResult:
        try:
            return self.process(row)
        except Exception as e:  # one bad clip must not stop the job
            log.warning("stage %s failed on %s: %s", self.name, row.get("clip_id"), e)
            log.debug("%s", traceback.format_exc())
            return StageResult.error(e)

    def _results(self, rows: list[dict]) -> list[StageResult]:
        try:
            results = self.process_batch(rows)
            if len(results) != len(rows):
                raise RuntimeError(f"{type(self).__name__}.process_batch gave {len(results)} results for {len(rows)} rows")
            return results
        except Exception as e:
            if len(rows) == 1:
                log.warning("stage %s failed on %s: %s", self.name, rows[0].get("clip_id"), e)
                log.debug("%s", traceback.format_exc())
                return [StageResult.error(e)]
            # find the row that broke the batch: the others still get their results
            return [self._results([r])[0] for r in rows]

    def _apply(self, row: dict, res: StageResult) -> None:
        if res.outcome is Outcome.ERROR:
            row.update(reject_stage=self.name, reject_reason=res.reason, status="error")
            return
        merge_backend(row, self.name, self.backend() if res.backend is None else res.backend)
        row.update(res.columns)
        where = res.substage or self.name
        if res.outcome is Outcome.REJECTED and is_alive(row):
            row.update(reject_stage=where, reject_reason=res.reason, status="rejected")
        elif res.outcome is Outcome.ST2V_BLOCKED and row.get("st2v_block") is None:
            row["st2v_block"] = f"{where}: {res.reason}"


def is_alive(row: dict) -> bool:
    return row.get("reject_stage") is None


def merge_backend(row: dict, stage: str, info: dict) -> None:
    if not info:
        return
    backends = json.loads(row.get("backends") or "{}")
    backends[stage] = info
    row["backends"] = json.dumps(backends, sort_keys=True, separators=(",", ":"))
