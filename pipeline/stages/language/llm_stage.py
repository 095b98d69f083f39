"""The base of the stages whose answers come from the shared language-model backend.

The backend is asked once per batch (so a local VLM batches the clips and a server gets them
concurrently); each answer then becomes that row's result. A backend that cannot answer
(:class:`LLMError`) rejects the row with its reason; any other failure is that row's error.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from pipeline.engine.stage import Stage, StageResult
from pipeline.stages.language.backends import get_backend
from pipeline.stages.language.backends.base import LLMError
from pipeline.stages.language.config import CaptionConfig, CharacterFilterConfig, LLMConfig

if TYPE_CHECKING:
    from pipeline.engine.config import CurateConfig


class LLMStage(Stage):
    def __init__(self, cfg: Any = None, device: str = "cpu", models_dir: Optional[str] = None,
                 llm: Optional[LLMConfig] = None, character: Optional[CharacterFilterConfig] = None,
                 caption: Optional[CaptionConfig] = None):
        super().__init__(cfg, device, models_dir)
        self.llm_cfg = llm or LLMConfig()
        self.character_cfg = character or CharacterFilterConfig()
        self.caption_cfg = caption or CaptionConfig()
        self.be = None

    @classmethod
    def from_config(cls, cfg: "CurateConfig", device: str = "cpu") -> "LLMStage":
        return cls(getattr(cfg, cls.name), device, cfg.run.models_dir, llm=cfg.llm, character=cfg.character,
                   caption=cfg.caption)

    def enabled(self) -> bool:
        return self.cfg.enabled

    def setup(self) -> None:
        if self.enabled():
            self.be = get_backend(self.llm_cfg, self.character_cfg, self.caption_cfg, self.models_dir, self.device)

    def backend(self) -> dict:
        return self.be.info() if self.be is not None else {"backend": "disabled", "fallback": False}

    def ask(self, rows: list[dict]) -> list:
        """One answer per row from the backend: a parsed model or that row's exception."""
        raise NotImplementedError

    def decide(self, row: dict, answer: Any) -> StageResult:
        """The row's result from its (valid) answer."""
        raise NotImplementedError

    def process_batch(self, rows: list[dict]) -> list[StageResult]:
        if not self.enabled():
            return [StageResult.kept() for _ in rows]
        try:
            answers = self.ask(rows)
        except Exception as e:  # never lose the batch to one backend failure
            answers = [e] * len(rows)
        return [self._result(row, a) for row, a in zip(rows, answers)]

    def _result(self, row: dict, answer: Any) -> StageResult:
        if isinstance(answer, LLMError):
            return StageResult.rejected(answer.reason, backend={**self.backend(), "error": str(answer)[:300]})
        if isinstance(answer, Exception):
            return StageResult.error(answer)
        try:
            return self.decide(row, answer)
        except Exception as e:
            return StageResult.error(e)
