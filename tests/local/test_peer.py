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
