"""Backend for an OpenAI-compatible chat endpoint (vLLM, SGLang, or a hosted API).

How clusters caption at scale: one server holds the VLM and batches concurrent requests, curation
workers send many requests at once. Here: at most ``concurrency`` requests in flight per worker
(a fixed thread pool over one ``httpx`` client whose pool holds as many keep-alive connections),
separate connect and read timeouts, and retries made for a shared server (:mod:`.retry`):
connection errors, timeouts, 429 and 5xx are retried with jittered exponential backoff that waits
at least what ``Retry-After`` asks; any other 4xx is final at once. Keyframes travel as JPEG data
URLs, the answer schema as ``response_format`` so servers with guided decoding emit valid JSON;
an answer that still fails validation is re-asked by :meth:`ChatBackend.ask`.

The API key (``llm.api_key``, else the variable ``llm.api_key_env`` names) goes only into the
``Authorization`` header: error messages are scrubbed of it, and the config dumps mask it.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Union
from urllib.parse import urlsplit, urlunsplit

import httpx

from pipeline.stages.language.backends.base import ChatBackend, LLMError, LLMInvalidOutput, LLMUnavailable, Query
from pipeline.stages.language.backends.retry import Backoff, parse_retry_after, retryable_status
from pipeline.stages.language.keyframes import jpeg_data_url

log = logging.getLogger(__name__)


def _display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages and the backends label."""
    p = urlsplit(url)
    if p.username is None and p.password is None:
        return url
    host = p.hostname or ""
    return urlunsplit((p.scheme, host + (f":{p.port}" if p.port else ""), p.path, p.query, p.fragment))


class OpenAICompatBackend(ChatBackend):
    name = "openai"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        parts = urlsplit(self.cfg.endpoint.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"llm.endpoint {_display_url(self.cfg.endpoint)!r} is not an http(s) URL")
        self.base = self.cfg.endpoint.rstrip("/")
        self.url = _display_url(self.base) + "/chat/completions"
        self.model = self.cfg.model
        self._key = self.cfg.api_key_value()
        self.backoff_policy = Backoff(self.cfg.backoff_s, self.cfg.backoff_max_s, self.cfg.retry_after_max_s)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._client: Optional[httpx.Client] = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._pool is not None:
                return
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self._key:
                headers["Authorization"] = f"Bearer {self._key}"
            n = self.cfg.concurrency
            # Small request/response exchanges: never wait for Nagle's algorithm. httpx's own
            # transport retries are off: the policy below decides what is retried.
            transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                                            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], retries=0)
            self._client = httpx.Client(transport=transport, headers=headers, follow_redirects=False,
                                        timeout=httpx.Timeout(self.cfg.timeout_s, connect=self.cfg.connect_timeout_s))
            # The pool size is the concurrency limit: no more requests than threads can be in flight.
            self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="llm-http")
        if self.model is None:
            self.model = self._served_model()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def info(self) -> dict:
        return {**super().info(), "model": self.model, "endpoint": _display_url(self.cfg.endpoint)}

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _served_model(self) -> Optional[str]:
        """The server's first model when none is configured (vLLM serves exactly one)."""
        try:
            r = self._client.get(self.base + "/models")
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}")
            return r.json()["data"][0]["id"]
        except Exception as e:
            log.warning("could not list models at %s (%s); requests will name no model", _display_url(self.base),
                        self._scrub(f"{type(e).__name__}: {e}"))
            return None

    def payload(self, q: Query) -> dict:
        content = [{"type": "text", "text": q.text}]
        if "data_urls" not in q.cache:  # encode once; retries resend the same images
            q.cache["data_urls"] = [jpeg_data_url(img) for img in q.images]
        content += [{"type": "image_url", "image_url": {"url": u}} for u in q.cache["data_urls"]]
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

    # -- one request, with its retries ----------------------------------------------------------
    def _attempt(self, body: bytes) -> tuple[Union[str, LLMError], bool, Optional[float]]:
        """One POST: (answer or error, whether a retry may help, the server's Retry-After)."""
        try:
            r = self._client.post(self.base + "/chat/completions", content=body)
        except httpx.ConnectTimeout:
            return LLMUnavailable(f"could not connect to {self.url} within {self.cfg.connect_timeout_s:g} s"), True, None
        except httpx.TimeoutException:
            return LLMUnavailable(f"no answer from {self.url} within {self.cfg.timeout_s:g} s"), True, None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
            return LLMUnavailable(f"cannot connect to {self.url}: {type(e).__name__}: {e}"), True, None
        except httpx.HTTPError as e:  # a malformed URL, an unsupported protocol: no retry helps
            return LLMUnavailable(f"bad HTTP exchange with {self.url}: {type(e).__name__}: {e}"), False, None
        text = r.text
        if r.status_code != 200:
            retry = retryable_status(r.status_code)
            hint = "" if retry else " (not retried: the server refused the request itself" + (
                "; check llm.api_key / llm.api_key_env)" if r.status_code in (401, 403) else ")")
            return (LLMUnavailable(f"HTTP {r.status_code} from {self.url}{hint}: {text[:200]!r}"), retry,
                    parse_retry_after(r.headers.get("Retry-After")))
        try:
            msg = json.loads(text)["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            # the server answered, but not a chat completion: as good as an invalid answer, re-asked
            return LLMInvalidOutput(f"{self.url} did not return a chat completion: {text[:200]!r}"), False, None
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str):
            return LLMInvalidOutput("chat completion without text content"), False, None
        return content, False, None

    def _one(self, q: Query) -> Union[str, LLMError]:
        body = json.dumps(self.payload(q)).encode()
        attempt = 0
        while True:
            out, retry, retry_after = self._attempt(body)
            if not isinstance(out, LLMUnavailable):
                return out
            out = LLMUnavailable(self._scrub(str(out)), final=True)  # the transport has had its retries
            if not retry:
                return out
            if attempt >= self.cfg.retries:
                return LLMUnavailable(f"{out} (after {attempt + 1} attempts)", final=True)
            wait = self.backoff_policy.delay(attempt, retry_after)
            if wait is None:
                return LLMUnavailable(f"{out} (the server asks to retry after {retry_after:g} s, longer than "
                                      f"llm.retry_after_max_s={self.cfg.retry_after_max_s:g})", final=True)
            log.info("%s: %s for %s; retry %d in %.2f s", self.name, out, q.clip_id, attempt + 1, wait)
            time.sleep(wait)
            attempt += 1

    def complete(self, queries: Sequence[Query]) -> list[Union[str, LLMError]]:
        if self._pool is None:
            self.setup()
        return list(self._pool.map(self._one, queries))
