"""A TCP proxy on 127.0.0.1 that injects faults between a client and a server, for tests.

Put it between boto3 (or a Temporal worker) and a local server to add one-way latency, or to
drop a connection while a request is in flight::

    with FaultProxy(("127.0.0.1", service_port)) as proxy:
        client = boto3.client("lambda", endpoint_url=proxy.url, ...)
        proxy.drop_next(after=1.0)          # the next connection is cut 1 s after it opens
        proxy.latency = 0.25                # every chunk waits 0.25 s in each direction

Only loopback addresses are accepted as the upstream: this is a test tool, never a relay.
Each connection is served by two pump threads; the proxy stops them all on :meth:`close`.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import deque
from typing import Any

import attrs

__all__ = ["FaultProxy", "DropRule"]


@attrs.define
class DropRule:
    """Cut a connection ``after`` seconds from its first request byte, or once the client
    sent ``after_bytes`` bytes (whichever is set); ``count`` connections are affected."""

    after: float | None = None
    after_bytes: int | None = None
    count: int = 1


class _Pipe:
    def __init__(self, proxy: FaultProxy, client: socket.socket, rule: DropRule | None) -> None:
        self.proxy = proxy
        self.client = client
        self.rule = rule
        self.upstream = socket.create_connection(proxy.upstream, timeout=10)
        self.upstream.settimeout(None)
        for s in (self.client, self.upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = threading.Event()
        self.sent = 0
        self.first_byte: float | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        for src, dst, upward in ((self.client, self.upstream, True), (self.upstream, self.client, False)):
            threading.Thread(target=self._pump, args=(src, dst, upward), daemon=True,
                             name="fault-proxy-pump").start()
        if self.rule is not None and self.rule.after is not None:
            threading.Thread(target=self._timed_drop, daemon=True, name="fault-proxy-drop").start()

    def _timed_drop(self) -> None:
        assert self.rule is not None and self.rule.after is not None
        while not self.closed.is_set():
            with self.lock:
                started = self.first_byte
            if started is not None:
                remaining = started + self.rule.after - time.monotonic()
                if remaining <= 0:
                    self.drop()
                    return
                self.closed.wait(min(remaining, 0.05))
            else:
                self.closed.wait(0.01)

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        """Read from ``src``; each chunk is due ``latency`` after it was read, and a writer
        thread delivers chunks in order at their due time (latency never accumulates)."""
        queue: deque[tuple[float, bytes | None]] = deque()
        ready = threading.Condition()

        def writer() -> None:
            try:
                while True:
                    with ready:
                        while not queue and not self.closed.is_set():
                            ready.wait(0.05)
                        if not queue:
                            return
                        due, chunk = queue.popleft()
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if chunk is None:  # EOF: the other side sees it for this direction
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(chunk)
            except OSError:
                self.drop()

        threading.Thread(target=writer, daemon=True, name="fault-proxy-writer").start()
        try:
            while not self.closed.is_set():
                data = src.recv(65536)
                if upward and data:
                    with self.lock:
                        if self.first_byte is None:
                            self.first_byte = time.monotonic()
                        self.sent += len(data)
                        over = (self.rule is not None and self.rule.after_bytes is not None
                                and self.sent >= self.rule.after_bytes)
                    if over:
                        self.drop()
                        return
                with ready:
                    queue.append((time.monotonic() + self.proxy.latency, data or None))
                    ready.notify()
                if not data:
                    return
        except OSError:
            self.drop()

    def drop(self) -> None:
        """Cut both sides at once (the client sees a reset or EOF mid-request)."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.proxy._note_drop()
        for s in (self.client, self.upstream):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            try:
                # wakes the pump thread blocked in recv() on this socket: close() alone does
                # not (Linux keeps the socket open until that recv returns, so an idle
                # connection - a client waiting for its answer - would never see the cut)
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        for s in (self.client, self.upstream):
            try:
                s.close()
            except OSError:
                pass


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``upstream``, adding latency or dropping connections."""

    def __init__(self, upstream: tuple[str, int], *, latency: float = 0.0) -> None:
        host, port = upstream
        if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
            raise ValueError(f"FaultProxy forwards only to loopback addresses, not {host!r}")
        self.upstream = (host, int(port))
        #: one-way delay added to every chunk, in seconds, in both directions
        self.latency = latency
        self.connections = 0
        self.drops = 0
        self._rules: deque[DropRule] = deque()
        self._pipes: list[_Pipe] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")
        self._thread.start()

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_next(self, *, after: float | None = None, after_bytes: int | None = None, count: int = 1) -> None:
        """Cut the next ``count`` new connections ``after`` seconds from their first byte
        (or after the client sent ``after_bytes``)."""
        if after is None and after_bytes is None:
            raise ValueError("drop_next needs after= (seconds) or after_bytes=")
        with self._lock:
            self._rules.append(DropRule(after=after, after_bytes=after_bytes, count=count))

    def drop_all(self) -> None:
        """Cut every open connection now."""
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.drop()

    def _note_drop(self) -> None:
        with self._lock:
            self.drops += 1

    def _next_rule(self) -> DropRule | None:
        with self._lock:
            if not self._rules:
                return None
            rule = self._rules[0]
            rule.count -= 1
            if rule.count <= 0:
                self._rules.popleft()
            return rule

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                pipe = _Pipe(self, client, self._next_rule())
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._pipes = [p for p in self._pipes if not p.closed.is_set()] + [pipe]
            pipe.start()

    def close(self) -> None:
        self._closing.set()
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            pipes, self._pipes = self._pipes, []
        for pipe in pipes:
            pipe.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
