"""The language-model backend interface of the character filter and the captioner.

A backend answers two questions per clip: the prominent-character verdict and the structured
caption, each a pydantic model of ``schemas.caption``. Model backends (a local VLM, an
OpenAI-compatible server) only implement :meth:`ChatBackend.complete` (one attempt per query,
raw text back); this module turns clips into queries, parses the answers strictly and retries,
so every backend fails the same way: :class:`LLMInvalidOutput` (ledger ``llm_invalid_output``)
when the answer never validates, :class:`LLMUnavailable` (``llm_unavailable``) when the model
cannot be reached. Nothing here raises for one clip's bad answer.
"""
from __future__ import annotations

import json
import logging
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
from pydantic import BaseModel, ValidationError

from pipeline.stages.language import facts
from pipeline.stages.language.config import CaptionConfig, CharacterFilterConfig, LLMConfig
from schemas.caption import Caption, CharacterVerdict, caption_json_schema, verdict_json_schema

log = logging.getLogger(__name__)


class LLMError(Exception):
    """``final``: the backend already retried this as far as it should (an HTTP client's own
    retry policy, or a request the server refused), so :meth:`ChatBackend.ask` does not re-ask."""

    reason = "llm_error"

    def __init__(self, *args, final: bool = False):
        super().__init__(*args)
        self.final = final


class LLMUnavailable(LLMError):
    """The model could not be reached or did not answer (connection, timeout, HTTP error)."""

    reason = "llm_unavailable"


class LLMInvalidOutput(LLMError):
    """The model answered, but not with JSON valid against the expected schema."""

    reason = "llm_invalid_output"


Result = Union[BaseModel, Exception]

_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.S)


