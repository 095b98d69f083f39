"""Backend for an OpenAI-compatible chat endpoint (vLLM, SGLang, or a hosted API).

How clusters caption at scale: one server holds the VLM and batches concurrent requests, curation
workers send many requests at once. Here: at most ``concurrency`` requests in flight per worker
(a fixed thread pool, each thread with its own keep-alive connection; stdlib ``http.client``, so
no client library), a timeout per request, retries with exponential backoff (in
:class:`ChatBackend.ask`), keyframes as JPEG data URLs, and the answer schema sent as
``response_format`` so servers with guided decoding emit valid JSON.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Union
from urllib.parse import urlsplit

from pipeline.stages.language.backends.base import ChatBackend, LLMError, LLMInvalidOutput, LLMUnavailable, Query
from pipeline.stages.language.keyframes import jpeg_data_url

log = logging.getLogger(__name__)


class OpenAICompatBackend(ChatBackend):
    name = "openai"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        parts = urlsplit(self.cfg.endpoint.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"llm.endpoint {self.cfg.endpoint!r} is not an http(s) URL")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path or ""
        self.url = self.cfg.endpoint.rstrip("/") + "/chat/completions"
        self._pool: Optional[ThreadPoolExecutor] = None
        self._local = threading.local()  # one persistent connection per pool thread
        self._lock = threading.Lock()
        self.model = self.cfg.model
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def setup(self) -> None:
        with self._lock:
            if self._pool is not None:
                return
            # The pool size is the concurrency limit: no more requests than threads can be in flight.
            self._pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="llm-http")
        if self.model is None:
            self.model = self._served_model()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def info(self) -> dict:
        return {**super().info(), "model": self.model, "endpoint": self.cfg.endpoint}

    # -- transport ----------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.cfg.timeout_s)
            conn.connect()
            # small request/response exchanges: never wait for Nagle's algorithm
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _http(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, bytes]:
        """One exchange on this thread's keep-alive connection; a stale pooled connection
        (closed by the server between requests) is reopened once."""
        for attempt in (0, 1):
            fresh = getattr(self._local, "conn", None) is None
            conn = self._connection()
            try:
                conn.request(method, self.base_path + path, body=body, headers=self.headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self._drop_connection()
                return resp.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_connection()
                if fresh or attempt:
                    raise
            except BaseException:
                self._drop_connection()
                raise
        raise AssertionError("unreachable")

    def _served_model(self) -> Optional[str]:
        """The server's first model when none is configured (vLLM serves exactly one)."""
        try:
            status, data = self._http("GET", "/models")
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            return json.loads(data)["data"][0]["id"]
        except Exception as e:
            self._drop_connection()
            log.warning("could not list models at %s (%s); requests will name no model", self.cfg.endpoint, e)
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

    def _one(self, q: Query) -> Union[str, LLMError]:
        body = json.dumps(self.payload(q)).encode()
        try:
            status, data = self._http("POST", "/chat/completions", body)
        except (socket.timeout, TimeoutError):
            return LLMUnavailable(f"no answer from {self.url} within {self.cfg.timeout_s:g} s")
        except (ConnectionError, OSError) as e:
            return LLMUnavailable(f"cannot connect to {self.url}: {type(e).__name__}: {e}")
        except http.client.HTTPException as e:
            return LLMUnavailable(f"bad HTTP exchange with {self.url}: {type(e).__name__}: {e}")
        text = data.decode("utf-8", errors="replace")
        if status != 200:
            return LLMUnavailable(f"HTTP {status} from {self.url}: {text[:200]!r}")
        try:
            msg = json.loads(text)["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            return LLMUnavailable(f"{self.url} did not return a chat completion: {text[:200]!r}")
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str):
            return LLMInvalidOutput("chat completion without text content")
        return content

    def complete(self, queries: Sequence[Query]) -> list[Union[str, LLMError]]:
        if self._pool is None:
            self.setup()
        return list(self._pool.map(self._one, queries))
