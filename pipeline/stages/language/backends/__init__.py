"""Language-model backends of the character filter and the captioner (see base.py).

:func:`get_backend` builds the configured backend once per process, so the character filter
and the caption stage running in the same worker share one loaded model / connection pool.
"""
from __future__ import annotations

import threading
from typing import Optional

from pipeline.stages.language.config import CaptionConfig, CharacterFilterConfig, LLMConfig

_CACHE: dict = {}
_LOCK = threading.Lock()


def make_backend(llm: LLMConfig, character: CharacterFilterConfig, caption: CaptionConfig,
                 models_dir: Optional[str] = None, device: Optional[str] = None):
    if llm.backend == "rules":
        from pipeline.stages.language.backends.rules import RulesBackend

        return RulesBackend(llm, character, caption)
    if llm.backend == "openai":
        from pipeline.stages.language.backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(llm, character, caption)
    if llm.backend == "transformers":
        from pipeline.stages.language.backends.transformers_vlm import TransformersVLMBackend

        return TransformersVLMBackend(llm, character, caption, models_dir=models_dir, device=device)
    raise ValueError(f"unknown llm backend {llm.backend!r}; expected rules, transformers or openai")


def get_backend(llm: LLMConfig, character: CharacterFilterConfig, caption: CaptionConfig,
                models_dir: Optional[str] = None, device: Optional[str] = None):
    """The process-wide backend for this configuration, set up on first use."""
    key = (llm.model_dump_json(), character.model_dump_json(), caption.model_dump_json(), models_dir, device)
    with _LOCK:
        be = _CACHE.get(key)
        if be is None:
            be = make_backend(llm, character, caption, models_dir, device)
            be.setup()
            _CACHE[key] = be
        return be
