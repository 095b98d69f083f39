"""Structured captions and the single-clip MoCha prompt.

The backend's caption (:class:`schemas.caption.Caption`) is completed with the measured facts
(each character's face track and speaking state from lip-sync/VAD, the shot size from the face
stage), stored as JSON in ``caption``, and rendered with :func:`schemas.prompt.render_prompt`
into ``prompt`` within the trainer's token budget.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Optional

from pipeline.character import LLMClipStage
from pipeline.config import CaptionConfig, CharacterFilterConfig, LLMConfig
from pipeline.llm.facts import apply_facts
from schemas.caption import Caption, CharacterVerdict, dumps
from schemas.prompt import render_prompt

log = logging.getLogger(__name__)


def load_tokenizer(name_or_path: Optional[str], models_dir: Optional[str] = None) -> Any:
    """The prompt-budget tokenizer (a local path, registry name or cached hub id), or None."""
    if not name_or_path:
        return None
    from transformers import AutoTokenizer

    from pipeline.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(name_or_path, models_dir))


def row_verdict(row: dict) -> Optional[CharacterVerdict]:
    raw = row.get("character_verdict")
    if not raw:
        return None
    try:
        return CharacterVerdict.model_validate_json(raw)
    except Exception:
        return None


class CaptionStage(LLMClipStage):
    name = "caption"
    columns = {"caption": None, "prompt": None}

    def __init__(self, cfg: Optional[CaptionConfig] = None, llm: Optional[LLMConfig] = None,
                 character: Optional[CharacterFilterConfig] = None, models_dir: Optional[str] = None,
                 tokenizer: Any = None, **kw):
        cfg = cfg or kw.pop("caption", None) or CaptionConfig()
        super().__init__(cfg, llm=llm, character=character, caption=cfg, models_dir=models_dir)
        self.tokenizer = tokenizer

    def enabled(self) -> bool:
        return self.cfg.enabled

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

    def process(self, row: dict) -> dict:
        if not self.enabled():
            return {}
        res = self.answer_of(row, Caption)
        if isinstance(res, dict):
            return res
        cap = apply_facts(res, row, self.character_cfg, self.cfg)
        rendered = render_prompt(cap, self.tokenizer, self.cfg.token_budget)
        if not rendered.fits:
            log.warning("clip %s: prompt needs %d tokens even without attributes (budget %d)",
                        row.get("clip_id"), rendered.num_tokens, self.cfg.token_budget)
        return {"caption": dumps(cap), "prompt": rendered.text}


def caption_of(row: dict) -> Optional[Caption]:
    """The row's caption as a model (None when absent or not valid)."""
    raw = row.get("caption")
    if not raw:
        return None
    try:
        return Caption.model_validate(json.loads(raw))
    except Exception:
        return None
