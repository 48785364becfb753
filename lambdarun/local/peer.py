"""Who is on the other end of a loopback connection: the Runtime API serves only its own
environment's runtime process."""

from __future__ import annotations

import os
from typing import Any


def _proc_net_address(address: tuple[str, int]) -> str:
    import socket

    ip, port = address[0], address[1]
    return f"{int.from_bytes(socket.inet_aton(ip), 'little'):08X}:{port:04X}"


def peer_held_by(conn: Any, pid: int) -> bool | None:
    """Whether the other end of the loopback TCP connection ``conn`` is a socket of process
    ``pid`` (from ``/proc/net/tcp`` and ``/proc/<pid>/fd``). None when this cannot be known
    here (no ``/proc``: not Linux)."""
    try:
        peer, local = conn.getpeername(), conn.getsockname()
        want = (_proc_net_address(peer), _proc_net_address(local))
    except (OSError, ValueError):
        return False
    inode = None
    # /proc/net/tcp is read in chunks, not atomically: with many connections opening and
    # closing, an entry can be skipped by one read, so look again before refusing; entries
    # of closed sockets (TIME_WAIT, inode 0) with the same addresses are not it
    for _ in range(3):
        try:
            with open("/proc/net/tcp", encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and (fields[1], fields[2]) == want and fields[9] != "0":
                        inode = fields[9]
                        break
        except FileNotFoundError:
            return None
        if inode is not None:
            break
    if inode is None:
        return False
    target = f"socket:[{inode}]"
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False
