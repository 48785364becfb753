"""A tiny threaded HTTP/1.1 server tuned for loopback latency.

Why not ``http.server.ThreadingHTTPServer`` as is: its handler writes the status line and
headers in one ``send`` and the body in another, and with Nagle's algorithm plus delayed
ACKs every such response costs ~40 ms on loopback. Here every accepted socket gets
``TCP_NODELAY`` and every response is written with a single ``sendall``. The accept loop
blocks in ``accept()`` (no polling interval), so ``close()`` is immediate.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog

__all__ = ["FastHandler", "LoopbackServer"]

log = structlog.get_logger(__name__)


class FastHandler(http.server.BaseHTTPRequestHandler):
    """Request handler base: keep-alive, one ``send`` per response, quiet logging."""

    protocol_version = "HTTP/1.1"
    server_version = "lambdarun-local"
    sys_version = ""
    # set by LoopbackServer for the handler class it serves
    app: Any = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def read_body(self) -> bytes:
        """The request body (Content-Length or chunked transfer encoding)."""
        length = self.headers.get("Content-Length")
        if length is not None:
            n = int(length)
            return self.rfile.read(n) if n else b""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers up to the empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        return b""

    def reply(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> None:
        """Write the whole response (status line, headers, body) with one ``sendall``."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {status} {reason}"]
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        if headers:
            for k, v in headers.items():
                lines.append(f"{k}: {v}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)


class LoopbackServer:
    """Serve ``handler_class`` on ``host:port`` (port 0 picks a free one).

    One thread blocks in ``accept()``; each connection is served by its own daemon thread
    for as long as the client keeps it alive.
    """

    def __init__(
        self,
        handler_class: type[FastHandler],
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "http",
        backlog: int = 128,
    ) -> None:
        self._handler_class = handler_class
        self.app = app
        self._name = name
        self._sock = socket.create_server((host, port), backlog=backlog, reuse_port=False)
        self.host, self.port = self._sock.getsockname()[:2]
        self._closed = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"{name}-accept:{self.port}", daemon=True
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, addr = self._sock.accept()
            except OSError:
                break
            if self._closed:
                conn.close()
                break
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(
                target=self._serve, args=(conn, addr), name=f"{self._name}-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket, addr: Any) -> None:
        try:
            self._handler_class(conn, addr, self)
        except (ConnectionError, OSError):
            pass
        except Exception:  # pragma: no cover - a bug in a handler must not kill the server
            log.exception("http handler crashed", server=self._name)
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        """Stop accepting and drop open connections; returns at once."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
