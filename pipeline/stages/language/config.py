"""Configs of the language-model stages: the backend they share, the prominent-character filter
and the captioner (one module, because the backend and both stages read all three)."""
from __future__ import annotations

import os
import re
from typing import Literal, Optional

from pydantic import Field, SecretStr, field_serializer

from schemas.base import Strict


class LLMConfig(Strict):
    """Backend of the prominent-character filter and the captioner."""

    # rules: embedded default over measured facts (no model); transformers: local VLM;
    # openai: an OpenAI-compatible chat server (vLLM / SGLang) for scale.
    backend: Literal["rules", "transformers", "openai"] = "rules"
    model: Optional[str] = None  # hub id or local path (transformers); served model name (openai)
    endpoint: str = "http://127.0.0.1:8000/v1"  # base URL of the OpenAI-compatible server
    # The key, read from this environment variable when set (the way to pass it: it never enters
    # a config file, a command line or run.json) ...
    api_key_env: Optional[str] = "OPENAI_API_KEY"
    # ... or given here (it wins over the variable). Never written out: dumps, run.json and the
    # resolved config show "**********". No key at all means no Authorization header is sent.
    api_key: Optional[SecretStr] = None
    # Requests in flight per worker: vLLM batches concurrent requests itself, so a few dozen keep
    # one server busy without flooding its queue. Also the size of the worker's connection pool.
    concurrency: int = Field(8, ge=1)
    # Read timeout per attempt: a VLM answer with several images can take seconds on a loaded
    # server; a minute without a byte means it is stuck.
    timeout_s: float = Field(60.0, gt=0)
    # A server on the cluster network accepts a connection within milliseconds; seconds without
    # one means it is down or unreachable, and waiting longer only delays the retry.
    connect_timeout_s: float = Field(5.0, gt=0)
    # Retries after the first attempt. The HTTP client retries connection errors, timeouts, 429 and
    # 5xx that often per request; other 4xx never (the request itself was refused). The stages
    # re-ask an answer that fails validation that often too (sampling at temperature > 0 or a
    # retry often fixes a truncated or chatty answer).
    retries: int = Field(2, ge=0)
    # Backoff of attempt k: backoff_s * 2**k capped at backoff_max_s, jittered to 50-100 % so
    # workers rejected together do not return together.
    backoff_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    # A 429/503 Retry-After is honoured (the wait is at least that) up to this long; a server
    # asking for more is treated as unavailable now rather than stalling the worker for it.
    retry_after_max_s: float = Field(120.0, ge=0)
    # Sent as response_format json_schema so vLLM/SGLang constrain decoding to the schema.
    guided_json: bool = True
    temperature: float = Field(0.0, ge=0)
    max_new_tokens: int = Field(768, ge=16)  # a 2-3 character caption is ~300-500 tokens of JSON
    # Keyframes per clip: 4 spread over a <=10 s clip show pose and setting changes at VLM cost
    # of ~4 images; more rarely changes the verdict.
    max_keyframes: int = Field(4, ge=1, le=32)
    keyframe_max_side: int = Field(448, ge=32)  # Qwen2-VL/LLaVA native tiles are 336-448 px
    batch_size: int = Field(4, ge=1)  # clips per generate() call of the local VLM
    device: Optional[str] = None  # None: cuda when the worker has a GPU, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @field_serializer("api_key", when_used="always")
    def _mask_key(self, key: Optional[SecretStr]) -> Optional[str]:
        # every dump (YAML of --print-config, run.json, cache keys) shows the mask, never the key
        return None if key is None else "**********"

    def api_key_value(self) -> Optional[str]:
        """The key to send: ``api_key``, else the variable ``api_key_env`` names, else None."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None


_SECRET_ARG = re.compile(r"^((?:--set=)?[\w.]*api_key=).+$")


def mask_secret_args(argv: list[str]) -> list[str]:
    """A command line fit to record: the value of any ``--set ...api_key=VALUE`` masked."""
    return [_SECRET_ARG.sub(r"\1**********", a) for a in argv]


class CharacterFilterConfig(Strict):
    enabled: bool = True
    # Rules backend: the dominant face track must be on screen most of the clip (a passer-by
    # or a cutaway is not a character the clip is about) ...
    min_coverage: float = Field(0.6, ge=0, le=1)
    # ... and big enough to read lips: 4 % of the frame height is a full-body shot of a seated
    # person in portrait video (LatentSync demo1), below that the mouth is a few pixels.
    min_face_height_ratio: float = Field(0.04, ge=0, le=1)
    # Other tracks count as characters when present at least this share of the clip.
    min_other_coverage: float = Field(0.3, ge=0, le=1)


class CaptionConfig(Strict):
    enabled: bool = True
    # MoCha's text encoder reads at most 256 tokens (T5-family); the prompt must fit.
    token_budget: int = Field(256, ge=16)
    # Tokenizer that counts the budget (local path or hub id in the cache, as the trainer uses);
    # None: a conservative estimate (schemas.prompt.count_tokens).
    tokenizer: Optional[str] = None
    # Multi-clip samples: MoCha trains on up to a few shots of one conversation; long groups
    # would not fit the 256-token prompt anyway.
    max_group_clips: int = Field(4, ge=1)
    # Shots further apart than this are not one continuous conversation.
    max_group_gap_s: float = Field(1.0, ge=0)
    # Across a cut, two VLM descriptions are one person when they share this share of content
    # words (Jaccard): descriptions of one person across shots reuse the salient words (hair,
    # clothing colours), different people rarely share half of them.
    min_appearance_overlap: float = Field(0.5, ge=0, le=1)
    # Facts that make a character "speaking" when the face stage gives no per-track verdict:
    # the clip is mostly speech and the lip-sync confidence says the face utters it.
    min_speech_ratio_speaking: float = Field(0.3, ge=0, le=1)
    min_sync_conf_speaking: float = Field(1.0, ge=0)
