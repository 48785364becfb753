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

from lambdarun.limits import SYNC_PAYLOAD_LIMIT
from lambdarun.local.auth import content_length

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

    def read_body(self, limit: int = SYNC_PAYLOAD_LIMIT) -> bytes:
        """The request body (Content-Length or chunked transfer encoding), at most ``limit``
        bytes: a declared length beyond it raises ``OverflowError`` before anything is read;
        a malformed or negative one raises ``ValueError`` (then the connection is closed,
        since the unread body would be taken for the next request)."""
        length = self.headers.get("Content-Length")
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if length is not None and not chunked:
            try:
                n = content_length(length, limit, required=False)
            except (ValueError, OverflowError):
                self.close_connection = True
                raise
            return self.rfile.read(n) if n else b""
        if chunked:
            chunks = []
            total = 0
            try:
                while True:
                    size_line = self.rfile.readline(65537)
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                    if size < 0:
                        raise ValueError("negative chunk size")
                    if size == 0:
                        # trailers up to the empty line
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    total += size
                    if total > limit:
                        raise OverflowError(total)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(65537)
            except (ValueError, OverflowError):
                self.close_connection = True
                raise
            return b"".join(chunks)
        return b""

    def discard_input(self, max_bytes: int = 64 * 1024 * 1024, timeout: float = 2.0) -> None:
        """After a refusal that left the body unread: stop writing, then read and drop what
        the client is still sending (bounded in bytes and time, nothing kept), so that the
        client sees the response instead of a reset connection."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(timeout)
            left = max_bytes
            while left > 0:
                chunk = self.connection.recv(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

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
