"""HTTP/1.1 requests from one asyncio event-loop thread: the transport under
:mod:`lambdarun.lambda_http`.

A thousand invocations in flight used to be a thousand threads, each blocked in a socket
read; every answer woke one, and the threads fought for the GIL (~0.4 ms of CPU per
invocation at 1,000 in flight, measured in ``benchmarks/test_latency_endpoint.py``). Here
one daemon thread runs an asyncio loop; each request is a coroutine on it, and a caller
waits on a :class:`concurrent.futures.Future` (or adds a callback to it) instead.

* HTTP/1.1 framing is `h11 <https://h11.readthedocs.io>`_'s (python-hyper's sans-I/O
  state machine: Content-Length, chunked and close-delimited bodies, keep-alive); this
  module only moves bytes between it and asyncio's transports.
* Keep-alive connections are kept per :class:`Route` (scheme, host, port, proxy), most
  recently used first, up to ``max_idle``; one that the server closed is dropped.
* HTTPS verifies against the CA bundle the caller names (botocore's); through a proxy it is
  tunnelled with ``CONNECT`` (the proxy sees no request), plain HTTP through a proxy names
  the absolute URL, as urllib3 and botocore do.
* An answer is read up to ``response_limit`` bytes; its ``Content-Length`` is checked
  before its body is read.

Errors say whether the request may have been delivered: :class:`ConnectFailed` (nothing
was sent: safe to send again) or :class:`AnswerLost` (sent, no usable answer: the server
may have acted on it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import select
import socket
import ssl
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import attrs
import h11

__all__ = ["AnswerLost", "AnswerTooLarge", "ConnectFailed", "Headers", "HttpAnswer", "LoopThread", "Route",
           "Connections"]

T = TypeVar("T")


class ConnectFailed(Exception):
    """No connection could be opened (or the proxy refused the tunnel): nothing was sent."""


class AnswerLost(Exception):
    """The request was (or may have been) sent and no usable answer came back."""


class AnswerTooLarge(AnswerLost):
    """The answer is longer than the limit (declared or read)."""


class Headers(dict):
    """Response headers by lower-case name; ``get`` takes any case (as urllib3's)."""

    __slots__ = ()

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


@attrs.frozen
class HttpAnswer:
    status: int
    headers: Headers
    body: bytes


@attrs.frozen
class Route:
    """Where a connection goes: the server's ``scheme``/``host``/``port``, and the proxy in
    between (``proxy``: ``(host, port)``; ``proxy_headers``: e.g. its Proxy-Authorization)."""

    scheme: str
    host: str
    port: int
    proxy: tuple[str, int] | None = None
    proxy_headers: tuple[tuple[str, str], ...] = ()

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def absolute_form(self) -> bool:
        """Requests name the whole URL (plain HTTP through a proxy)."""
        return self.proxy is not None and self.scheme == "http"


class LoopThread:
    """One asyncio loop in a daemon thread, started on first use (and again in a forked
    child); :meth:`run` schedules a coroutine on it and returns its concurrent future."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(target=self._serve, args=(loop, ready), name=self.name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self, before: Coroutine[Any, Any, Any] | None = None, timeout: float = 5.0) -> None:
        """Run ``before`` (e.g. closing connections), cancel what is still running, stop."""
        with self._lock:
            self._closed = True
            loop, thread, self._loop = self._loop, self._thread, None
        if loop is None or thread is None or self._pid != os.getpid() or not thread.is_alive():
            if before is not None:
                before.close()
            return

        async def stop() -> None:
            if before is not None:
                await before
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout)
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: h11's state machine fed by an asyncio transport; one
    request at a time (:meth:`exchange`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.h = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.tunnel = False  # the request in flight is a CONNECT
        self._waiter: asyncio.Future[HttpAnswer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._status = 0
        self._headers = Headers()
        self._parts: list[bytes] = []
        self._size = 0

    # -- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: never read them as the next answer
            self._fail(AnswerLost("the server sent data while no request was in flight"))
            return
        try:
            self.h.receive_data(data)
        except RuntimeError as exc:  # data after a closed or switched connection
            self._fail(AnswerLost(f"unexpected data from the server ({exc})"))
            return
        self._pump()

    def eof_received(self) -> bool:
        try:
            self.h.receive_data(b"")
        except RuntimeError:
            pass
        self._pump()
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(AnswerLost(f"the connection was closed before the answer was complete"
                              f"{f' ({type(exc).__name__}: {exc})' if exc else ''}"))

    # -- h11 ------------------------------------------------------------------------------------

    def _pump(self) -> None:
        while self._waiter is not None:
            try:
                event = self.h.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(AnswerLost(f"the answer is not valid HTTP/1.1 ({exc})"))
                return
            kind = type(event)
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if kind is h11.Response:
                self._status = event.status_code
                self._headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
                length = self._headers.get("content-length")
                if length is not None and int(length) > self.limit:  # h11 checked it is a number
                    self._fail(AnswerTooLarge(f"the answer declares a Content-Length of {length}, over the "
                                              f"{self.limit}-byte limit"))
                    return
                if self.tunnel and 200 <= self._status < 300:
                    self._done()
                    return
            elif kind is h11.Data:
                self._size += len(event.data)
                if self._size > self.limit:
                    self._fail(AnswerTooLarge(f"the answer is longer than the {self.limit}-byte limit"))
                    return
                self._parts.append(event.data)
            elif kind is h11.EndOfMessage:
                self._done()
                return
            elif kind is h11.ConnectionClosed:
                self._fail(AnswerLost("the server closed the connection without an answer"))
                return

    def _done(self) -> None:
        self._stop_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpAnswer(self._status, self._headers, b"".join(self._parts)))
        self._parts = []

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: Exception) -> None:
        self._stop_timer()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # -- one request ------------------------------------------------------------------------------

    def exchange(self, data: bytes, timeout: float) -> asyncio.Future[HttpAnswer]:
        """Write ``data`` (a whole request h11 built); the future of its answer (an
        :class:`AnswerLost` after ``timeout`` seconds without one). A plain function, not a
        coroutine: one coroutine per request in flight is enough (:meth:`Connections.send`)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._status, self._size, self._parts = 0, 0, []
        assert self.transport is not None
        self.transport.write(data)
        self._timer = loop.call_later(timeout, self._timed_out, timeout)
        return waiter

    def _timed_out(self, timeout: float) -> None:
        self._fail(AnswerLost(f"no answer within {timeout:g} s"))

    def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        h = self.h
        return (h.send(h11.Request(method=method, target=target, headers=headers))
                + (h.send(h11.Data(data=body)) if body else b"") + h.send(h11.EndOfMessage()))

    def reusable(self) -> bool:
        """Ready for another request (start h11's next cycle)."""
        if self.closed or self.h.our_state is not h11.DONE or self.h.their_state is not h11.DONE:
            return False
        self.h.start_next_cycle()
        return True


def _dropped(connection: _Connection) -> bool:
    """The server closed (or wrote to) an idle connection and the loop has not seen it yet:
    urllib3's ``is_connection_dropped`` check before reuse (a zero-timeout poll)."""
    sock = connection.transport.get_extra_info("socket") if connection.transport is not None else None
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class Connections:
    """The keep-alive connections of one client, per :class:`Route`; used on its loop only."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, max_idle: int, response_limit: int,
                 ca_certs: Any = None) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self.response_limit = response_limit
        self._ca_certs = ca_certs  # a path, or a callable giving one (resolved on the first HTTPS route)
        self._tls: ssl.SSLContext | None = None
        self._idle: dict[Route, list[_Connection]] = {}
        self._idle_count = 0
        self.opened = 0

    async def send(self, route: Route, method: str, target: str, headers: Mapping[str, str],
                   body: bytes) -> HttpAnswer:
        """One request on a kept connection (or a new one). Raises :class:`ConnectFailed`
        (nothing sent) or :class:`AnswerLost`."""
        connection = self._take(route) or await self._open(route)
        fields = [("Host", route.netloc)] if not any(k.lower() == "host" for k in headers) else []
        fields += [(k, v) for k, v in headers.items() if k.lower() != "content-length"]
        fields.append(("Content-Length", str(len(body))))
        try:
            data = connection.request(method, target, fields, body)
        except h11.LocalProtocolError as exc:
            connection.transport.abort()  # type: ignore[union-attr]
            raise ConnectFailed(f"the request cannot be sent as HTTP/1.1: {exc}") from None
        try:
            answer = await connection.exchange(data, self.read_timeout)
        except asyncio.CancelledError:
            connection._fail(AnswerLost("cancelled"))  # never reuse a connection mid-answer
            raise
        self._keep(route, connection)
        return answer

    def _take(self, route: Route) -> _Connection | None:
        idle = self._idle.get(route)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if not connection.closed and not _dropped(connection):
                return connection
            if connection.transport is not None:
                connection.transport.abort()
        return None

    def _keep(self, route: Route, connection: _Connection) -> None:
        if connection.reusable() and self._idle_count < self.max_idle:
            self._idle.setdefault(route, []).append(connection)
            self._idle_count += 1
        elif connection.transport is not None:
            connection.transport.close()

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            cafile = self._ca_certs() if callable(self._ca_certs) else self._ca_certs
            self._tls = ssl.create_default_context(cafile=cafile if isinstance(cafile, str) else None)
        return self._tls

    async def _open(self, route: Route) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port = route.proxy or (route.host, route.port)
        tls_now = route.scheme == "https" and route.proxy is None
        try:
            _transport, connection = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(self.response_limit), host, port,
                ssl=self._context() if tls_now else None, server_hostname=route.host if tls_now else None),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            raise ConnectFailed(f"could not connect to {host}:{port} ({type(exc).__name__}: {exc})") from exc
        self.opened += 1
        sock = connection.transport.get_extra_info("socket")  # type: ignore[union-attr]
        if sock is not None:  # a 15-minute wait for an answer outlives idle NAT entries otherwise
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if route.scheme == "https" and route.proxy is not None:
            await self._tunnel(route, connection)
        return connection

    async def _tunnel(self, route: Route, connection: _Connection) -> None:
        """CONNECT through the proxy, then TLS to the server inside the tunnel."""
        authority = f"{route.host}:{route.port}"
        connection.tunnel = True
        try:
            data = connection.request("CONNECT", authority, [("Host", authority), *route.proxy_headers], b"")
            answer = await connection.exchange(data, self.connect_timeout)
        except asyncio.CancelledError:
            connection._fail(AnswerLost("cancelled"))
            raise
        except AnswerLost as exc:
            raise ConnectFailed(f"the proxy did not open a tunnel to {authority} ({exc})") from exc
        if not 200 <= answer.status < 300:
            connection.transport.abort()  # type: ignore[union-attr]
            raise ConnectFailed(f"the proxy refused a tunnel to {authority} (HTTP {answer.status})")
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(loop.start_tls(
                connection.transport, connection, self._context(), server_hostname=route.host),  # type: ignore[arg-type]
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            connection.transport.abort()  # type: ignore[union-attr]
            raise ConnectFailed(f"TLS to {authority} through the proxy failed ({type(exc).__name__}: {exc})") from exc
        connection.transport = transport  # type: ignore[assignment]
        connection.h = h11.Connection(h11.CLIENT)
        connection.tunnel = False

    async def close(self) -> None:
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for connections in idle.values():
            for connection in connections:
                if connection.transport is not None:
                    connection.transport.close()
