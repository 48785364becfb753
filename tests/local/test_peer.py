"""Who holds the other end of a loopback connection (the Runtime API's check that a request
comes from the environment's own runtime process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from lambdarun.local import peer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and netlink")


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    yield srv
    srv.close()


def _pair(srv: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(srv.getsockname())
    accepted, _ = srv.accept()
    return client, accepted


def test_the_holder_of_the_peer_socket_is_found(listener):
    client, accepted = _pair(listener)
    try:
        assert peer.peer_held_by(accepted, os.getpid()) is True
        # both ways of finding the peer's socket name the client's own inode
        inode = os.fstat(client.fileno()).st_ino
        assert peer._scan_inode(accepted.getpeername(), accepted.getsockname()) == inode
        assert peer._diag_inode(accepted.getpeername(), accepted.getsockname()) in (inode, None)
    finally:
        client.close()
        accepted.close()


def test_another_process_is_not_the_holder(listener):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    client, accepted = _pair(listener)
    try:
        assert peer.peer_held_by(accepted, other.pid) is False
    finally:
        other.kill()
        other.wait()
        client.close()
        accepted.close()


def test_a_peer_that_went_away_is_not_held_by_anyone(listener):
    client, accepted = _pair(listener)
    client.close()
    try:
        assert peer.peer_held_by(accepted, os.getpid()) is False
    finally:
        accepted.close()


def test_the_check_holds_while_other_connections_open_and_close(listener):
    """Other connections churning (the Runtime APIs of many environments, boto3's pool) must
    not make the check miss a live peer: a miss refuses the runtime and kills its environment."""
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            c, a = _pair(listener)
            c.close()
            a.close()

    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    spare.listen(64)
    workers = [threading.Thread(target=churn) for _ in range(3)]
    for w in workers:
        w.start()
    pairs = [_pair(spare) for _ in range(100)]
    try:
        misses = [i for i, (_, accepted) in enumerate(pairs) if peer.peer_held_by(accepted, os.getpid()) is not True]
        assert misses == []
    finally:
        stop.set()
        for w in workers:
            w.join()
        for c, a in pairs:
            c.close()
            a.close()
        spare.close()


def test_a_runtime_that_connects_before_the_service_recorded_its_process_is_served(tmp_path, monkeypatch):
    """Under load the thread that spawns an environment can get the GIL back after the
    runtime has already started and asked for its first invocation: the Runtime API then
    waits for the spawn to be recorded instead of refusing its own runtime (which killed the
    environment: ``Runtime.ExitError``, exit status 1, in a 100-way fan-out)."""
    import json
    import time

    from lambdarun.local import environment
    from lambdarun.local.stack import LocalStack
    from lambdarun.local.testing import create_function

    real_popen = subprocess.Popen

    class LatePopen(real_popen):  # the spawning thread comes back 1.5 s after the runtime started
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            time.sleep(1.5)

    monkeypatch.setattr(environment.subprocess, "Popen", LatePopen)
    with LocalStack(state_dir=tmp_path / "state") as stack:
        lam = stack.client("lambda", retries={"total_max_attempts": 1}, read_timeout=60)
        create_function(lam, "late", """
            import os
            def handler(event, context):
                return os.getpid()
        """, timeout=30)
        r = lam.invoke(FunctionName="late", Payload=b"{}")
        assert "FunctionError" not in r, r["Payload"].read()
        pid = json.loads(r["Payload"].read())
        again = lam.invoke(FunctionName="late", Payload=b"{}")  # the same, warm environment
        assert json.loads(again["Payload"].read()) == pid != os.getpid()
