"""The Lambda Runtime API: one endpoint per execution environment, for its runtime client.

``GET /2018-06-01/runtime/invocation/next`` hands the environment's next invocation to
``awslambdaric``; ``.../response``, ``.../error`` and ``init/error`` post outcomes back.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from lambdarun.local import auth
from lambdarun.local._http import FastHandler
from lambdarun.local.options import SYNC_RESPONSE_LIMIT

if TYPE_CHECKING:
    import threading

    from lambdarun.local._http import LoopbackServer
    from lambdarun.local.model import Function, Invocation

log = structlog.get_logger(__name__)


class RuntimeEnvironment(Protocol):
    """What the Runtime API serves: one execution environment (an
    :class:`~lambdarun.local.environment.Environment`)."""

    function: Function
    runtime: LoopbackServer
    current: Invocation | None
    init_error: bytes | None
    initialized: threading.Event

    def is_runtime_connection(self, conn: Any) -> bool: ...

    def next_invocation(self) -> Invocation | None: ...


_RUNTIME_PREFIX = "/2018-06-01/runtime/"


class RuntimeHandler(FastHandler):
    """One environment's Runtime API. Only its own runtime client talks to it: a connection
    from any other process (checked once per connection: the peer socket must be held by the
    environment's runtime process), browsers (``Origin``/``Sec-Fetch-*``, preflights) and
    other Host names are refused; it answers on 127.0.0.1 only."""

    server_version = "lambdarun-local-runtime"

    _peer_ok: bool | None = None

    def _refused(self) -> bool:
        env: RuntimeEnvironment = self.server.app
        marker = auth.browser_marker(self.headers.get)
        host = self.headers.get("Host")
        if self._peer_ok is None:  # once per connection (the runtime client keeps one alive)
            self._peer_ok = env.is_runtime_connection(self.connection)
        if (self._peer_ok and marker is None and self.command != "OPTIONS"
                and (host is None or host == env.runtime.address)):
            return False
        log.warning("runtime API refused a request", function=env.function.name,
                    header=marker, host=host, method=self.command, own_runtime=self._peer_ok)
        self.close_connection = True
        self.reply(403, b'{"errorMessage":"refused","errorType":"AccessDenied"}')
        self.discard_input()
        return True

    def do_OPTIONS(self) -> None:
        self._refused()

    def do_GET(self) -> None:
        env: RuntimeEnvironment = self.server.app
        if self._refused():
            return
        if self.path != _RUNTIME_PREFIX + "invocation/next":
            self.reply(404, b'{"errorMessage":"not found","errorType":"InvalidRequest"}')
            return
        inv = env.next_invocation()
        if inv is None:  # the environment is shutting down
            self.close_connection = True
            self.reply(500, b'{"errorMessage":"environment stopped","errorType":"Shutdown"}')
            return
        fn = env.function
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": inv.invoked_arn or (
                fn.arn if fn.version == "$LATEST" else f"{fn.arn}:{fn.version}"),
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{inv.request_id.replace('-', '')[:24]};Sampled=0",
        }
        if inv.client_context:
            headers["Lambda-Runtime-Client-Context"] = inv.client_context
        self.reply(200, inv.payload, headers)

    def do_POST(self) -> None:
        env: RuntimeEnvironment = self.server.app
        if self._refused():
            return
        path = self.path
        try:
            body = self.read_body(SYNC_RESPONSE_LIMIT)
        except OverflowError:
            inv = env.current
            if inv is not None and path.endswith(f"/{inv.request_id}/response"):
                inv.fail(
                    "Function.ResponseSizeTooLarge",
                    f"Response payload size exceeded maximum allowed payload size ({SYNC_RESPONSE_LIMIT} bytes).",
                )
            self.reply(413, b'{"errorMessage":"payload too large","errorType":"RequestEntityTooLarge"}')
            self.discard_input()
            return
        except ValueError:
            self.reply(400, b'{"errorMessage":"bad Content-Length","errorType":"InvalidRequest"}')
            self.discard_input()
            return
        if path == _RUNTIME_PREFIX + "init/error":
            env.init_error = normalise_error(body, self.headers, "")
            env.initialized.set()
            self.reply(202, b'{"status":"OK"}')
            return
        if path.startswith(_RUNTIME_PREFIX + "invocation/"):
            rest = path[len(_RUNTIME_PREFIX + "invocation/") :]
            request_id, _, kind = rest.partition("/")
            inv = env.current
            if inv is None or inv.request_id != request_id:
                self.reply(400, b'{"errorMessage":"unknown request id","errorType":"InvalidRequestID"}')
                return
            if kind == "response":
                if len(body) > SYNC_RESPONSE_LIMIT:
                    inv.fail(
                        "Function.ResponseSizeTooLarge",
                        f"Response payload size exceeded maximum allowed payload size ({SYNC_RESPONSE_LIMIT} bytes).",
                    )
                    self.reply(413, b'{"errorMessage":"payload too large","errorType":"RequestEntityTooLarge"}')
                    return
                inv.finish(body)
                self.reply(202, b'{"status":"OK"}')
                return
            if kind == "error":
                inv.finish(normalise_error(body, self.headers, request_id), "Unhandled")
                self.reply(202, b'{"status":"OK"}')
                return
        self.reply(404, b'{"errorMessage":"not found","errorType":"InvalidRequest"}')


def normalise_error(body: bytes, headers: Any, request_id: str) -> bytes:
    """The error document a client sees: ``errorMessage, errorType, requestId, stackTrace``."""
    try:
        doc = json.loads(body or b"{}")
        if not isinstance(doc, dict):
            raise ValueError
    except ValueError:
        doc = {"errorMessage": body.decode("utf-8", "replace")}
    doc.setdefault("errorMessage", "")
    doc.setdefault("errorType", headers.get("Lambda-Runtime-Function-Error-Type") or "")
    doc.setdefault("requestId", request_id)
    doc.setdefault("stackTrace", [])
    return json.dumps(doc).encode()
