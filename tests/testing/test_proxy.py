"""The fault proxy used by the chaos tests: forwards, delays, and drops as told."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from lambdarun.testing import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_forwards_bytes(echo_server):
    with FaultProxy(echo_server) as proxy:
        assert _roundtrip(proxy.port, b"hello" * 1000) == b"hello" * 1000
        assert proxy.connections == 1


def test_latency_is_added_each_way_without_accumulating(echo_server):
    with FaultProxy(echo_server, latency=0.1) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            started = time.monotonic()
            for _ in range(5):  # five small writes in a row: each is delayed, not queued behind the last
                s.sendall(b"x")
            got = b""
            while len(got) < 5:
                got += s.recv(10)
            elapsed = time.monotonic() - started
    assert got == b"xxxxx"
    assert elapsed >= 0.2  # 0.1 s up + 0.1 s down


def test_drop_after_bytes_cuts_the_connection(echo_server):
    with FaultProxy(echo_server) as proxy:
        proxy.drop_next(after_bytes=1)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            s.sendall(b"abc")
            with _eof_or_reset():
                data = s.recv(10)
                if data == b"":
                    raise ConnectionResetError("eof")
        assert proxy.drops == 1
        # the rule was used up: the next connection goes through
        assert _roundtrip(proxy.port, b"ok") == b"ok"


class _eof_or_reset:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        assert exc_type is not None and issubclass(exc_type, OSError), "the connection was not cut"
        return True


def test_timed_drop_cuts_a_connection_in_flight(echo_server):
    with FaultProxy(echo_server) as proxy:
        proxy.drop_next(after=0.2)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            s.sendall(b"a")
            assert s.recv(10) == b"a"  # flows until the deadline
            with _eof_or_reset():
                data = s.recv(10)  # blocks until the cut
                if data == b"":
                    raise ConnectionResetError("eof")
        assert proxy.drops == 1


def test_refuses_non_loopback_upstream():
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(("8.8.8.8", 53))
