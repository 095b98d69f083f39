"""A file server over real TLS on 127.0.0.1, for the weights-fetch tests: a throwaway CA
(trustme) signs its certificate, and the client trusts that CA through ``SSL_CERT_FILE`` (as a
user behind a corporate CA would), so the code under test runs its ordinary https path."""
from __future__ import annotations

import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.helpers.local_server import LocalServer


class HTTPSFiles(LocalServer):
    """Serves ``files`` (path -> bytes) at ``https://127.0.0.1:PORT/path``; ``redirects`` (path ->
    absolute URL) answer 302. ``requests`` lists the paths asked for."""

    def __init__(self, ca_file: Path):
        import trustme

        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[str] = []
        self._ca = trustme.CA()
        self._ca.cert_pem.write_to_path(str(ca_file))
        self.ca_file = ca_file

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}/{path.lstrip('/')}"

    def start(self) -> "HTTPSFiles":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                server.requests.append(path)
                if path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(path)
                self.send_response(200 if body is not None else 404)
                body = body if body is not None else b"not found"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (an oversized download)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ca.issue_cert("127.0.0.1").configure_cert(ctx)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._serve(httpd, "https-files")
        return self
