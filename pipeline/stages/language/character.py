"""Prominent-character filter: keep clips with a clear, prominent character (MoCha's data filter).

The configured backend (rules over the face facts, a local VLM, or an OpenAI-compatible server)
answers with a :class:`schemas.caption.CharacterVerdict`, stored as JSON in
``character_verdict``. Clips without a prominent character are rejected with
``no_prominent_character``; a model that never answers valid JSON gives ``llm_invalid_output``,
one that cannot be reached ``llm_unavailable``.
"""
from __future__ import annotations

from pipeline.engine.stage import StageResult
from pipeline.stages.language.llm_stage import LLMStage
from schemas.caption import CharacterVerdict, dumps


class CharacterFilterStage(LLMStage):
    name = "character"
    columns = {"character_verdict": None}

    def __init__(self, cfg=None, device: str = "cpu", models_dir=None, llm=None, character=None, caption=None):
        cfg = cfg or character
        super().__init__(cfg, device, models_dir, llm=llm, character=cfg, caption=caption)
        self.cfg = self.character_cfg

    def ask(self, rows):
        return self.be.verdicts(rows)

    def decide(self, row: dict, verdict: CharacterVerdict) -> StageResult:
        out = {"character_verdict": dumps(verdict)}
        if not verdict.has_prominent_character:
            return StageResult.rejected("no_prominent_character", **out)
        return StageResult.kept(**out)