def parse_strict(text: str, model: type[BaseModel]) -> BaseModel:
    """One JSON object valid against ``model``. The only leniency is surrounding whitespace
    and a single Markdown code fence, which chat models add even when told not to."""
    if not isinstance(text, str):
        raise LLMInvalidOutput(f"expected text, got {type(text).__name__}")
    body = text.strip()
    m = _FENCE.match(body)
    if m:
        body = m.group(1).strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise LLMInvalidOutput(f"not JSON ({e.msg} at char {e.pos}): {body[:120]!r}") from None
    if not isinstance(data, dict):
        raise LLMInvalidOutput(f"expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise LLMInvalidOutput(f"{model.__name__} invalid at {loc}: {first['msg']}") from None


@dataclass
class Query:
    """One request to a chat model: instructions, keyframes (RGB uint8), the expected schema."""

    task: str  # "character" or "caption"
    system: str
    text: str
    schema: type[BaseModel]
    images: list[np.ndarray] = field(default_factory=list)
    clip_id: Optional[str] = None
    # per-backend encodings of the images (e.g. data URLs), reused by retries
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def json_schema(self) -> dict:
        return schema_of(self.schema)


_SCHEMA_CACHE: dict = {}


def schema_of(model: type[BaseModel]) -> dict:
    """JSON Schema of an answer model, computed once (pydantic takes milliseconds per call).
    Callers must not modify the returned dict."""
    if model not in _SCHEMA_CACHE:
        _SCHEMA_CACHE[model] = verdict_json_schema() if model is CharacterVerdict else (
            caption_json_schema() if model is Caption else model.model_json_schema())
    return _SCHEMA_CACHE[model]


class LLMBackend(ABC):
    """What the stages call. ``verdicts``/``captions`` return one result per row, in order:
    the parsed model, or an exception (an :class:`LLMError`, or another error of that row such
    as an undecodable video) that the stage turns into that row's ledger entry."""

    name = "backend"
    fallback = False  # True for the embedded rules, which read measured facts instead of pixels

    def __init__(self, cfg: LLMConfig, character: CharacterFilterConfig, caption: CaptionConfig):
        self.cfg, self.character_cfg, self.caption_cfg = cfg, character, caption

    def setup(self) -> None:
        """Load the model / open the connection pool; once per worker."""

    def info(self) -> dict:
        return {"backend": self.name, "fallback": self.fallback}

    @abstractmethod
    def verdicts(self, rows: Sequence[dict]) -> list[Result]: ...

    @abstractmethod
    def captions(self, rows: Sequence[dict], verdicts: Sequence[Optional[CharacterVerdict]] = ()) -> list[Result]: ...


SYSTEM = (
    "You annotate video clips for a dataset of talking characters. You see keyframes of one clip "
    "in time order and facts measured on it. Answer with exactly one JSON object that validates "
    "against the JSON Schema given, with no other text."
)

VERDICT_TASK = (
    "Does this clip show a clear, prominent character (a person or a humanlike character whose "
    "face is visible and who is the subject of the shot)? Count the characters on screen. Tag "
    "characters Person1, Person2 ... with Person1 the most prominent face (the first face track "
    "below). Give a short reason."
)

CAPTION_TASK = (
    "Describe the clip. List every character as Person1, Person2 ... in the order of the face "
    "tracks below: appearance (hair, clothing, age, distinctive features, no names), position in "
    "frame, facing, emotion, actions and body language. Describe the environment and the camera "
    "(shot size, angle, movement). Do not guess who speaks: set speaking to false and leave turns "
    "empty, both are filled from the measured speaking timeline and lip-sync."
)


def build_query(task: str, row: dict, images: list[np.ndarray], verdict: Optional[CharacterVerdict] = None) -> Query:
    schema = CharacterVerdict if task == "character" else Caption
    facts_text = facts.facts_text(row)
    if verdict is not None:
        facts_text += f"\nFilter verdict: {verdict.num_characters} character(s), central {verdict.central_character}."
    instructions = VERDICT_TASK if task == "character" else CAPTION_TASK
    schema_json = json.dumps(schema_of(schema), separators=(",", ":"))
    text = f"{instructions}\n\nMeasured facts:\n{facts_text}\n\nJSON Schema:\n{schema_json}"
    return Query(task=task, system=SYSTEM, text=text, schema=schema, images=images, clip_id=row.get("clip_id"))


class ChatBackend(LLMBackend):
    """A backend that talks to a chat model: keyframes + facts in, strict JSON out."""

    def backoff(self, attempt: int) -> float:
        return min(self.cfg.backoff_max_s, self.cfg.backoff_s * (2 ** attempt))

    @abstractmethod
    def complete(self, queries: Sequence[Query]) -> list[Union[str, LLMError]]:
        """One attempt per query: the raw answer text, or the LLMError of that attempt."""

    def keyframes(self, row: dict) -> list[np.ndarray]:
        from pipeline.stages.language.keyframes import sample_keyframes

        return sample_keyframes(row["video"], self.cfg.max_keyframes, self.cfg.keyframe_max_side)

    def ask(self, queries: Sequence[Query]) -> list[Result]:
        """Complete and parse every query; failed ones are retried together, with backoff,
        up to ``cfg.retries`` times, except errors the backend marks final. The last error of a
        query is its result."""
        results: list[Result] = [LLMUnavailable("not attempted")] * len(queries)
        pending = list(range(len(queries)))
        for attempt in range(self.cfg.retries + 1):
            if not pending:
                break
            if attempt:
                time.sleep(self.backoff(attempt - 1))
            try:
                outs = self.complete([queries[i] for i in pending])
            except Exception as e:  # a backend bug or a dead model must not kill the batch
                log.warning("%s: complete() failed: %s", self.name, e)
                outs = [LLMUnavailable(f"{type(e).__name__}: {e}")] * len(pending)
            failed = []
            for i, out in zip(pending, outs):
                if isinstance(out, Exception):
                    results[i] = out
                    if getattr(out, "final", False):
                        continue
                else:
                    try:
                        results[i] = parse_strict(out, queries[i].schema)
                        continue
                    except LLMInvalidOutput as e:
                        results[i] = e
                failed.append(i)
                log.info("%s: %s attempt %d for %s: %s", self.name, queries[i].task, attempt + 1,
                         queries[i].clip_id, results[i])
            pending = failed
        return results

    def _run(self, task: str, rows: Sequence[dict], verdicts: Sequence[Optional[CharacterVerdict]] = ()) -> list[Result]:
        results: list[Optional[Result]] = [None] * len(rows)
        queries, where = [], []
        for i, row in enumerate(rows):
            try:
                images = self.keyframes(row)
                v = verdicts[i] if i < len(verdicts) else None
                queries.append(build_query(task, row, images, v))
                where.append(i)
            except Exception as e:  # e.g. an undecodable clip: that row's error only
                results[i] = e
        for i, res in zip(where, self.ask(queries) if queries else []):
            results[i] = res
        return results  # type: ignore[return-value]

    def verdicts(self, rows):
        return self._run("character", rows)

    def captions(self, rows, verdicts=()):
        return self._run("caption", rows, verdicts)
