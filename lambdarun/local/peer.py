"""Who is on the other end of a loopback connection: the Runtime API serves only its own
environment's runtime process."""

from __future__ import annotations

import os
from typing import Any


def _proc_net_address(address: tuple[str, int]) -> str:
    import socket

    ip, port = address[0], address[1]
    return f"{int.from_bytes(socket.inet_aton(ip), 'little'):08X}:{port:04X}"


_SOCK_DIAG_BY_FAMILY = 20  # linux/sock_diag.h
_NETLINK_SOCK_DIAG = 4
_NLMSG_ERROR = 2


def _diag_inode(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The inode of the TCP socket whose own address is ``peer`` and remote ``local``, by an
    exact ``SOCK_DIAG_BY_FAMILY`` lookup (the kernel finds the one socket: no table walk that
    concurrent connections can disturb). 0 when there is no such socket; None when netlink
    sock_diag is not available here."""
    import socket
    import struct

    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
    except (OSError, AttributeError):
        return None
    try:
        sockid = struct.pack("!HH16s16s", peer[1], local[1], socket.inet_aton(peer[0]).ljust(16, b"\0"),
                             socket.inet_aton(local[0]).ljust(16, b"\0"))
        sockid += struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # any interface, INET_DIAG_NOCOOKIE
        request = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
        nl.settimeout(2.0)
        nl.sendto(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, 1, 1, 0) + request, (0, 0))
        answer = nl.recv(8192)
        kind = struct.unpack_from("=H", answer, 4)[0]
        if kind == _SOCK_DIAG_BY_FAMILY:  # inet_diag_msg: 4 bytes, sockid (48), 4 x u32, inode
            return int(struct.unpack_from("=I", answer, 16 + 4 + 48 + 16)[0])
        if kind == _NLMSG_ERROR and struct.unpack_from("=i", answer, 16)[0] == -2:  # ENOENT
            return 0
        return None  # sock_diag refused here (no inet_diag module, a sandbox)
    except (OSError, struct.error, ValueError):
        return None
    finally:
        nl.close()


def _scan_inode(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The same from ``/proc/net/tcp``: None without ``/proc`` (not Linux), 0 when not found."""
    want = (_proc_net_address(peer), _proc_net_address(local))
    # /proc/net/tcp is read in chunks, not atomically: with many connections opening and
    # closing, an entry can be skipped by one read, so look again before refusing; entries
    # of closed sockets (TIME_WAIT, inode 0) with the same addresses are not it
    for _ in range(5):
        try:
            with open("/proc/net/tcp", encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and (fields[1], fields[2]) == want and fields[9] != "0":
                        return int(fields[9])
        except FileNotFoundError:
            return None
    return 0


def peer_held_by(conn: Any, pid: int) -> bool | None:
    """Whether the other end of the loopback TCP connection ``conn`` is a socket of process
    ``pid`` (the socket's inode from netlink sock_diag, else ``/proc/net/tcp``, then
    ``/proc/<pid>/fd``). None when this cannot be known here (no ``/proc``: not Linux)."""
    try:
        peer, local = conn.getpeername(), conn.getsockname()
        inode = _diag_inode(peer, local)
        if inode is None:
            inode = _scan_inode(peer, local)
    except (OSError, ValueError):
        return False
    if inode is None:
        return None
    if not inode:
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
