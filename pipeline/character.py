"""Prominent-character filter: keep clips with a clear, prominent character (MoCha's data filter).

The configured backend (rules over the face facts, a local VLM, or an OpenAI-compatible server)
answers with a :class:`schemas.caption.CharacterVerdict`, stored as JSON in
``character_verdict``. Clips without a prominent character are rejected with
``no_prominent_character``; a model that never answers valid JSON gives ``llm_invalid_output``,
one that cannot be reached ``llm_unavailable``.
"""
from __future__ import annotations

from typing import Any, Optional

from pipeline.config import CaptionConfig, CharacterFilterConfig, CurateConfig, LLMConfig
from pipeline.llm import get_backend
from pipeline.llm.base import LLMError
from pipeline.stage import ClipStage, is_alive, run_stage
from schemas.caption import CharacterVerdict, dumps


class LLMClipStage(ClipStage):
    """A stage whose answers come from the LLM backend, in batches.

    ``process_batch(rows)`` asks the backend once for all live rows (so a VLM batches them and a
    server gets them concurrently), then runs each row through :func:`run_stage` with its
    answer, keeping the per-clip error handling of the stage protocol. ``process(row)`` alone
    asks for one row."""

    def __init__(self, cfg: Any = None, llm: Optional[LLMConfig] = None,
                 character: Optional[CharacterFilterConfig] = None, caption: Optional[CaptionConfig] = None,
                 models_dir: Optional[str] = None):
        super().__init__(cfg)
        self.llm_cfg = llm or LLMConfig()
        self.character_cfg = character or CharacterFilterConfig()
        self.caption_cfg = caption or CaptionConfig()
        self.models_dir = models_dir
        self.be = None
        self._answers: dict[int, Any] = {}

    @classmethod
    def from_config(cls, c: CurateConfig):
        return cls(llm=c.llm, character=c.character, caption=c.caption, models_dir=c.run.models_dir)

    def enabled(self) -> bool:
        return True

    def setup(self) -> None:
        if self.enabled():
            self.be = get_backend(self.llm_cfg, self.character_cfg, self.caption_cfg, self.models_dir)

    def backend(self) -> dict:
        return self.be.info() if self.be is not None else {"backend": "disabled"}

    def ask(self, rows: list[dict]) -> list:
        raise NotImplementedError

    def answer(self, row: dict):
        if id(row) in self._answers:
            return self._answers.pop(id(row))
        return self.ask([row])[0]

    def answer_of(self, row: dict, kind: type):
        """This row's answer when it is a ``kind``; otherwise the reject dict of its failure."""
        res = self.answer(row)
        if isinstance(res, Exception):
            return self.failed(res)
        assert isinstance(res, kind)
        return res

    def failed(self, err: Exception) -> Optional[dict]:
        """The reject of a failed answer (an LLM error), or re-raise any other error of the row
        so that run_stage records it as that clip's error."""
        if isinstance(err, LLMError):
            return self.reject(err.reason, _backend={**self.backend(), "error": str(err)[:300]})
        raise err

    def process_batch(self, rows: list[dict]) -> list[dict]:
        if not self._ready:
            self.setup()
            self._ready = True
        live = [r for r in rows if is_alive(r)] if self.enabled() else []
        if live:
            try:
                answers = self.ask(live)
            except Exception as e:  # never lose the batch to one backend failure
                answers = [e] * len(live)
            for r, a in zip(live, answers):
                self._answers[id(r)] = a
        try:
            return [run_stage(self, r) for r in rows]
        finally:
            self._answers.clear()


class CharacterFilterStage(LLMClipStage):
    name = "character"
    columns = {"character_verdict": None}

    def __init__(self, cfg: Optional[CharacterFilterConfig] = None, llm: Optional[LLMConfig] = None,
                 caption: Optional[CaptionConfig] = None, models_dir: Optional[str] = None, **kw):
        cfg = cfg or kw.pop("character", None) or CharacterFilterConfig()
        super().__init__(cfg, llm=llm, character=cfg, caption=caption, models_dir=models_dir)

    def enabled(self) -> bool:
        return self.cfg.enabled

    def ask(self, rows):
        return self.be.verdicts(rows)

    def process(self, row: dict) -> dict:
        if not self.enabled():
            return {}
        res = self.answer_of(row, CharacterVerdict)
        if isinstance(res, dict):
            return res
        out = {"character_verdict": dumps(res)}
        if not res.has_prominent_character:
            return self.reject("no_prominent_character", **out)
        return out
