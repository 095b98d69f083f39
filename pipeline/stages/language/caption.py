"""Structured captions and the single-clip MoCha prompt.

The backend's caption (:class:`schemas.caption.Caption`) is completed with the measured facts
(each character's face track, speaking state and turns from the speaking timeline or lip-sync/
VAD, the shot size from the face stage), stored as JSON in ``caption``, and rendered with
:func:`schemas.prompt.render_prompt` into ``prompt`` within the trainer's token budget. The
row's ``speaking_turns`` get the caption's tags, so the timeline and the prompt name the same
characters.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from pipeline.engine.stage import StageResult
from pipeline.stages.language.facts import apply_facts, retag_turns
from pipeline.stages.language.llm_stage import LLMStage
from schemas.caption import Caption, CharacterVerdict, dumps
from schemas.prompt import render_prompt

log = logging.getLogger(__name__)


def load_tokenizer(name_or_path: Optional[str], models_dir: Optional[str] = None) -> Any:
    """The prompt-budget tokenizer (a local path, registry name or cached hub id), or None."""
    if not name_or_path:
        return None
    from transformers import AutoTokenizer

    from common.weights import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(name_or_path, models_dir))


def row_verdict(row: dict) -> Optional[CharacterVerdict]:
    raw = row.get("character_verdict")
    if not raw:
        return None
    try:
        return CharacterVerdict.model_validate_json(raw)
    except Exception:
        return None


class CaptionStage(LLMStage):
    name = "caption"
    columns = {"caption": None, "prompt": None}

    def __init__(self, cfg=None, device: str = "cpu", models_dir=None, llm=None, character=None, caption=None,
                 tokenizer: Any = None):
        cfg = cfg or caption
        super().__init__(cfg, device, models_dir, llm=llm, character=character, caption=cfg)
        self.cfg = self.caption_cfg
        self.tokenizer = tokenizer

    def setup(self) -> None:
        super().setup()
        if self.tokenizer is None and self.cfg.tokenizer:
            self.tokenizer = load_tokenizer(self.cfg.tokenizer, self.models_dir)

    def backend(self) -> dict:
        info = super().backend()
        if self.enabled():
            info["tokenizer"] = self.cfg.tokenizer or ("given" if self.tokenizer is not None else "estimate")
        return info

    def ask(self, rows):
        return self.be.captions(rows, [row_verdict(r) for r in rows])

    def decide(self, row: dict, caption: Caption) -> StageResult:
        cap = apply_facts(caption, row, self.character_cfg, self.cfg)
        rendered = render_prompt(cap, self.tokenizer, self.cfg.token_budget)
        if not rendered.fits:
            log.warning("clip %s: prompt needs %d tokens even without attributes (budget %d)",
                        row.get("clip_id"), rendered.num_tokens, self.cfg.token_budget)
        out = {"caption": dumps(cap), "prompt": rendered.text}
        turns = retag_turns(row, cap)
        if turns is not None:
            out["speaking_turns"] = turns
        return StageResult.kept(**out)
