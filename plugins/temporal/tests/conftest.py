"""Fixtures: the real Temporal dev server (session-scoped) and a handler runner.

Workers run in subprocesses (``scenarios.py``), each invocation calling the handler once
with a fake Lambda context; the subprocess must also *exit* cleanly (return code 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun_temporal
from lambdarun_temporal.devserver import DevServer
from lambdarun_temporal.testing import set_current_version, temporal_dev_server, with_client

__all__ = ["temporal_dev_server"]

HERE = Path(__file__).resolve().parent
DEPLOYMENT = "lambdarun-temporal-tests"
BUILD_ID = "v1"


@pytest.fixture(scope="session")
def temporal_server(temporal_dev_server: DevServer) -> DevServer:
    """The dev server with the tests' deployment version set current."""
    with_client(
        temporal_dev_server.address,
        lambda client: set_current_version(client, DEPLOYMENT, BUILD_ID),
    )
    return temporal_dev_server


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:10]}"


def _pythonpath() -> str:
    roots = [str(Path(lambdarun_temporal.__file__).resolve().parents[1]), str(HERE)]
    if os.environ.get("PYTHONPATH"):
        roots.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(roots)


class HandlerRun:
    """One invocation of ``scenarios.<scenario>`` running in a subprocess."""

    def __init__(self, scenario: str, timeout: float, env: dict[str, str], cwd: Path, markers: Path) -> None:
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_") and k != "LAMBDA_TASK_ROOT"
        }
        full_env.update(env)
        full_env["SCENARIO_MARKERS"] = str(markers)
        full_env["PYTHONPATH"] = _pythonpath()
        self.timeout = timeout
        self.markers = markers
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "scenarios.py"), scenario, str(timeout)],
            env=full_env,
            cwd=str(cwd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def result(self) -> dict[str, Any]:
        """Wait for the process; its JSON line plus ``markers``, ``returncode``, ``log``."""
        try:
            stdout, stderr = self.proc.communicate(timeout=self.timeout + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate()
            raise AssertionError(f"the invocation did not end; stderr={stderr[-3000:]}") from None
        lines = [l for l in stdout.splitlines() if l.startswith("{")]
        assert lines, f"no result line; rc={self.proc.returncode}\nstdout={stdout}\nstderr={stderr}"
        out = json.loads(lines[-1])
        out["returncode"] = self.proc.returncode
        out["stderr"] = stderr
        out["log"] = stdout + stderr
        out["markers"] = self.markers.read_text().splitlines() if self.markers.exists() else []
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def start_handler(tmp_path: Path) -> Iterator[Callable[..., HandlerRun]]:
    """Start one invocation of ``scenarios.<scenario>`` in a subprocess; ``.result()`` waits
    for it. Processes still running at teardown are killed (no orphan)."""
    runs: list[HandlerRun] = []

    def start(scenario: str, timeout: float, env: dict[str, str], cwd: Path | None = None) -> HandlerRun:
        markers = tmp_path / f"markers-{uuid.uuid4().hex[:6]}.txt"
        run = HandlerRun(scenario, timeout, env, cwd or tmp_path, markers)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


@pytest.fixture
def run_handler(start_handler: Callable[..., HandlerRun]) -> Callable[..., dict[str, Any]]:
    """Run one invocation of ``scenarios.<scenario>`` in a subprocess; return its JSON line
    plus ``markers`` (lines written by hooks/teardowns) and ``returncode``."""

    def run(scenario: str, timeout: float, env: dict[str, str], cwd: Path | None = None) -> dict[str, Any]:
        return start_handler(scenario, timeout, env, cwd).result()

    return run


class Listener:
    """A TCP server on 127.0.0.1 that accepts connections, records them and never answers."""

    def __init__(self) -> None:
        import socket
        import threading

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._accepted: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="test-listener")
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    @property
    def connections(self) -> int:
        return len(self._accepted)

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
                self._accepted.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._accepted:
            conn.close()
        self._sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A :class:`Listener`: where a test expects (or forbids) connections."""
    server = Listener()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def attacker() -> Iterator[Listener]:
    """A second :class:`Listener`, standing for a server an attacker controls."""
    server = Listener()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def hanging_server(listener: Listener) -> str:
    """``host:port`` of a TCP server on 127.0.0.1 that accepts connections and never answers."""
    return listener.address
