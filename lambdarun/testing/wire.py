"""Attacking the wire in tests: hand-made envelopes (unsigned, forged, foreign-key, expired,
malformed), pickles that leave a marker file when they are loaded, and direct Invoke calls.

Used by lambdarun's own security tests (``tests/security/test_wire_*.py``); a plugin that
accepts envelopes or events can attack its own surface with the same tools::

    from lambdarun.testing.wire import marker_call, call_event, invoke
    error, payload, _ = invoke(lambda_client, call_event(marker_call(tmp_path / "m")), function="f")
    assert not (tmp_path / "m").exists()
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pickle
import time
from pathlib import Path
from typing import Any

import msgpack

from lambdarun.envelope import FORMAT_VERSION, MAGIC, PYTHON_VERSION
from lambdarun.protocol import build_call_event

#: a key of the right length that no stack or function uses
FOREIGN_KEY = b"a-foreign-signing-key-nobody-uses-0123456789"
#: default function name of :func:`invoke`
FUNCTION = "lambdarun-wire-tests"

__all__ = ["FOREIGN_KEY", "LeavesMarker", "marker_pickle", "forge", "marker_call", "header_signature", "invoke", "call_event"]


class LeavesMarker:
    """Unpickling an instance opens ``path`` for writing: the file appearing proves that
    bytes were unpickled."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def marker_pickle(path: Path | str) -> bytes:
    return pickle.dumps(LeavesMarker(path))


def forge(
    kind: str,
    parts: list[tuple[str, bytes]],
    meta: dict[str, Any],
    *,
    key: bytes | None = None,
    issued: float | None = None,
    signature: Any = None,
    body: Any = None,
) -> bytes:
    """An envelope built by hand (what an attacker can send): signed with ``key`` unless
    ``signature`` is given; ``body`` replaces the whole body (malformed shapes)."""
    if body is None:
        body = [PYTHON_VERSION, kind, [[t, d] for t, d in parts], {**meta, "issued": time.time() if issued is None else issued}, None]
    packed = msgpack.packb(body, use_bin_type=True)
    if signature is None and key is not None:
        signature = hmac.new(key, packed, hashlib.sha256).digest()
    return msgpack.packb([MAGIC, FORMAT_VERSION, signature], use_bin_type=True) + packed


def marker_call(path: Path | str, *, task_id: str = "attack", attempt: int = 1, **kwargs: Any) -> bytes:
    """A call envelope whose function part leaves a marker file when unpickled."""
    meta = {"function": "evil", "nargs": 0, "kwargs": [], "task_id": task_id, "attempt": attempt}
    return forge("call", [("cloudpickle", marker_pickle(path))], meta, **kwargs)


def header_signature(data: bytes) -> Any:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data[:64])
    return unpacker.unpack()[2]


def invoke(lam: Any, event: Any, *, function: str = FUNCTION, tail: bool = False) -> tuple[str | None, Any, str]:
    """(FunctionError, decoded JSON payload, log tail) of a synchronous Invoke."""
    response = lam.invoke(
        FunctionName=function,
        Payload=json.dumps(event).encode(),
        **({"LogType": "Tail"} if tail else {}),
    )
    payload = json.loads(response["Payload"].read() or b"null")
    log = base64.b64decode(response.get("LogResult", "")).decode("utf-8", "replace") if tail else ""
    return response.get("FunctionError"), payload, log


def call_event(data: bytes, **extra: Any) -> dict[str, Any]:
    return {**build_call_event(call=data), **extra}  # extra may override, to attack the fields
