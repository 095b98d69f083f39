"""A minimal OpenAI-compatible chat server on 127.0.0.1, for tests, the benchmark and offline
demos: fixed answers (or a function of the request), a chosen HTTP status (or one per request,
with extra headers such as ``Retry-After``), an artificial latency, and records of what arrived:
request count and times, the most requests ever in flight at once, the Authorization headers."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Union

from tests.helpers.local_server import LocalServer

Reply = Union[str, Callable[[dict, int], str]]
Status = Union[int, Callable[[int], int]]
Headers = Union[dict, Callable[[int], dict]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping past a client timeout must not block stop()
    request_queue_size = 128  # the benchmark opens 32 connections at once


class StubChatServer(LocalServer):
    def __init__(self, reply: Reply = "{}", status: Status = 200, delay_s: float = 0.0, model: str = "stub-vlm",
                 headers: Headers = None, echo_auth: bool = False):
        """``status`` and ``headers`` may be functions of the request's 1-based index; with
        ``echo_auth`` an error body repeats the request's Authorization header (a careless proxy)."""
        self.reply, self.status, self.delay_s, self.model = reply, status, delay_s, model
        self.headers, self.echo_auth = headers or {}, echo_auth
        self.arrivals: list[float] = []  # time.monotonic() of each POST
        self.auth: list = []  # the Authorization header of each request (None when absent)
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self._url: Optional[str] = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("stub server not started")
        return self._url

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, payload: bytes, ctype: str = "application/json", extra: dict = None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    for k, v in (extra or {}).items():
                        self.send_header(k, str(v))
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def do_GET(self):
                with stub._lock:
                    stub.auth.append(self.headers.get("Authorization"))
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": stub.model}]}).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                with stub._lock:
                    stub.requests += 1
                    index = stub.requests
                    stub.arrivals.append(time.monotonic())
                    stub.auth.append(self.headers.get("Authorization"))
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    try:
                        body = json.loads(raw)
                    except json.JSONDecodeError:
                        body = {}
                    with stub._lock:
                        stub.bodies.append(body)
                    if stub.delay_s:
                        time.sleep(stub.delay_s)
                    status = stub.status(index) if callable(stub.status) else stub.status
                    if status != 200:
                        extra = stub.headers(index) if callable(stub.headers) else stub.headers
                        msg = "stub failure"
                        if stub.echo_auth:
                            msg += f" for {self.headers.get('Authorization')}"
                        self._send(status, json.dumps({"error": {"message": msg}}).encode(), extra=extra)
                        return
                    content = stub.reply(body, index) if callable(stub.reply) else stub.reply
                    resp = {
                        "id": f"stub-{index}", "object": "chat.completion", "model": stub.model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                    }
                    self._send(200, json.dumps(resp).encode())
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

        return Handler

    def start(self) -> "StubChatServer":
        httpd = _Server(("127.0.0.1", 0), self._handler())
        self._url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        self._serve(httpd, "stub-chat")
        return self
