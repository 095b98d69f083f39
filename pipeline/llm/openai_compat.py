"""Backend for an OpenAI-compatible chat endpoint (vLLM, SGLang, or a hosted API).

How clusters caption at scale: one server holds the VLM and batches concurrent requests, curation
workers send many requests at once. Here: at most ``concurrency`` requests in flight per worker
(a fixed thread pool), a timeout per request, retries with exponential backoff (in
:class:`ChatBackend.ask`), keyframes as JPEG data URLs, and the answer schema sent as
``response_format`` so servers with guided decoding emit valid JSON.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Union

import requests

from pipeline.llm.base import ChatBackend, LLMError, LLMInvalidOutput, LLMUnavailable, Query
from pipeline.llm.keyframes import jpeg_data_url

log = logging.getLogger(__name__)


class OpenAICompatBackend(ChatBackend):
    name = "openai"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.url = self.cfg.endpoint.rstrip("/") + "/chat/completions"
        self._pool: Optional[ThreadPoolExecutor] = None
        self._session: Optional[requests.Session] = None
        self._lock = threading.Lock()
        self.model = self.cfg.model

    def setup(self) -> None:
        with self._lock:
            if self._pool is not None:
                return
            s = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=self.cfg.concurrency, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
            if key:
                s.headers["Authorization"] = f"Bearer {key}"
            self._session = s
            # The pool size is the concurrency limit: no more requests than workers can be in flight.
            self._pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="llm-http")
        if self.model is None:
            self.model = self._served_model()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._session is not None:
            self._session.close()
            self._session = None

    def info(self) -> dict:
        return {"backend": self.name, "model": self.model, "endpoint": self.cfg.endpoint}

    def _served_model(self) -> Optional[str]:
        """The server's first model when none is configured (vLLM serves exactly one)."""
        try:
            r = self._session.get(self.cfg.endpoint.rstrip("/") + "/models", timeout=self.cfg.timeout_s)
            r.raise_for_status()
            return r.json()["data"][0]["id"]
        except Exception as e:
            log.warning("could not list models at %s (%s); requests will name no model", self.cfg.endpoint, e)
            return None

    def payload(self, q: Query) -> dict:
        content = [{"type": "text", "text": q.text}]
        content += [{"type": "image_url", "image_url": {"url": jpeg_data_url(img)}} for img in q.images]
        body = {
            "messages": [{"role": "system", "content": q.system}, {"role": "user", "content": content}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_new_tokens,
        }
        if self.model:
            body["model"] = self.model
        if self.cfg.guided_json:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": q.task, "schema": q.json_schema()},
            }
        return body

    def _one(self, q: Query) -> Union[str, LLMError]:
        try:
            r = self._session.post(self.url, json=self.payload(q), timeout=self.cfg.timeout_s)
        except requests.Timeout:
            return LLMUnavailable(f"no answer from {self.url} within {self.cfg.timeout_s:g} s")
        except requests.ConnectionError as e:
            return LLMUnavailable(f"cannot connect to {self.url}: {type(e).__name__}")
        except requests.RequestException as e:
            return LLMUnavailable(f"request to {self.url} failed: {e}")
        if r.status_code != 200:
            return LLMUnavailable(f"HTTP {r.status_code} from {self.url}: {r.text[:200]!r}")
        try:
            msg = r.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            return LLMUnavailable(f"{self.url} did not return a chat completion: {r.text[:200]!r}")
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str):
            return LLMInvalidOutput("chat completion without text content")
        return content

    def complete(self, queries: Sequence[Query]) -> list[Union[str, LLMError]]:
        if self._pool is None:
            self.setup()
        return list(self._pool.map(self._one, queries))
