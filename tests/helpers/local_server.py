"""The lifecycle shared by the tests' HTTP servers on 127.0.0.1: serve on a daemon thread, stop
cleanly, and work as a context manager."""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from http.server import ThreadingHTTPServer
from typing import Optional


class LocalServer(ABC):
    _httpd: Optional[ThreadingHTTPServer] = None

    def _serve(self, httpd: ThreadingHTTPServer, name: str) -> None:
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, daemon=True, name=name).start()

    @abstractmethod
    def start(self):
        """Bind a server, serve it with :meth:`_serve`, return self."""

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
